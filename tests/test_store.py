"""The store: migrations, current-feedback views, locations that are not a store."""

from __future__ import annotations

import duckdb
import orjson
import pytest

from prefstream.errors import StoreError
from prefstream.ingest.sink import RawBatch, StoreSink
from prefstream.store import LATEST_VERSION, open_store, schema_version
from prefstream.tests.store_helpers import query


def event(event_id, ts, **fields):
    base = {"schema_version": 1, "event_id": event_id, "ts": ts, "prompt": "p", "annotator_id": "u1"}
    return orjson.dumps({**base, **fields})


def land(store_path, *values):
    batch = RawBatch(values=list(values), sources=[f"test:{i}" for i in range(len(values))])
    with open_store(store_path) as store:
        return StoreSink(store).land(batch, group_id="test")[0]


def test_opening_an_older_store_migrates_it(store_path):
    with open_store(store_path, migrate_to=1) as store:
        con = store.read()
        assert schema_version(con) == 1
        assert con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'thumbs_current'").fetchall() == [(0,)]
        con.close()
    with open_store(store_path) as store:
        con = store.read()
        assert schema_version(con) == LATEST_VERSION
        versions = [v for (v,) in con.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()]
        assert versions == list(range(1, LATEST_VERSION + 1))
        assert con.execute("SELECT count(*) FROM thumbs_current").fetchall() == [(0,)]
        con.close()


def test_a_missing_store_is_refused_unless_created(store_path):
    with pytest.raises(StoreError, match="no store at"):
        open_store(store_path, create=False)
    assert not store_path.exists()  # nothing half-created


def test_a_file_that_is_not_a_store_gives_a_one_line_error(tmp_path):
    bad = tmp_path / "events.jsonl"
    bad.write_text('{"a": 1}\n' * 100)
    with pytest.raises(StoreError, match="is a file, not a store") as info:
        open_store(bad)
    assert "\n" not in str(info.value)
    assert bad.read_text() == '{"a": 1}\n' * 100


def test_a_v01_duckdb_file_says_how_to_carry_its_feedback_over(tmp_path):
    old = tmp_path / "feedback.duckdb"
    con = duckdb.connect(str(old))  # any DuckDB file carries b"DUCK" at offset 8, as 2.0's did
    con.execute("CREATE TABLE thumbs (event_id VARCHAR)")
    con.close()
    assert old.read_bytes()[8:12] == b"DUCK"
    with pytest.raises(StoreError, match="v0.1 DuckDB file") as info:
        open_store(old)
    assert "\n" not in str(info.value) and "ingest-file" in str(info.value) and "new group" in str(info.value)


def test_a_folder_holding_other_things_is_not_a_store(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("x")
    with pytest.raises(StoreError, match="is not a prefstream store"):
        open_store(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["todo.txt"]


def test_thumbs_current_keeps_the_latest_per_annotator_and_item(store_path):
    counts = land(
        store_path,
        event("t1", "2026-11-01T10:00:00Z", kind="thumbs", response="r", rating="up"),
        event("t2", "2026-11-01T12:00:00Z", kind="thumbs", response="r", rating="down"),
        event("t3", "2026-11-01T11:00:00Z", kind="thumbs", response="r", rating="up", annotator_id="u2"),
        event("t4", "2026-11-01T09:00:00Z", kind="thumbs", response="other", rating="up"),
    )
    assert counts.thumbs == 4
    current = query(store_path, "SELECT event_id, rating FROM thumbs_current ORDER BY event_id")
    assert current == [("t2", "down"), ("t3", "up"), ("t4", "up")]


def test_pairwise_current_treats_a_swapped_pair_as_the_same_item(store_path):
    land(
        store_path,
        event("p1", "2026-11-01T10:00:00Z", kind="pairwise", response_a="good", response_b="bad", choice="a", shown_first="a"),
        # later, the same annotator sees the pair the other way round and prefers "bad"
        event("p2", "2026-11-01T11:00:00Z", kind="pairwise", response_a="bad", response_b="good", choice="a", shown_first="b"),
    )
    rows = query(store_path, "SELECT event_id, chosen, rejected, first_shown_chosen FROM pairwise_current")
    assert rows == [("p2", "bad", "good", False)]
    assert len(query(store_path, "SELECT DISTINCT pair_id FROM pairwise")) == 1


def test_prompts_keep_their_form_and_item_keys_are_stable(store_path):
    chat = [{"role": "user", "content": "hi"}]
    land(
        store_path,
        event("c1", "2026-11-01T10:00:00Z", kind="thumbs", prompt=chat, response="r", rating="up"),
        event("c2", "2026-11-01T10:00:00Z", kind="thumbs", prompt="hi", response="r", rating="up"),
    )
    rows = dict(query(store_path, "SELECT event_id, prompt::VARCHAR FROM thumbs"))
    assert orjson.loads(rows["c1"]) == chat and orjson.loads(rows["c2"]) == "hi"
    assert query(store_path, "SELECT count(DISTINCT item_id), count(DISTINCT prompt_hash) FROM thumbs") == [(2, 2)]


def test_a_reader_sees_one_snapshot_while_a_writer_commits(store_path):
    land(store_path, event("a", "2026-11-01T10:00:00Z", kind="thumbs", response="r", rating="up"))
    with open_store(store_path) as store:
        reader = store.read()
        try:
            before = reader.execute("SELECT count(*) FROM thumbs").fetchall()
            land(store_path, event("b", "2026-11-01T10:00:00Z", kind="thumbs", response="r2", rating="up"))
            assert reader.execute("SELECT count(*) FROM thumbs").fetchall() == before == [(1,)]
        finally:
            reader.close()
        assert query(store_path, "SELECT count(*) FROM thumbs") == [(2,)]
