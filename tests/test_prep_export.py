"""Exports from real DuckDB files built through ingest: TRL columns, splits, determinism, gate."""

from __future__ import annotations

import json

import datasets
import orjson
import pytest
from click.testing import CliRunner

from prefstream.cli import main
from prefstream.ingest.backfill import ingest_files
from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.prep.aggregate import Window, decide_pairs, decide_thumbs, pairwise_items, thumbs_items
from prefstream.store import open_store


def build_db(tmp_path_factory, name: str, messages) -> str:
    folder = tmp_path_factory.mktemp(name)
    events = folder / "events.jsonl"
    events.write_bytes(b"".join((m if isinstance(m, bytes) else orjson.dumps(m)) + b"\n" for m in messages))
    db = folder / "feedback.duckdb"
    con = open_store(db)
    ingest_files(con, [events])
    con.close()
    return str(db)


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def plain_db(tmp_path_factory):
    return build_db(tmp_path_factory, "plain", simulate(SimConfig(n=2500, seed=5, chat_share=0.0)))


@pytest.fixture(scope="module")
def chat_db(tmp_path_factory):
    return build_db(tmp_path_factory, "chat", simulate(SimConfig(n=1500, seed=6, chat_share=0.5)))


@pytest.fixture(scope="module")
def biased_db(tmp_path_factory):
    plant = frozenset({"length", "position", "imbalance"})
    return build_db(tmp_path_factory, "biased", simulate(SimConfig(n=2500, seed=7, plant=plant)))


def export(db, kind, out, *extra):
    result = run("export", kind, "--db", db, "--out", out, *extra)
    manifest = json.loads((out / "manifest.json").read_text()) if result.exit_code == 0 else None
    return result, manifest


def test_dpo_columns_and_types_are_trls_plain(plain_db, tmp_path):
    result, manifest = export(plain_db, "dpo", tmp_path / "dpo")
    assert result.exit_code == 0, result.output
    data = datasets.load_from_disk(str(tmp_path / "dpo"))
    assert set(data) == {"train", "test"}
    features = data["train"].features
    assert list(features)[:3] == ["prompt", "chosen", "rejected"]
    assert all(features[c] == datasets.Value("string") for c in ("prompt", "chosen", "rejected"))
    assert features["agreement"] == datasets.Value("float64")
    assert manifest["prompt_format"] == "plain" and manifest["rows"] == {"train": data["train"].num_rows, "test": data["test"].num_rows}
    assert manifest["quality"]["passed"] is True and manifest["quality"]["report_id"].startswith("qr-")
    row = data["train"][0]
    assert row["chosen"].startswith("Sure!") and row["rejected"].startswith("Sorry")


def test_kto_columns_and_conversational_format(chat_db, tmp_path):
    result, manifest = export(chat_db, "kto", tmp_path / "kto")
    assert result.exit_code == 0, result.output
    data = datasets.load_from_disk(str(tmp_path / "kto"))
    features = data["train"].features
    messages = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
    assert list(features)[:3] == ["prompt", "completion", "label"]
    assert features["prompt"] == messages and features["completion"] == messages
    assert features["label"] == datasets.Value("bool")
    assert manifest["prompt_format"] == "conversational"
    row = data["train"][0]
    assert [m["role"] for m in row["completion"]] == ["assistant"] and row["prompt"][-1]["role"] == "user"
    weights = manifest["kto_weights"]
    assert weights["desirable"] + weights["undesirable"] == sum(manifest["rows"].values())
    assert 1.0 <= weights["weighted_ratio"] <= 4 / 3


def test_no_prompt_lands_in_two_splits_and_exports_are_deterministic(plain_db, tmp_path):
    manifests = []
    for name in ("a", "b"):
        result, manifest = export(plain_db, "dpo", tmp_path / name, "--seed", "3", "--eval-fraction", "0.3")
        assert result.exit_code == 0, result.output
        manifests.append(manifest)
    data = datasets.load_from_disk(str(tmp_path / "a"))
    assert not set(data["train"]["prompt"]) & set(data["test"]["prompt"])
    assert manifests[0]["content_hash"] == manifests[1]["content_hash"]
    for split in ("train", "test"):
        files = sorted(p.name for p in (tmp_path / "a" / split).iterdir())
        for f in files:
            assert (tmp_path / "a" / split / f).read_bytes() == (tmp_path / "b" / split / f).read_bytes(), f
    _, other = export(plain_db, "dpo", tmp_path / "c", "--seed", "4", "--eval-fraction", "0.3")
    assert other["content_hash"] != manifests[0]["content_hash"]


