"""The sink's transaction: offsets cover every message, redeliveries land nothing twice."""

from __future__ import annotations

import orjson

from prefstream.ingest.sink import DuckDBSink, RawBatch
from prefstream.store import open_store

VALID = {
    "schema_version": 1, "kind": "thumbs", "event_id": "ok-1", "ts": "2026-11-01T10:00:00Z",
    "prompt": "p", "annotator_id": "u", "response": "r", "rating": "up",
}


def kafka_batch(values, first_offset=0):
    n = len(values)
    return RawBatch(values=values, keys=[None] * n, topics=["t"] * n, partitions=[0] * n, offsets=list(range(first_offset, first_offset + n)))


def test_next_offset_covers_a_trailing_retry_and_a_redelivery_is_skipped(db_path):
    sink = DuckDBSink(open_store(db_path))
    retry = orjson.dumps(VALID)
    batch = kafka_batch([retry, orjson.dumps({**VALID, "event_id": "other"}), b"not json", retry])
    counts, offsets = sink.land(batch, group_id="g")
    assert (counts.thumbs, counts.dead_letters, counts.duplicates, offsets) == (2, 1, 1, {("t", 0): 4})
    again, _ = sink.land(batch, group_id="g")  # e.g. redelivered after a crash before Kafka's commit
    assert (again.landed, again.dead_letters, again.duplicates, again.replayed) == (0, 0, 0, 4)
    late, offsets = sink.land(kafka_batch([retry], first_offset=4), group_id="g")
    assert (late.duplicates, offsets) == (1, {("t", 0): 5})
    rows = sink.con.execute("SELECT source, first_source FROM duplicates ORDER BY source").fetchall()
    assert rows == [("t[0]@3", "t[0]@0"), ("t[0]@4", "t[0]@0")]


def test_a_failed_transaction_leaves_nothing_behind(db_path, monkeypatch):
    sink = DuckDBSink(open_store(db_path))
    batch = kafka_batch([orjson.dumps(VALID), b"broken"])
    monkeypatch.setattr("prefstream.ingest.sink._OFFSETS_SQL", "INSERT INTO no_such_table VALUES (?, ?, ?, ?)")
    try:
        sink.land(batch, group_id="g")
    except Exception:
        pass
    else:
        raise AssertionError("the injected failure did not happen")
    for table in ("thumbs", "dead_letters", "kafka_offsets"):
        assert sink.con.execute(f"SELECT count(*) FROM {table}").fetchall() == [(0,)], table


def test_an_event_duckdb_cannot_read_is_dead_lettered_not_a_stuck_batch(db_path, monkeypatch):
    from prefstream.ingest import sink as sink_module

    # Pretend DuckDB's JSON reader chokes on one document that pydantic accepted.
    shape = dict(sink_module._SHAPES["thumbs"], rating="INTEGER")
    monkeypatch.setitem(sink_module._SHAPES, "thumbs", shape)
    monkeypatch.setattr(sink_module, "_THUMBS_SQL", sink_module._insert_sql("thumbs", "md5(prompt_json || chr(31) || response) AS item_id"))
    sink = DuckDBSink(open_store(db_path))
    batch = kafka_batch([orjson.dumps({**VALID, "event_id": "a"}), b"junk"])
    counts, offsets = sink.land(batch, group_id="g")
    assert (counts.thumbs, counts.dead_letters, offsets) == (0, 2, {("t", 0): 2})
    reasons = [r for (r,) in sink.con.execute("SELECT reason FROM dead_letters ORDER BY source").fetchall()]
    assert reasons[0].startswith("store rejected the event") and reasons[1].startswith("invalid JSON")
