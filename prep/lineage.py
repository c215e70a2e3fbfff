"""Where an export's events came from: Kafka offset ranges and backfilled files."""

from __future__ import annotations

import duckdb
import polars as pl


def sources(con: duckdb.DuckDBPyConnection, event_ids: pl.Series) -> dict:
    """``{"kafka": [{topic, partition, first_offset, last_offset, events}], "files": [{path, events}]}``."""
    con.register("export_event_ids", pl.DataFrame({"event_id": event_ids.unique()}))
    try:
        used = """(SELECT e.event_id, topic, "partition", "offset", source
                   FROM (SELECT event_id, topic, "partition", "offset", source FROM thumbs
                         UNION ALL SELECT event_id, topic, "partition", "offset", source FROM pairwise) e
                   JOIN export_event_ids USING (event_id))"""
        kafka = con.sql(
            f"""SELECT topic, "partition", min("offset") AS first_offset, max("offset") AS last_offset, count(*) AS events
                FROM {used} WHERE topic IS NOT NULL GROUP BY ALL ORDER BY ALL"""
        ).fetchall()
        files = con.sql(
            f"""SELECT regexp_extract(source, '^(.*):[0-9]+$', 1) AS path, count(*) AS events
                FROM {used} WHERE topic IS NULL GROUP BY ALL ORDER BY ALL"""
        ).fetchall()
    finally:
        con.unregister("export_event_ids")
    return {
        "kafka": [dict(zip(("topic", "partition", "first_offset", "last_offset", "events"), row)) for row in kafka],
        "files": [dict(zip(("path", "events"), row)) for row in files],
    }
