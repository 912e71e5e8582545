"""Store: the one DuckDB file. connect (the one way in), migrations/*.sql, writer (every write), queries (every
read, typed), sql (read-only SQL for users)."""
