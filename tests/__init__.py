"""The test suite: unit/, integration/, e2e/, reliability/ and their helpers in support/ (see tests/README.md)."""
