"""The lake itself: several processes opening one new store at once, snapshots pinned while others write."""

from __future__ import annotations

import subprocess
import sys

import pytest

from prefstream.store import LATEST_VERSION, StoreLocation, open_store
from prefstream.tests.store_helpers import query

OPEN = """
import sys
from prefstream.store import StoreLocation, open_store
open_store(StoreLocation(sys.argv[1], sys.argv[2] or None)).close()
"""


def open_concurrently(location: StoreLocation, n: int) -> list[subprocess.CompletedProcess]:
    children = [
        subprocess.Popen([sys.executable, "-c", OPEN, location.store, location.data_path or ""], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(n)
    ]
    return [(c.wait(timeout=180), c.stderr.read().decode()) for c in children]


@pytest.mark.parametrize("kind", ["postgres", "embedded"])
def test_several_processes_may_create_one_new_store_at_once(kind, request, tmp_path):
    location = request.getfixturevalue("pg_store") if kind == "postgres" else StoreLocation(str(tmp_path / "store"))
    results = open_concurrently(location, 3)
    assert [code for code, _ in results] == [0, 0, 0], results
    versions = [v for (v,) in query(location, "SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == list(range(1, LATEST_VERSION + 1))  # each migration applied once


def test_a_pinned_reader_on_a_postgres_catalog_keeps_its_snapshot(pg_store):
    from prefstream.ingest.sink import RawBatch, StoreSink
    from prefstream.store import snapshot_of

    def land(store, event_id):
        value = b'{"schema_version": 1, "kind": "thumbs", "event_id": "%s", "ts": "2026-11-01T10:00:00Z", "prompt": "p", ' \
                b'"annotator_id": "u", "response": "%s", "rating": "up"}' % (event_id.encode(), event_id.encode())
        StoreSink(store).land(RawBatch(values=[value], sources=[f"f:{event_id}"]), group_id="t")

    with open_store(pg_store) as store:
        land(store, "a")
        reader = store.read()
        pinned = snapshot_of(reader)
        land(store, "b")
        try:
            assert reader.execute("SELECT event_id FROM thumbs").fetchall() == [("a",)]
        finally:
            reader.close()
        old = store.read(snapshot=pinned)
        try:
            assert old.execute("SELECT event_id FROM thumbs").fetchall() == [("a",)]
        finally:
            old.close()
        assert store.current_snapshot() > pinned
    assert sorted(query(pg_store, "SELECT event_id FROM thumbs")) == [("a",), ("b",)]
