"""The `prefstream export` command as a user meets it: one-line errors with exit 2 and nothing
half-written, safe --overwrite, atomic replacement, documented --help, and a library call
that leaves the caller's connection as it was."""

from __future__ import annotations

import json
import shutil

import datasets
import pytest

from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.store import open_store
from prefstream.tests.store_helpers import export, land, run


@pytest.fixture(scope="module")
def plain_db(tmp_path_factory):
    """A store landed from simulated plain-prompt events through ingest_files (`prefstream ingest-file`)."""
    return land(tmp_path_factory.mktemp("plain"), simulate(SimConfig(n=2000, seed=21, chat_share=0.0)))


def test_bad_input_is_a_one_line_error_and_nothing_is_half_written(plain_db, tmp_path):
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "file.txt").write_text("not a folder")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("years of work")
    (tmp_path / "link").symlink_to(tmp_path / "exists")
    cases = [
        (["--out", tmp_path / "exists"], "exists; pass --overwrite"),
        (["--out", tmp_path / "precious", "--overwrite"], "not a prefstream export"),
        (["--out", tmp_path / "link"], "symbolic link"),
        (["--out", tmp_path / "exists" / "file.txt" / "x"], "is not a folder"),
        (["--out", tmp_path / "x", "--since", "2030-01-01T00:00:00Z"], "no rows to export"),
        (["--out", tmp_path / "x", "--eval-fraction", "0.0000001"], "split would be empty"),
        (["--out", tmp_path / "x", "--since", "yesterday"], "not an RFC 3339 timestamp"),
        (["--out", tmp_path / "x", "--since", "2026-11-05T00:00:00Z", "--until", "2026-11-02T00:00:00Z"], "is not before"),
        (["--out", tmp_path / "x", "--eval-fraction", "1.5"], "--eval-fraction"),
        (["--out", tmp_path / "x", "--ties", "keep"], "--ties keep does not apply to dpo"),
        (["--out", tmp_path / "x", "--force-reason", "why"], "--force-reason needs --force"),
        (["--out", tmp_path / "x", "--report-id", "qr-nope"], "no quality report 'qr-nope'"),
        (["--out", tmp_path / "x", "--memory-limit", "lots", "--reuse-report"], "--memory-limit 'lots'"),
    ]
    for args, message in cases:
        result = run("export", "dpo", "--db", plain_db, *args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("prefstream: error:") and message in lines[0], (args, lines)
    missing_db = run("export", "kto", "--db", tmp_path / "nope.duckdb", "--out", tmp_path / "x")
    assert missing_db.exit_code == 2 and "does not exist" in missing_db.output and not (tmp_path / "nope.duckdb").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "link", "precious"]
    assert (tmp_path / "precious" / "thesis.txt").read_text() == "years of work"


def test_overwrite_replaces_an_earlier_export(plain_db, tmp_path):
    out = tmp_path / "set"
    _, first = export(plain_db, "dpo", out, "--reuse-report")
    result, second = export(plain_db, "kto", out, "--overwrite", "--reuse-report")
    assert result.exit_code == 0, result.output
    assert second["kind"] == "kto" and json.loads((out / "manifest.json").read_text())["export_id"] == second["export_id"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    assert "label" in datasets.load_from_disk(str(out))["train"].features


def test_a_failure_while_writing_leaves_the_old_export_and_the_store_as_they_were(plain_db, tmp_path, monkeypatch):
    from prefstream.prep import dataset

    out = tmp_path / "set"
    _, first = export(plain_db, "dpo", out, "--reuse-report")
    before = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    real = dataset.write_splits

    def failing(con, target, directory, fmt, fingerprint, scratch):
        real(con, target, directory, fmt, fingerprint, scratch)  # everything written, then the disk fills up
        raise OSError(28, "No space left on device")

    con = open_store(plain_db)
    recorded = con.execute("SELECT count(*) FROM exports").fetchall()[0][0]
    con.close()
    monkeypatch.setattr(dataset, "write_splits", failing)
    for target in (out, tmp_path / "new", tmp_path / "deep" / "er" / "new"):
        result = run("export", "dpo", "--db", plain_db, "--out", target, "--overwrite", "--reuse-report")
        assert result.exit_code == 2 and "No space left on device" in result.output
    assert sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    con = open_store(plain_db)
    assert con.execute("SELECT count(*) FROM exports").fetchall()[0][0] == recorded  # the failed exports left no row
    assert con.execute("SELECT count(*) FROM exports WHERE export_id = ?", [first["export_id"]]).fetchall()[0][0] == 1
    con.close()
    shutil.rmtree(out)


def test_export_help_documents_examples():
    result = run("export", "--help")
    assert result.exit_code == 0 and "Example:" in result.output and "prefstream export dpo --db" in result.output
    for flag in ("--eval-fraction", "--seed", "--since", "--until", "--min-agreement", "--force", "--force-reason",
                 "--format", "--overwrite", "--report-id", "--reuse-report", "--balance-length", "--include-thumbs",
                 "--include-pairwise", "--weighting", "--ties", "--memory-limit", "--max-pairs-per-prompt"):
        assert flag in result.output


def test_library_export_leaves_the_connection_as_it_found_it(plain_db, tmp_path):
    from prefstream.prep import ExportSettings, Output, export as run_export

    con = open_store(plain_db)
    before = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    manifest = run_export(con, ExportSettings(kind="dpo", include_thumbs=True, balance_length=True), Output(out=tmp_path / "lib", skip_gate=True))
    assert manifest["quality"] == {"checked": False, "report_id": None, "passed": None, "failures": [], "forced": False, "force_reason": None, "reused": False}
    assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == before
    leftovers = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE temporary UNION ALL SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal"
    ).fetchall()
    assert leftovers == []
    con.close()


def test_missing_parent_folders_are_created(plain_db, tmp_path):
    result, manifest = export(plain_db, "kto", tmp_path / "exports" / "kto-1", "--reuse-report")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["kto-1"]