def event(event_id, kind, annotator, ts="2026-11-01T10:00:00Z", prompt="How?", **fields):
    return {"schema_version": 1, "kind": kind, "event_id": event_id, "ts": ts, "prompt": prompt, "annotator_id": annotator, **fields}


def test_aggregation_matches_a_hand_computed_example(tmp_path_factory):
    x, y = "Answer X", "Answer Y"
    messages = [
        # pair {X, Y}: u1 and u2 prefer X (u2 sees it swapped), u3 prefers Y -> X wins 2/3
        event("p1", "pairwise", "u1", response_a=x, response_b=y, choice="a"),
        event("p2", "pairwise", "u2", response_a=y, response_b=x, choice="b"),
        event("p3", "pairwise", "u3", response_a=x, response_b=y, choice="b"),
        # u4 first prefers Y, then changes its mind to a tie: only the tie counts -> X wins 2/4
        event("p4", "pairwise", "u4", response_a=x, response_b=y, choice="b"),
        event("p5", "pairwise", "u4", ts="2026-11-02T10:00:00Z", response_a=y, response_b=x, choice="tie"),
        # pair {Z, W}: one vote each -> a tie, dropped
        event("p6", "pairwise", "u1", prompt="Other?", response_a="Z", response_b="W", choice="a"),
        event("p7", "pairwise", "u2", prompt="Other?", response_a="Z", response_b="W", choice="b"),
        # thumbs: item R up, up, down -> True with 2/3; item S up, down -> tie, dropped
        event("t1", "thumbs", "u1", response="R", rating="up"),
        event("t2", "thumbs", "u2", response="R", rating="up"),
        event("t3", "thumbs", "u3", response="R", rating="down"),
        event("t4", "thumbs", "u1", response="S", rating="up"),
        event("t5", "thumbs", "u2", response="S", rating="down"),
    ]
    con = open_store(build_db(tmp_path_factory, "hand", messages))
    pairs, dropped = decide_pairs(pairwise_items(con, Window()))
    assert dropped == {"identical_responses": 0, "tie": 1}
    assert pairs.select("chosen", "rejected", "agreement", "n_annotators").rows() == [(x, y, 0.5, 4)]
    assert sorted(pairs["source_event_ids"][0]) == ["p1", "p2", "p3", "p5"]
    rows, dropped = decide_thumbs(thumbs_items(con, Window()))
    assert dropped == {"tie": 1}
    assert rows.select("completion", "label", "agreement", "n_annotators").rows() == [("R", True, pytest.approx(2 / 3), 3)]
    # reliability weighting: u3 alone outweighs u1 + u2 when they are unreliable
    weighted, _ = decide_pairs(pairwise_items(con, Window(), {"u1": 0.2, "u2": 0.2, "u3": 0.9, "u4": 0.5}))
    assert weighted.select("chosen", "rejected").rows() == [(y, x)]


def test_pairs_from_thumbs_on_the_same_prompt(tmp_path_factory, tmp_path):
    messages = [
        event(f"t{i}", "thumbs", f"u{i % 3}", prompt=f"Q{i // 6}?", response=("good " if i % 6 < 3 else "bad ") + f"{i // 6}", rating="up" if i % 6 < 3 else "down")
        for i in range(60)
    ]
    db = build_db(tmp_path_factory, "thumbs-only", messages)
    result, manifest = export(db, "dpo", tmp_path / "pairs", "--include-thumbs", "--force", "--eval-fraction", "0.3")
    assert result.exit_code == 0, result.output
    data = datasets.load_from_disk(str(tmp_path / "pairs"))
    rows = list(data["train"]) + list(data["test"])
    assert len(rows) == 10 and manifest["dropped"]["pairwise_tie"] == 0
    assert all(r["chosen"].startswith("good") and r["rejected"].startswith("bad") for r in rows)
    assert all(r["chosen"].split()[1] == r["rejected"].split()[1] == r["prompt"][1:-1] for r in rows)


