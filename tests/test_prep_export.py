"""`prefstream export` end to end, on real DuckDB files landed through ingest from simulated events:
TRL's columns and types, splits by prompt, determinism, formats, lineage, the gate, bad input."""

from __future__ import annotations

import json

import datasets
import pytest

from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.store import open_store
from prefstream.tests.store_helpers import export, land

MESSAGES = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
EXTRAS = {
    "weight": datasets.Value("float64"),
    "agreement": datasets.Value("float64"),
    "n_annotators": datasets.Value("int64"),
    "source_event_ids": datasets.List(datasets.Value("string")),
}


def all_rows(path) -> list[dict]:
    data = datasets.load_from_disk(str(path))
    return data["train"].to_list() + data["test"].to_list()


@pytest.fixture(scope="module")
def plain_db(tmp_path_factory):
    return land(tmp_path_factory.mktemp("plain"), simulate(SimConfig(n=2500, seed=5, chat_share=0.0)))


@pytest.fixture(scope="module")
def chat_db(tmp_path_factory):
    return land(tmp_path_factory.mktemp("chat"), simulate(SimConfig(n=1500, seed=6, chat_share=0.5)))


@pytest.fixture(scope="module")
def biased_db(tmp_path_factory):
    plant = frozenset({"length", "position", "imbalance"})
    return land(tmp_path_factory.mktemp("biased"), simulate(SimConfig(n=2500, seed=7, plant=plant)))


def test_dpo_columns_and_types_are_trls_plain(plain_db, tmp_path):
    result, manifest = export(plain_db, "dpo", tmp_path / "dpo")
    assert result.exit_code == 0, result.output
    data = datasets.load_from_disk(str(tmp_path / "dpo"))
    assert isinstance(data, datasets.DatasetDict) and set(data) == {"train", "test"}
    text = datasets.Value("string")
    expected = {"prompt": text, "chosen": text, "rejected": text, **EXTRAS, "pair_id": text}
    for split in ("train", "test"):
        assert dict(data[split].features) == expected and list(data[split].features) == list(expected)
    assert manifest["prompt_format"] == "plain" and manifest["columns"] == list(expected)
    assert manifest["rows"] == {"train": data["train"].num_rows, "test": data["test"].num_rows}
    assert manifest["quality"]["checked"] and manifest["quality"]["passed"] is True
    assert manifest["quality"]["report_id"].startswith("qr-") and manifest["quality"]["forced"] is False
    row = data["train"][0]
    assert row["chosen"].startswith("Sure!") and row["rejected"].startswith("Sorry")
    assert 0.5 < row["agreement"] <= 1 and row["weight"] == row["agreement"] and row["n_annotators"] >= 2
    # The summary names the rows, the gate's verdict and the manifest.
    assert f"train {manifest['rows']['train']}, test {manifest['rows']['test']} rows" in result.output
    assert "quality gate: passed" in result.output and str(tmp_path / "dpo" / "manifest.json") in result.output


def test_kto_columns_and_conversational_format(chat_db, tmp_path):
    result, manifest = export(chat_db, "kto", tmp_path / "kto")
    assert result.exit_code == 0, result.output
    data = datasets.load_from_disk(str(tmp_path / "kto"))
    expected = {"prompt": MESSAGES, "completion": MESSAGES, "label": datasets.Value("bool"), **EXTRAS}
    assert dict(data["train"].features) == expected and list(data["train"].features) == list(expected)
    assert manifest["prompt_format"] == "conversational"
    rows = data["train"].to_list()
    assert all([m["role"] for m in r["completion"]] == ["assistant"] and r["prompt"][-1]["role"] == "user" for r in rows)
    # Plain prompts were converted to one user message; chat prompts kept their system message.
    assert {len(r["prompt"]) for r in rows} == {1, 2}
    assert all(r["label"] == r["completion"][0]["content"].startswith("Sure!") for r in rows if r["agreement"] == 1.0)
    weights = manifest["kto_weights"]
    train = manifest["class_balance"]["train"]
    assert (weights["desirable"], weights["undesirable"]) == (train["desirable"], train["undesirable"])
    assert weights["desirable"] + weights["undesirable"] == manifest["rows"]["train"]
    assert 1.0 <= weights["weighted_ratio"] <= 4 / 3 and 1.0 in (weights["desirable_weight"], weights["undesirable_weight"])


