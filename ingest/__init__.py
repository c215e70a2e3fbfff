"""Kafka consumer loop, DuckDB sink, dead letters, file backfill, simulator, local broker."""