def test_length_balancing_moves_longer_wins_to_about_half(biased_db, tmp_path):
    _, plain = export(biased_db, "dpo", tmp_path / "raw", "--force")
    result, balanced = export(biased_db, "dpo", tmp_path / "balanced", "--force", "--balance-length")
    assert result.exit_code == 0, result.output
    assert plain["length"]["longer_wins"] > 0.7
    assert abs(balanced["length"]["longer_wins"] - 0.5) < 0.01
    assert balanced["dropped"]["length_balance"] > 0
    data = datasets.load_from_disk(str(tmp_path / "balanced"))
    rows = list(data["train"]) + list(data["test"])
    longer = sum(len(r["chosen"]) > len(r["rejected"]) for r in rows)
    shorter = sum(len(r["chosen"]) < len(r["rejected"]) for r in rows)
    assert abs(longer - shorter) <= 1


def test_gate_refuses_a_biased_export_unless_forced(biased_db, tmp_path):
    refused, _ = export(biased_db, "ipo", tmp_path / "refused")
    assert refused.exit_code == 1
    assert "quality gate failed" in refused.output and not (tmp_path / "refused").exists()
    forced, manifest = export(biased_db, "ipo", tmp_path / "forced", "--force", "--force-reason", "ablation run")
    assert forced.exit_code == 0, forced.output
    assert manifest["kind"] == "ipo"
    assert manifest["quality"]["passed"] is False and manifest["quality"]["forced"] is True
    assert manifest["quality"]["force_reason"] == "ablation run" and manifest["quality"]["failures"]


def test_imbalanced_kto_export_recommends_weights_in_trls_band(biased_db, tmp_path):
    _, manifest = export(biased_db, "kto", tmp_path / "kto", "--force")
    weights = manifest["kto_weights"]
    assert weights["desirable"] > 2 * weights["undesirable"]
    assert weights["undesirable_weight"] > 1.0 and weights["desirable_weight"] == 1.0
    assert 1.0 <= weights["weighted_ratio"] <= 4 / 3 + 1e-9


@pytest.mark.parametrize("fmt, suffix", [("parquet", "parquet"), ("jsonl", "jsonl")])
def test_other_formats(plain_db, tmp_path, fmt, suffix):
    result, manifest = export(plain_db, "kto", tmp_path / fmt, "--format", fmt)
    assert result.exit_code == 0, result.output
    loaded = datasets.load_dataset(fmt if fmt == "parquet" else "json", data_files={s: str(tmp_path / fmt / f"{s}.{suffix}") for s in ("train", "test")})
    assert loaded["train"].num_rows == manifest["rows"]["train"]
    assert list(loaded["train"].features)[:3] == ["prompt", "completion", "label"]


def test_lineage_names_the_backfilled_file(plain_db, tmp_path):
    _, manifest = export(plain_db, "dpo", tmp_path / "dpo")
    files = manifest["source"]["files"]
    assert len(files) == 1 and files[0]["path"].endswith("events.jsonl") and files[0]["events"] > 0
    assert manifest["source"]["kafka"] == []


def test_bad_input_is_a_one_line_error_and_nothing_is_half_written(plain_db, tmp_path):
    (tmp_path / "exists").mkdir()
    cases = [
        (["--out", tmp_path / "exists"], "exists; pass --overwrite"),
        (["--out", tmp_path / "x", "--since", "2030-01-01T00:00:00Z"], "no rows to export"),
        (["--out", tmp_path / "x", "--eval-fraction", "0.0000001"], "split would be empty"),
        (["--out", tmp_path / "missing" / "x"], "does not exist"),
        (["--out", tmp_path / "x", "--since", "yesterday"], "not an RFC 3339 time"),
        (["--out", tmp_path / "x", "--eval-fraction", "1.5"], "--eval-fraction"),
    ]
    for args, message in cases:
        result = run("export", "dpo", "--db", plain_db, *args)
        assert result.exit_code == 2, (args, result.output)
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("prefstream: error:") and message in last, (args, last)
        assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]
    overwritten = run("export", "dpo", "--db", plain_db, "--out", tmp_path / "exists", "--overwrite")
    assert overwritten.exit_code == 0 and (tmp_path / "exists" / "manifest.json").exists()