def test_exports_load_in_the_trainer_and_agree_with_trl(chat_db, plain_db, tmp_path):
    from prefstream.train.export import load_export

    for db, kind in ((chat_db, "dpo"), (plain_db, "kto"), (plain_db, "ipo")):
        result, manifest = export(db, kind, tmp_path / kind, "--reuse-report")
        assert result.exit_code == 0, result.output
        loaded = load_export(tmp_path / kind)
        assert loaded.kind == kind and loaded.content_hash == manifest["content_hash"]
    trl = pytest.importorskip("trl.data_utils")  # the `oracle` extra
    dpo = datasets.load_from_disk(str(tmp_path / "dpo"))["train"]
    assert all(trl.is_conversational(row) for row in dpo.select(range(20)))
    assert not trl.is_conversational(datasets.load_from_disk(str(tmp_path / "kto"))["train"][0])
    # TRL's own unpairing of our DPO set has our KTO export's columns and types.
    unpaired = trl.unpair_preference_dataset(dpo.select_columns(["prompt", "chosen", "rejected"]))
    assert dict(unpaired.features) == {"prompt": MESSAGES, "completion": MESSAGES, "label": datasets.Value("bool")}


def test_no_prompt_lands_in_two_splits_and_exports_are_deterministic(plain_db, tmp_path):
    manifests = []
    for name in ("a", "b"):
        result, manifest = export(plain_db, "dpo", tmp_path / name, "--seed", "3", "--eval-fraction", "0.3", "--reuse-report")
        assert result.exit_code == 0, result.output
        manifests.append(manifest)
    data = datasets.load_from_disk(str(tmp_path / "a"))
    assert not set(data["train"]["prompt"]) & set(data["test"]["prompt"])
    assert 0.2 < data["test"].num_rows / (data["train"].num_rows + data["test"].num_rows) < 0.4
    a, b = manifests
    assert a["content_hash"] == b["content_hash"] and a["export_id"] != b["export_id"]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file() and p.name != "manifest.json")
    assert len(files) >= 7
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    _, other_seed = export(plain_db, "dpo", tmp_path / "c", "--seed", "4", "--eval-fraction", "0.3", "--reuse-report")
    assert other_seed["content_hash"] != a["content_hash"]
    _, other_kind = export(plain_db, "ipo", tmp_path / "d", "--seed", "3", "--eval-fraction", "0.3", "--reuse-report")
    assert other_kind["content_hash"] != a["content_hash"] and other_kind["splits"] == a["splits"]


def test_a_plain_prompt_and_the_same_prompt_as_chat_share_a_split(tmp_path):
    # "Q7?" as a string and as [user: "Q7?"] are the same prompt once the export is conversational.
    messages = []
    for q in range(120):
        for fmt, prompt in (("plain", f"Q{q}?"), ("chat", [{"role": "user", "content": f"Q{q}?"}])):
            for a in range(3):
                messages.append({
                    "schema_version": 1, "kind": "pairwise", "event_id": f"{q}-{fmt}-{a}", "ts": "2026-11-01T00:00:00Z",
                    "prompt": prompt, "annotator_id": f"u{a}", "response_a": f"good {q} {fmt}", "response_b": f"bad {q} {fmt}", "choice": "a",
                })
    db = land(tmp_path / "db", messages)
    result, manifest = export(db, "dpo", tmp_path / "out", "--eval-fraction", "0.3", "--force")
    assert result.exit_code == 0, result.output
    assert manifest["prompt_format"] == "conversational" and manifest["splits"]["train"]["prompts"] + manifest["splits"]["test"]["prompts"] == 120
    data = datasets.load_from_disk(str(tmp_path / "out"))
    train = {json.dumps(p) for p in data["train"]["prompt"]}
    test = {json.dumps(p) for p in data["test"]["prompt"]}
    assert train and test and not train & test


def test_hand_computed_example_end_to_end(tmp_path):
    ev = lambda i, annotator, a, b, choice, prompt="How?": {  # noqa: E731
        "schema_version": 1, "kind": "pairwise", "event_id": f"e{i}", "ts": "2026-11-01T10:00:00Z", "prompt": prompt,
        "annotator_id": annotator, "response_a": a, "response_b": b, "choice": choice,
    }
    messages = [ev(1, "u1", "X", "Y", "a"), ev(2, "u2", "Y", "X", "b"), ev(3, "u3", "X", "Y", "b")]
    messages += [ev(10 + i, f"u{i}", "A", "B", "a", prompt=f"Other {i}?") for i in range(12)]  # filler for both splits
    db = land(tmp_path / "db", messages)
    result, manifest = export(db, "dpo", tmp_path / "out", "--force", "--eval-fraction", "0.5")
    assert result.exit_code == 0, result.output
    row = next(r for r in all_rows(tmp_path / "out") if r["prompt"] == "How?")
    assert (row["chosen"], row["rejected"], row["n_annotators"], row["source_event_ids"]) == ("X", "Y", 3, ["e1", "e2", "e3"])
    assert row["agreement"] == pytest.approx(2 / 3) and row["weight"] == pytest.approx(2 / 3)


