"""The DuckDB store: migrations, current-feedback views, unusable files."""

from __future__ import annotations

import orjson
import pytest

from prefstream.errors import StoreError
from prefstream.ingest.sink import DuckDBSink, RawBatch
from prefstream.store import LATEST_VERSION, open_store, schema_version


def event(event_id, ts, **fields):
    base = {"schema_version": 1, "event_id": event_id, "ts": ts, "prompt": "p", "annotator_id": "u1"}
    return orjson.dumps({**base, **fields})


def land(con, *values):
    batch = RawBatch(values=list(values), sources=[f"test:{i}" for i in range(len(values))])
    return DuckDBSink(con).land(batch)[0]


def test_opening_an_older_file_migrates_it(db_path):
    con = open_store(db_path, migrate_to=1)
    assert schema_version(con) == 1
    assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'thumbs_current'").fetchall() == [(0,)]
    con.close()
    con = open_store(db_path)
    assert schema_version(con) == LATEST_VERSION
    versions = [v for (v,) in con.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()]
    assert versions == list(range(1, LATEST_VERSION + 1))
    assert con.execute("SELECT count(*) FROM thumbs_current").fetchall() == [(0,)]


def test_read_only_refuses_a_missing_or_old_file(db_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_store(db_path, read_only=True)
    open_store(db_path, migrate_to=1).close()
    with pytest.raises(StoreError, match="schema version 1"):
        open_store(db_path, read_only=True)


def test_a_file_that_is_not_duckdb_gives_a_one_line_error(tmp_path):
    bad = tmp_path / "notes.duckdb"
    bad.write_text("this is not a database\n" * 100)
    with pytest.raises(StoreError, match="cannot open database") as info:
        open_store(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "missing-dir" / "x.duckdb")


def test_thumbs_current_keeps_the_latest_per_annotator_and_item(db_path):
    con = open_store(db_path)
    counts = land(
        con,
        event("t1", "2026-11-01T10:00:00Z", kind="thumbs", response="r", rating="up"),
        event("t2", "2026-11-01T12:00:00Z", kind="thumbs", response="r", rating="down"),
        event("t3", "2026-11-01T11:00:00Z", kind="thumbs", response="r", rating="up", annotator_id="u2"),
        event("t4", "2026-11-01T09:00:00Z", kind="thumbs", response="other", rating="up"),
    )
    assert counts.thumbs == 4
    current = con.execute("SELECT event_id, rating FROM thumbs_current ORDER BY event_id").fetchall()
    assert current == [("t2", "down"), ("t3", "up"), ("t4", "up")]


def test_pairwise_current_treats_a_swapped_pair_as_the_same_item(db_path):
    con = open_store(db_path)
    land(
        con,
        event("p1", "2026-11-01T10:00:00Z", kind="pairwise", response_a="good", response_b="bad", choice="a", shown_first="a"),
        # later, the same annotator sees the pair the other way round and prefers "bad"
        event("p2", "2026-11-01T11:00:00Z", kind="pairwise", response_a="bad", response_b="good", choice="a", shown_first="b"),
    )
    rows = con.execute("SELECT event_id, chosen, rejected, first_shown_chosen FROM pairwise_current").fetchall()
    assert rows == [("p2", "bad", "good", False)]
    ids = con.execute("SELECT DISTINCT pair_id FROM pairwise").fetchall()
    assert len(ids) == 1


def test_prompts_keep_their_form_and_item_keys_are_stable(db_path):
    con = open_store(db_path)
    chat = [{"role": "user", "content": "hi"}]
    land(
        con,
        event("c1", "2026-11-01T10:00:00Z", kind="thumbs", prompt=chat, response="r", rating="up"),
        event("c2", "2026-11-01T10:00:00Z", kind="thumbs", prompt="hi", response="r", rating="up"),
    )
    rows = dict(con.execute("SELECT event_id, prompt::VARCHAR FROM thumbs").fetchall())
    assert orjson.loads(rows["c1"]) == chat and orjson.loads(rows["c2"]) == "hi"
    hashes = con.execute("SELECT count(DISTINCT item_id), count(DISTINCT prompt_hash) FROM thumbs").fetchall()
    assert hashes == [(2, 2)]
