"""Runs, comparisons, promotions and lineage as store records, through the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from prefstream.prep import ExportSettings, Output, export
from prefstream.promotion import read_run
from prefstream.store import open_store
from tests.kafka_helpers import ingest
from tests.store_helpers import land, run


def _pairs(n_prompts, *, model_a, model_b, winner="random", biased=False, tag="", seed=0, ts="2026-11-01T10:00:00Z"):
    """Pairwise events: three users agree on each pair; ``biased``: the first shown and the longer always win."""
    rng = random.Random(seed)
    out = []
    for p in range(n_prompts):
        a, b = f"answer {p} " + "x" * rng.randint(5, 40), f"reply {p} " + "y" * rng.randint(5, 40)
        won = winner if winner != "random" else rng.choice("ab")
        if biased:
            won = "a" if len(a) > len(b) else "b"
        for k in range(3):
            out.append({
                "schema_version": 1, "kind": "pairwise", "event_id": f"{tag}{p}-{k}", "ts": ts, "prompt": f"question {tag}{p}",
                "annotator_id": f"user-{k}", "response_a": a, "response_b": b, "choice": won,
                "shown_first": won if biased else rng.choice("ab"), "model_a": model_a, "model_b": model_b,
            })  # fmt: skip
    return out


def _fake_run(folder: Path, manifest: dict | None, *, status="finished", started="2026-11-02T00:00:00+00:00", base="models/base") -> Path:
    """A run directory as `prefstream train` leaves it (no weights: promotion reads only run.json)."""
    folder.mkdir(parents=True)
    export = {"export_id": manifest["export_id"], "path": str(folder.parent / manifest["export_id"])} if manifest else {}
    (folder / "run.json").write_text(json.dumps({"status": status, "kind": "dpo", "export": export, "model": {"path": base}, "started_at": started}))
    return folder


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """A store with a clean (ungated) export, a forced one, four runs and judgements of run 2 against run 1."""
    root = tmp_path_factory.mktemp("records")
    runs = root / "runs"
    ids = {name: read_run(_fake_run(root / "probe" / name, None, started=f"2026-11-02T0{i}:00:00+00:00")).run_id
           for i, name in enumerate(("r1", "r2", "r3", "r4"))}  # fmt: skip
    events = _pairs(30, model_a="m0", model_b="m1", tag="clean")
    events += _pairs(30, model_a="m0", model_b="m1", biased=True, tag="biased", seed=1, ts="2026-11-03T10:00:00Z")
    events += _pairs(20, model_a=ids["r1"], model_b=ids["r2"], winner="a", tag="cmp", seed=2, ts="2026-11-04T10:00:00Z")
    store = land(root, events, expect_all_valid=True)
    with open_store(store) as opened:
        clean = export(opened, ExportSettings(kind="dpo", until="2026-11-02T00:00:00Z"), Output(out=runs / "clean", skip_gate=True))
    result = run("export", "dpo", "--store", store, "--out", runs / "forced", "--since", "2026-11-03T00:00:00Z", "--until", "2026-11-04T00:00:00Z",
                 "--force", "--force-reason", "ablation")  # fmt: skip
    assert result.exit_code == 0, result.output
    forced = json.loads((runs / "forced" / "manifest.json").read_text())
    assert forced["quality"]["forced"], forced["quality"]
    dirs = {}
    for i, (name, manifest, status) in enumerate((("r1", clean, "finished"), ("r2", clean, "finished"), ("r3", forced, "finished"), ("r4", clean, "running"))):
        dirs[name] = _fake_run(runs / name, manifest, status=status, started=f"2026-11-02T0{i}:00:00+00:00")
        assert read_run(dirs[name]).run_id == ids[name]
    return {"store": store, "dirs": dirs, "ids": ids, "clean": clean, "forced": forced}


def test_compare_cli_on_runs_and_with_no_feedback(loop, tmp_path):
    store, dirs, ids = loop["store"], loop["dirs"], loop["ids"]
    result = run("compare", "--store", store, "--model-a", dirs["r1"], "--model-b", dirs["r2"], "--json", "--html", tmp_path / "cmp.html")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    page = (tmp_path / "cmp.html").read_text()
    assert "<table>" in page and f"{ids['r2']} (B) vs {ids['r1']} (A)" in page and "<td>user</td>" in page
    assert (out["model_a"], out["model_b"], out["judgements"]) == (ids["r1"], ids["r2"], 60)
    assert out["by_kind"]["user"]["win_rate"] == 0.0 and set(out["by_kind"]) == {"all", "user"}
    result = run("compare", "--store", store, "--model-a", dirs["r1"], "--model-b", dirs["r3"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "no pairwise feedback compares" in result.output


def test_promotion_needs_override_for_a_lost_comparison_or_a_forced_export_and_rollback_keeps_history(loop):
    store, dirs, ids = loop["store"], loop["dirs"], loop["ids"]

    def promote(ref, *extra):
        return run("runs", "promote", ref, "--store", store, "--by", "alice", "--note", "test", *extra)

    first = promote(dirs["r1"])
    assert first.exit_code == 0 and "promoted " + ids["r1"] in first.output, first.output
    lost = promote(dirs["r2"])
    assert lost.exit_code == 2 and "needs --override" in lost.output and "lost its comparison" in lost.output
    assert promote(dirs["r2"], "--override", "ship the fix anyway").exit_code == 0
    forced = promote(dirs["r3"])
    assert forced.exit_code == 2 and "forced past the quality gate (ablation)" in forced.output
    assert promote(dirs["r3"], "--override", "ablation accepted").exit_code == 0
    rollback = promote(ids["r1"])  # by id; an earlier promoted run needs no override
    assert rollback.exit_code == 0 and "(rollback)" in rollback.output, rollback.output

    history = json.loads(run("runs", "history", "--store", store, "--json").output)
    assert [h["run_id"] for h in history] == [ids["r1"], ids["r2"], ids["r3"], ids["r1"]]
    assert [h["override_reason"] for h in history] == [None, "ship the fix anyway", "ablation accepted", None]
    assert history[1]["evidence"]["comparison"]["verdict"] == "lost"
    assert history[2]["evidence"]["export"]["forced"] and history[3]["evidence"]["rollback"]
    listed = {r["run_id"]: r for r in json.loads(run("runs", "list", "--store", store, "--json").output)}
    assert listed[ids["r1"]]["promoted"] == "current" and listed[ids["r2"]]["promoted"] == "earlier"
    assert listed[ids["r2"]]["comparison"]["against"] == ids["r1"]


def test_promoting_a_missing_or_unfinished_run_is_exit_2(loop, tmp_path):
    store, dirs = loop["store"], loop["dirs"]
    for ref, message in ((tmp_path / "nope", "no run"), ("no-such-run", "no run no-such-run"), (dirs["r4"], "did not finish (status running)")):
        result = run("runs", "promote", ref, "--store", store, "--by", "bob", "--note", "x")
        assert result.exit_code == 2 and message in result.output, result.output


def test_lineage_from_a_run_back_to_kafka_offsets_and_forward(broker, make_topic, group_id, tmp_path):
    from prefstream.ingest.produce import produce

    topic = make_topic(1)
    produce(broker.bootstrap, topic, _pairs(30, model_a="m0", model_b="m1", biased=True, tag="k"))
    result, opened = ingest(broker, [topic], group_id, tmp_path / "store")
    opened.close()
    out = tmp_path / "exports" / "dpo"
    exported = run("export", "dpo", "--store", tmp_path / "store", "--out", out, "--force", "--force-reason", "test")
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((out / "manifest.json").read_text())
    child = _fake_run(tmp_path / "runs" / "a", manifest)
    grandchild = _fake_run(tmp_path / "runs" / "b", manifest, base=str(child / "final"), started="2026-11-03T00:00:00+00:00")
    assert run("runs", "list", "--store", tmp_path / "store", "--register", child, "--register", grandchild).exit_code == 0

    tree = json.loads(run("lineage", grandchild, "--store", tmp_path / "store", "--json").output)
    export_node = next(n for n in tree["back"] if n["kind"] == "export")
    assert export_node["id"] == manifest["export_id"]
    kafka = [n for n in export_node["children"] if n["kind"] == "kafka"]
    assert [n["label"] for n in kafka] == [f"kafka {topic}[0] offsets 0–89 (90 events)"]
    assert any(n["kind"] == "snapshot" and n["id"] == str(manifest["snapshot"]) for n in export_node["children"])
    assert any(n["kind"] == "report" for n in export_node["children"])
    parent = next(n for n in tree["back"] if n["kind"] == "run")
    assert parent["id"] == read_run(child).run_id

    forward = json.loads(run("lineage", manifest["export_id"], "--store", tmp_path / "store", "--json").output)["forward"]
    assert {n["id"] for n in forward} == {read_run(child).run_id, read_run(grandchild).run_id}
    text = run("lineage", child, "--store", tmp_path / "store")
    assert text.exit_code == 0 and f"kafka {topic}[0] offsets 0–89" in text.output and "└─ forward" in text.output
    assert run("lineage", "nothing-like-this", "--store", tmp_path / "store").exit_code == 2
