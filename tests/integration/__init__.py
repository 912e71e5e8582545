"""Integration tests: real components (DuckDB files, MLflow stores, the embedded students) within one stage."""
