"""Where an export's rows came from: the events behind them, as Kafka offset ranges and backfilled files."""

from __future__ import annotations


def sources(con, tables: list[str]) -> dict:
    """``{"events", "first_ts", "last_ts", "kafka": [{topic, partition, first_offset, last_offset, events}],
    "files": [{path, first_line, last_line, events}]}`` over the events behind the exported rows.

    ``tables`` hold the current events the export read, with their source columns
    (``_prep_pair_events`` / ``_prep_thumb_events``).
    """
    used = " UNION ALL ".join(
        f"""SELECT ts, topic, "partition", "offset", source FROM {table} SEMI JOIN (SELECT unnest(source_event_ids) AS event_id FROM _prep_export) USING (event_id)"""
        for table in tables
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE _prep_used AS {used}")
    events, first, last = con.execute("SELECT count(*), min(ts), max(ts) FROM _prep_used").fetchall()[0]
    kafka = con.execute(
        """SELECT topic, "partition", min("offset"), max("offset"), count(*)
           FROM _prep_used WHERE topic IS NOT NULL GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    # File sources are ``path:line`` (prefstream.ingest.backfill); the path is what precedes the
    # last colon (string_split is several times cheaper here than a regular expression).
    files = con.execute(
        """WITH f AS (SELECT string_split(source, ':')[-1] AS line, source FROM _prep_used WHERE topic IS NULL)
           SELECT left(source, length(source) - length(line) - 1) AS path,
                  min(try_cast(line AS BIGINT)), max(try_cast(line AS BIGINT)), count(*)
           FROM f GROUP BY path ORDER BY path"""
    ).fetchall()
    return {
        "events": int(events),
        "first_ts": first.isoformat() if first else None,
        "last_ts": last.isoformat() if last else None,
        "kafka": [dict(zip(("topic", "partition", "first_offset", "last_offset", "events"), row)) for row in kafka],
        "files": [dict(zip(("path", "first_line", "last_line", "events"), row)) for row in files],
    }
