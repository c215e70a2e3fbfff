"""Stores for tests: messages written as JSONL and landed as `prefstream ingest-file` does, and CLI runs."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from prefstream.cli import main
from prefstream.ingest.backfill import ingest_files
from prefstream.ingest.produce import encode
from prefstream.store import open_store


def write_jsonl(path: Path, messages) -> Path:
    """Append ``messages`` (event dicts or raw bytes) to ``path``, one a line."""
    with open(path, "ab") as f:
        for message in messages:
            f.write(encode(message) + b"\n")
    return path


def land(folder: Path, messages, *, expect_all_valid: bool = False) -> Path:
    """Append ``messages`` to ``folder/events.jsonl`` and land it in the store ``folder/store``; the store's path.

    Landing again into the same folder adds only the new lines (files are checkpointed by line).
    """
    folder.mkdir(parents=True, exist_ok=True)
    messages = list(messages)
    events = write_jsonl(folder / "events.jsonl", messages)
    path = folder / "store"
    with open_store(path) as store:
        counts = ingest_files(store, [events])
    if expect_all_valid:
        assert counts.dead_letters == 0 and counts.landed == len(messages)
    return path


def query(store_path, sql: str, params=None) -> list[tuple]:
    """Rows of ``sql`` against the current snapshot of the store at ``store_path``."""
    with open_store(store_path, create=False) as store:
        con = store.read()
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()


def run(*args):
    """``prefstream ARGS...`` in-process."""
    return CliRunner().invoke(main, [str(a) for a in args])


def export(store, kind, out, *extra):
    """``prefstream export KIND``; the result and, when it succeeded, the manifest."""
    result = run("export", kind, "--store", store, "--out", out, *extra)
    manifest = json.loads((Path(out) / "manifest.json").read_text()) if result.exit_code == 0 else None
    return result, manifest
