"""Unit tests: pure logic, one module at a time, fast; no server and no model beyond a tiny one."""
