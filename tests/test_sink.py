"""The sink's transaction: offsets cover every message, redeliveries land nothing twice."""

from __future__ import annotations

import orjson
import pytest

from prefstream.ingest.sink import RawBatch, StoreSink
from prefstream.store import open_store

VALID = {
    "schema_version": 1, "kind": "thumbs", "event_id": "ok-1", "ts": "2026-11-01T10:00:00Z",
    "prompt": "p", "annotator_id": "u", "response": "r", "rating": "up",
}


def kafka_batch(values, first_offset=0, topic="t"):
    n = len(values)
    return RawBatch(values=values, keys=[None] * n, topics=[topic] * n, partitions=[0] * n, offsets=list(range(first_offset, first_offset + n)))


def rows(store, sql):
    con = store.read()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_next_offset_covers_a_trailing_retry_and_a_redelivery_is_skipped(store_path):
    with open_store(store_path) as store:
        sink = StoreSink(store)
        retry = orjson.dumps(VALID)
        batch = kafka_batch([retry, orjson.dumps({**VALID, "event_id": "other"}), b"not json", retry])
        counts, offsets = sink.land(batch, group_id="g")
        assert (counts.thumbs, counts.dead_letters, counts.duplicates, offsets) == (2, 1, 1, {("t", 0): 4})
        again, _ = sink.land(batch, group_id="g")  # e.g. redelivered after a crash before Kafka's commit
        assert (again.landed, again.dead_letters, again.duplicates, again.replayed) == (0, 0, 0, 4)
        late, offsets = sink.land(kafka_batch([retry], first_offset=4), group_id="g")
        # A retry in a later batch is not counted by that batch, but the view lists it.
        assert (late.thumbs, late.duplicates, offsets) == (1, 0, {("t", 0): 5})
        assert rows(store, "SELECT source, first_source FROM duplicates ORDER BY source") == [("t[0]@3", "t[0]@0"), ("t[0]@4", "t[0]@0")]
        assert rows(store, "SELECT event_id, source FROM thumbs ORDER BY event_id") == [("ok-1", "t[0]@0"), ("other", "t[0]@1")]
        assert rows(store, "SELECT count(*) FROM thumbs_raw") == [(4,)]  # raw keeps every copy


def test_a_second_group_replaying_the_topic_adds_nothing_visible(store_path):
    with open_store(store_path) as store:
        sink = StoreSink(store)
        batch = kafka_batch([orjson.dumps({**VALID, "event_id": f"e{i}", "response": f"r{i}"}) for i in range(5)] + [b"junk"])
        first, _ = sink.land(batch, group_id="g1")
        second, _ = sink.land(batch, group_id="g2")  # its own offsets: it writes everything again
        assert (first.thumbs, first.dead_letters) == (second.thumbs, second.dead_letters) == (5, 1)
        assert rows(store, "SELECT count(*) FROM thumbs_raw") == [(10,)]
        assert rows(store, "SELECT count(*) FROM dead_letters_raw") == [(2,)]
        for view, n in [("thumbs", 5), ("thumbs_current", 5), ("dead_letters", 1), ("duplicates", 0)]:
            assert rows(store, f"SELECT count(*) FROM {view}") == [(n,)], view
        assert rows(store, "SELECT group_id, next_offset FROM kafka_offsets ORDER BY 1") == [("g1", 6), ("g2", 6)]


def test_offsets_move_backwards_only_through_a_reset(store_path):
    with open_store(store_path) as store:
        sink = StoreSink(store)
        sink.land(kafka_batch([orjson.dumps({**VALID, "event_id": f"e{i}"}) for i in range(5)]), group_id="g")
        # A zombie lands an older batch after the group moved on: the offsets stay where they were.
        stale, offsets = sink.land(kafka_batch([orjson.dumps({**VALID, "event_id": "e0"})]), group_id="g")
        assert (stale.replayed, offsets) == (1, {})
        assert sink.stored_offsets("g") == {("t", 0): 5}
        sink.reset_offsets("g", {("t", 0): 2})
        assert sink.stored_offsets("g") == {("t", 0): 2}
        again, offsets = sink.land(kafka_batch([orjson.dumps({**VALID, "event_id": f"e{i}"}) for i in range(2, 5)], first_offset=2), group_id="g")
        assert (again.thumbs, offsets) == (3, {("t", 0): 5})
        assert rows(store, "SELECT count(*), count(DISTINCT source) FROM thumbs") == [(5, 5)]


def test_a_failed_transaction_leaves_nothing_behind(store_path, monkeypatch):
    with open_store(store_path) as store:
        sink = StoreSink(store)
        batch = kafka_batch([orjson.dumps(VALID), b"broken"])
        monkeypatch.setattr("prefstream.ingest.sink._OFFSETS_SQL", "INSERT INTO no_such_table VALUES (?, ?, ?, ?, ?, ?, ?)")
        with pytest.raises(Exception):
            sink.land(batch, group_id="g")
        for table in ("thumbs_raw", "dead_letters_raw", "offsets_log", "thumbs", "dead_letters", "kafka_offsets"):
            assert rows(store, f"SELECT count(*) FROM {table}") == [(0,)], table
        monkeypatch.undo()
        counts, _ = sink.land(batch, group_id="g")  # the same store keeps working
        assert (counts.thumbs, counts.dead_letters) == (1, 1)


def test_an_event_the_store_cannot_hold_is_dead_lettered_not_a_stuck_batch(store_path):
    # Valid by the wire schema (metadata is free-form JSON), but no 64-bit column holds it.
    huge = orjson.dumps({**VALID, "event_id": "a"})[:-1] + b', "metadata": {"n": 123456789012345678901234567890}}'
    with open_store(store_path) as store:
        sink = StoreSink(store)
        counts, offsets = sink.land(kafka_batch([huge, b"junk", orjson.dumps(VALID)]), group_id="g")
        assert (counts.thumbs, counts.dead_letters, offsets) == (1, 2, {("t", 0): 3})
        reasons = [r for (r,) in rows(store, "SELECT reason FROM dead_letters ORDER BY source")]
        assert reasons[0].startswith("cannot store the event") and reasons[1].startswith("invalid JSON")


def test_the_sink_works_the_same_on_a_postgres_catalog(pg_store):
    with open_store(pg_store) as store:
        sink = StoreSink(store)
        retry = orjson.dumps(VALID)
        counts, offsets = sink.land(kafka_batch([retry, b"x", retry]), group_id="g")
        assert (counts.thumbs, counts.dead_letters, counts.duplicates, offsets) == (1, 1, 1, {("t", 0): 3})
        assert sink.land(kafka_batch([retry, b"x", retry]), group_id="g")[0].replayed == 3
        assert rows(store, "SELECT count(*) FROM thumbs") == [(1,)]
        assert rows(store, "SELECT count(*) FROM duplicates") == [(1,)]


def test_a_dead_letter_at_a_reused_offset_after_a_reset_is_still_visible(store_path):
    with open_store(store_path) as store:
        sink = StoreSink(store)
        sink.land(kafka_batch([b"old junk"]), group_id="g")
        sink.reset_offsets("g", {("t", 0): 0})  # the topic was recreated: offset 0 is a new message
        counts, _ = sink.land(kafka_batch([b"new junk"]), group_id="g")
        assert counts.dead_letters == 1
        assert sorted(r[0] for r in rows(store, "SELECT raw FROM dead_letters")) == [b"new junk", b"old junk"]
