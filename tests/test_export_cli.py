"""The `prefstream export` command as a user meets it: one-line errors with exit 2 before any
work and nothing half-written, safe --overwrite, atomic replacement, folders that follow the
umask, progress, documented --help and drop reasons."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import stat
from pathlib import Path

import datasets
import pytest

from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.store import open_store
from prefstream.tests.store_helpers import export, land, query, run

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def plain_store(tmp_path_factory):
    """A store landed from simulated plain-prompt events through ingest_files (`prefstream ingest-file`)."""
    return land(tmp_path_factory.mktemp("plain"), simulate(SimConfig(n=2000, seed=21, chat_share=0.0)))


def count(store, table: str) -> int:
    return query(store, f"SELECT count(*) FROM {table}")[0][0]


def test_bad_input_is_a_one_line_error_before_any_work_and_nothing_is_half_written(plain_store, tmp_path):
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "file.txt").write_text("not a folder")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("years of work")
    (tmp_path / "link").symlink_to(tmp_path / "exists")
    reports = count(plain_store, "quality_reports")
    early = [  # refused before the audit: no report is stored for them
        (["--out", tmp_path / "exists"], "exists; pass --overwrite"),
        (["--out", tmp_path / "precious", "--overwrite"], "not a prefstream export"),
        (["--out", tmp_path / "link"], "symbolic link"),
        (["--out", tmp_path / "exists" / "file.txt" / "x"], "is not a folder"),
        (["--out", tmp_path / "x", "--since", "2030-01-01T00:00:00Z"], "no rows to export"),
        (["--out", tmp_path / "x", "--since", "yesterday"], "not an RFC 3339 timestamp"),
        (["--out", tmp_path / "x", "--since", "2026-11-05T00:00:00Z", "--until", "2026-11-02T00:00:00Z"], "is not before"),
        (["--out", tmp_path / "x", "--eval-fraction", "1.5"], "--eval-fraction"),
        (["--out", tmp_path / "x", "--ties", "keep"], "--ties keep does not apply to dpo"),
        (["--out", tmp_path / "x", "--force-reason", "why"], "--force-reason needs --force"),
        (["--out", tmp_path / "x", "--report-id", "qr-nope"], "no quality report 'qr-nope'"),
        (["--out", tmp_path / "x", "--memory-limit", "lots"], "--memory-limit 'lots'"),
        (["--out", tmp_path / "x", "--snapshot", "99999"], "snapshot 99999 does not exist"),
    ]
    if Path("/sys/kernel").is_dir():  # Linux sysfs: nobody, root included, may create a folder there
        early.append((["--out", "/sys/prefstream-export"], "cannot write the export to /sys/prefstream-export"))
    late = [(["--out", tmp_path / "x", "--eval-fraction", "0.0000001"], "split would be empty")]
    for args, message in early + late:
        result = run("export", "dpo", "--store", plain_store, *args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("prefstream: error:") and message in lines[0], (args, lines)
        if (args, message) in early:
            assert count(plain_store, "quality_reports") == reports, args
    missing = run("export", "kto", "--store", tmp_path / "nope", "--out", tmp_path / "x")
    assert missing.exit_code == 2 and "no store at" in missing.output and not (tmp_path / "nope").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "link", "precious"]
    assert (tmp_path / "precious" / "thesis.txt").read_text() == "years of work"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_out_folder_is_refused_before_any_work(plain_store, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    reports = count(plain_store, "quality_reports")
    result = run("export", "dpo", "--store", plain_store, "--out", locked / "set")
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"prefstream: error: cannot write the export to {locked / 'set'}: Permission denied; choose another --out"
    ]
    assert count(plain_store, "quality_reports") == reports


def test_overwrite_replaces_an_earlier_export(plain_store, tmp_path):
    out = tmp_path / "set"
    _, first = export(plain_store, "dpo", out)
    result, second = export(plain_store, "kto", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert second["kind"] == "kto" and json.loads((out / "manifest.json").read_text())["export_id"] == second["export_id"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    assert "label" in datasets.load_from_disk(str(out))["train"].features


def test_a_failure_while_writing_leaves_the_old_export_and_the_store_as_they_were(plain_store, tmp_path, monkeypatch):
    from prefstream.prep import dataset

    out = tmp_path / "set"
    _, first = export(plain_store, "dpo", out)
    before = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    real = dataset.write_splits

    def failing(*args, **kwargs):
        real(*args, **kwargs)  # everything written, then the disk fills up
        raise OSError(28, "No space left on device")

    recorded = count(plain_store, "exports")
    monkeypatch.setattr(dataset, "write_splits", failing)
    for target in (out, tmp_path / "new", tmp_path / "deep" / "er" / "new"):
        result = run("export", "dpo", "--store", plain_store, "--out", target, "--overwrite")
        assert result.exit_code == 2 and "No space left on device" in result.output
    assert sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    assert count(plain_store, "exports") == recorded  # the failed exports left no row
    shutil.rmtree(out)


def test_a_failure_to_record_the_export_undoes_the_rename(plain_store, tmp_path, monkeypatch):
    export_module = importlib.import_module("prefstream.prep.export")  # the module (the package exports the function under that name)

    out = tmp_path / "set"
    _, first = export(plain_store, "dpo", out)
    before = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())

    def failing(store, manifest, out):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(export_module, "_record", failing)
    result = run("export", "kto", "--store", plain_store, "--out", out, "--overwrite")
    assert result.exit_code == 2 and "Input/output error" in result.output
    assert sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


@pytest.mark.parametrize("umask, folder, file", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_export_folders_and_files_follow_the_umask(plain_store, tmp_path, umask, folder, file):
    previous = os.umask(umask)
    try:
        result, _ = export(plain_store, "kto", tmp_path / "a" / "set")
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    for path in [tmp_path / "a", *(tmp_path / "a").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (folder if path.is_dir() else file), (path, oct(mode))


def test_progress_reports_steps_and_rows_written(plain_store, tmp_path):
    from prefstream.prep import ExportSettings, Output, export as run_export

    heard: list[str] = []
    with open_store(plain_store, create=False) as store:
        manifest = run_export(store, ExportSettings(kind="dpo"), Output(out=tmp_path / "lib", skip_gate=True), progress=heard.append)
    assert heard[0] == "aggregating annotators per item"
    assert f"writing train: {manifest['rows']['train']:,} rows" in heard and f"writing test: {manifest['rows']['test']:,} rows" in heard
    assert manifest["quality"]["checked"] is False and manifest["quality"]["report_id"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib"]  # no staging, scratch or spill folder left


def test_export_help_documents_examples():
    result = run("export", "--help")
    assert result.exit_code == 0 and "Example:" in result.output and "prefstream export dpo --store" in result.output
    for flag in ("--store", "--data-path", "--snapshot", "--eval-fraction", "--seed", "--since", "--until", "--min-agreement",
                 "--force", "--force-reason", "--format", "--overwrite", "--report-id", "--balance-length", "--include-thumbs",
                 "--include-pairwise", "--weighting", "--ties", "--memory-limit", "--max-pairs-per-prompt", "simpo", "orpo"):
        assert flag in result.output


def test_the_manifest_counts_drops_in_one_table_documented_in_the_readme(plain_store, tmp_path):
    from prefstream.prep import aggregate

    _, dpo = export(plain_store, "dpo", tmp_path / "dpo", "--include-thumbs", "--balance-length", "--force")
    _, kto = export(plain_store, "kto", tmp_path / "kto", "--include-pairwise")
    assert "drop_reasons" not in dpo and all(isinstance(v, int) for v in dpo["dropped"].values())
    section = README.read_text().split("## Export", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE))
    reasons = set(dpo["dropped"]) | set(kto["dropped"])
    reasons |= {f"{kind}_{r}" for kind, rs in (("pairwise", aggregate.PAIR_REASONS), ("thumbs", aggregate.THUMBS_REASONS)) for r in rs}
    assert reasons <= documented, reasons - documented


def test_missing_parent_folders_are_created(plain_store, tmp_path):
    result, manifest = export(plain_store, "kto", tmp_path / "exports" / "kto-1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["kto-1"]