def test_pairs_from_thumbs_on_the_same_prompt(tmp_path):
    # 10 prompts, each with an up-rated and a down-rated response (3 annotators each): TRL cannot pair these.
    messages = [
        {"schema_version": 1, "kind": "thumbs", "event_id": f"t{i}", "ts": "2026-11-01T10:00:00Z", "prompt": f"Q{i // 6}?",
         "annotator_id": f"u{i % 3}", "response": ("good " if i % 6 < 3 else "bad ") + str(i // 6), "rating": "up" if i % 6 < 3 else "down"}
        for i in range(60)
    ]
    db = land(tmp_path / "db", messages)
    result, manifest = export(db, "dpo", tmp_path / "pairs", "--include-thumbs", "--force", "--eval-fraction", "0.3")
    assert result.exit_code == 0, result.output
    rows = all_rows(tmp_path / "pairs")
    assert len(rows) == 10 and manifest["dropped"]["thumbs_unpaired"] == 0 and manifest["input"]["thumbs"]["items"] == 20
    assert all(r["chosen"] == "good " + r["prompt"][1:-1] and r["rejected"] == "bad " + r["prompt"][1:-1] for r in rows)
    assert all(r["n_annotators"] == 6 and len(r["source_event_ids"]) == 6 for r in rows)


def test_length_balancing_moves_longer_wins_to_half(biased_db, tmp_path):
    result, raw = export(biased_db, "dpo", tmp_path / "raw", "--force")
    assert result.exit_code == 0, result.output
    result, balanced = export(biased_db, "dpo", tmp_path / "balanced", "--force", "--balance-length")
    assert result.exit_code == 0, result.output
    assert raw["length"]["exported"]["longer_wins"] > 0.6  # the planted population prefers longer answers
    assert balanced["length"]["before_balancing"] == raw["length"]["exported"]
    assert balanced["length"]["exported"]["longer_wins"] == 0.5 and balanced["dropped"]["length_balance"] > 0
    rows = all_rows(tmp_path / "balanced")
    longer = sum(len(r["chosen"]) > len(r["rejected"]) for r in rows)
    shorter = sum(len(r["chosen"]) < len(r["rejected"]) for r in rows)
    assert longer == shorter and len(rows) == sum(balanced["rows"].values())
    assert "longer response won: " in result.output and "50.0% exported" in result.output


def test_gate_refuses_a_biased_export_unless_forced(biased_db, tmp_path):
    refused, _ = export(biased_db, "ipo", tmp_path / "refused")
    assert refused.exit_code == 1
    last = refused.output.strip().splitlines()[-1]
    assert last.startswith("prefstream: error: quality gate failed") and "length bias" in last and "--force" in last
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary folder left
    forced, manifest = export(biased_db, "ipo", tmp_path / "forced", "--force", "--force-reason", "ablation run")
    assert forced.exit_code == 0, forced.output
    quality = manifest["quality"]
    assert manifest["kind"] == "ipo" and quality["passed"] is False and quality["forced"] is True
    assert quality["force_reason"] == "ablation run" and any("length bias" in f for f in quality["failures"])
    assert "FAILED, overridden with --force: ablation run" in forced.output
    con = open_store(biased_db)
    recorded = con.execute("SELECT kind, report_id, gate_passed, forced, manifest->>'$.content_hash' FROM exports WHERE export_id = ?", [manifest["export_id"]]).fetchall()
    con.close()
    assert recorded == [("ipo", quality["report_id"], False, True, manifest["content_hash"])]


def test_stored_reports_are_cited_only_while_fresh(tmp_path):
    db = land(tmp_path / "db", simulate(SimConfig(n=1200, seed=11, chat_share=0.0)))
    result, first = export(db, "dpo", tmp_path / "first")
    assert result.exit_code == 0, result.output
    report_id = first["quality"]["report_id"]
    result, cited = export(db, "dpo", tmp_path / "cited", "--report-id", report_id)
    assert result.exit_code == 0 and cited["quality"]["report_id"] == report_id and cited["quality"]["reused"] is True
    result, reused = export(db, "kto", tmp_path / "reused", "--reuse-report")
    assert result.exit_code == 0 and reused["quality"]["report_id"] == report_id
    # Another window is not what the report audited.
    result, _ = export(db, "dpo", tmp_path / "window", "--report-id", report_id, "--since", "2026-11-02T00:00:00Z")
    assert result.exit_code == 2 and "is stale: it audited" in result.output
    # New feedback lands: the report no longer describes the data.
    land(tmp_path / "db", simulate(SimConfig(n=50, seed=12, chat_share=0.0)))
    result, _ = export(db, "dpo", tmp_path / "stale", "--report-id", report_id)
    assert result.exit_code == 2 and "events landed after it was made" in result.output
    result, fresh = export(db, "dpo", tmp_path / "fresh", "--reuse-report")
    assert result.exit_code == 0 and fresh["quality"]["report_id"] != report_id and fresh["quality"]["reused"] is False
    assert not (tmp_path / "window").exists() and not (tmp_path / "stale").exists()


def test_imbalanced_kto_export_recommends_weights_in_trls_band(biased_db, tmp_path):
    result, manifest = export(biased_db, "kto", tmp_path / "kto", "--force", "--reuse-report")
    assert result.exit_code == 0, result.output
    weights = manifest["kto_weights"]
    assert weights["desirable"] > 2 * weights["undesirable"]
    assert weights["undesirable_weight"] > 1.0 and weights["desirable_weight"] == 1.0
    assert 1.0 <= weights["weighted_ratio"] <= 4 / 3
    assert f"undesirable_weight {weights['undesirable_weight']}" in result.output


def test_kto_with_pairwise_and_kept_ties(plain_db, tmp_path):
    result, manifest = export(plain_db, "kto", tmp_path / "kto", "--include-pairwise", "--ties", "keep", "--reuse-report")
    assert result.exit_code == 0, result.output
    rows = all_rows(tmp_path / "kto")
    assert manifest["input"]["pairwise"]["pairs"] > 0 and "thumbs_tie" not in manifest["dropped"]
    decided_pairs = manifest["input"]["pairwise"]["pairs"] - sum(v for k, v in manifest["dropped"].items() if k.startswith("pairwise_"))
    thumbs_rows = manifest["input"]["thumbs"]["items"] - sum(v for k, v in manifest["dropped"].items() if k.startswith("thumbs_")) + manifest["ties_kept"]
    assert len(rows) == 2 * decided_pairs + thumbs_rows


def test_reliability_weighting_uses_the_audit(plain_db, tmp_path):
    result, manifest = export(plain_db, "dpo", tmp_path / "w", "--weighting", "reliability", "--reuse-report")
    assert result.exit_code == 0, result.output
    reliability = manifest["annotator_weights"]["reliability"]
    assert len(reliability) == 8 and all(0 < r <= 1 for r in reliability.values())
    rows = all_rows(tmp_path / "w")
    assert any(abs(r["weight"] - r["agreement"]) > 1e-9 for r in rows) and all(0 < r["weight"] <= 1 for r in rows)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_other_formats_hold_the_same_rows(plain_db, tmp_path, fmt):
    _, hf = export(plain_db, "kto", tmp_path / "hf", "--reuse-report")
    result, manifest = export(plain_db, "kto", tmp_path / fmt, "--format", fmt, "--reuse-report")
    assert result.exit_code == 0, result.output
    assert manifest["content_hash"] == hf["content_hash"] and manifest["files"] == {"train": f"train.{fmt}", "test": f"test.{fmt}"}
    builder = "parquet" if fmt == "parquet" else "json"
    loaded = datasets.load_dataset(builder, data_files={s: str(tmp_path / fmt / f"{s}.{fmt}") for s in ("train", "test")})
    original = datasets.load_from_disk(str(tmp_path / "hf"))
    for split in ("train", "test"):
        assert loaded[split].to_list() == original[split].to_list()


def test_lineage_names_the_backfilled_file(plain_db, tmp_path):
    _, manifest = export(plain_db, "dpo", tmp_path / "dpo", "--reuse-report")
    source = manifest["source"]
    assert source["kafka"] == [] and len(source["files"]) == 1
    entry = source["files"][0]
    assert entry["path"].endswith("events.jsonl") and 1 <= entry["first_line"] < entry["last_line"] <= 2500
    used = {e for r in all_rows(tmp_path / "dpo") for e in r["source_event_ids"]}
    assert entry["events"] == source["events"] == len(used)
    assert manifest["prefstream_version"] and manifest["store"]["schema_version"] >= 4
    assert manifest["window"] == {"since": None, "until": None}


def test_lineage_names_kafka_offsets(broker, make_topic, group_id, tmp_path):
    from prefstream.ingest.produce import produce
    from prefstream.tests.kafka_helpers import ingest

    topic = make_topic(partitions=2)
    produce(broker.bootstrap, topic, simulate(SimConfig(n=600, seed=3, chat_share=0.0)))
    _, con = ingest(broker, [topic], group_id, tmp_path / "k.duckdb")
    con.close()
    result, manifest = export(tmp_path / "k.duckdb", "kto", tmp_path / "kto", "--force")
    assert result.exit_code == 0, result.output
    kafka = manifest["source"]["kafka"]
    assert {k["partition"] for k in kafka} == {0, 1} and all(k["topic"] == topic for k in kafka)
    assert all(0 <= k["first_offset"] <= k["last_offset"] for k in kafka) and manifest["source"]["files"] == []
