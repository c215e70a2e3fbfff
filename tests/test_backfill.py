"""File backfill through the CLI: validation, dead letters, duplicates, idempotent re-runs."""

from __future__ import annotations

from click.testing import CliRunner

from prefstream.cli import main
from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.store import open_store
from prefstream.tests.store_helpers import write_jsonl


def test_ingest_file_twice_lands_everything_once(tmp_path, db_path):
    messages = list(simulate(SimConfig(n=600, seed=3, invalid_rate=0.05, duplicate_rate=0.03)))
    path = tmp_path / "events.jsonl"
    write_jsonl(path, messages)
    valid = [m for m in messages if isinstance(m, dict) and m["schema_version"] == 1 and m["kind"] in ("thumbs", "pairwise") and "annotator_id" in m]
    unique_ids = {m["event_id"] for m in valid}
    retries = len(valid) - len(unique_ids)
    assert retries > 0 and len(valid) < len(messages)

    runner = CliRunner()
    first = runner.invoke(main, ["ingest-file", str(path), "--db", str(db_path)])
    assert first.exit_code == 0, first.output
    assert f"landed {len(unique_ids)} " in first.output
    assert f"duplicates {retries}," in first.output
    second = runner.invoke(main, ["ingest-file", str(path), "--db", str(db_path)])
    assert second.exit_code == 0 and "landed 0 " in second.output and "dead letters 0," in second.output

    con = open_store(db_path)
    stored = {r[0] for r in con.execute("SELECT event_id FROM thumbs UNION ALL SELECT event_id FROM pairwise").fetchall()}
    assert stored == unique_ids
    assert con.execute("SELECT count(*) FROM dead_letters").fetchall() == [(len(messages) - len(valid),)]
    assert con.execute("SELECT count(*) FROM duplicates").fetchall() == [(retries,)]
    line, raw = con.execute("SELECT source, raw FROM dead_letters ORDER BY source LIMIT 1").fetchall()[0]
    number = int(line.rsplit(":", 1)[1])
    assert path.read_bytes().split(b"\n")[number - 1] == raw


def test_ingest_file_errors_are_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["ingest-file", "--db", str(tmp_path / "nope" / "x.duckdb")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("prefstream: error: cannot create database")
    assert "Traceback" not in result.output
