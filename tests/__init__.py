"""prefstream tests: a real broker, real DuckDB files, real datasets, real training steps."""
