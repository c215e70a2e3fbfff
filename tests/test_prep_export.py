"""`prefstream export` end to end, on real stores landed through ingest from simulated events:
TRL's columns and types, stable splits by prompt, snapshots, windows, chat, formats, lineage, the gate."""

from __future__ import annotations

import json
import time

import datasets
import pytest

from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.store import open_store, snapshot_of
from prefstream.tests.store_helpers import export, land, query, run

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
def plain_store(tmp_path_factory):
    return land(tmp_path_factory.mktemp("plain"), simulate(SimConfig(n=2500, seed=5, chat_share=0.0)))


@pytest.fixture(scope="module")
def chat_store(tmp_path_factory):
    return land(tmp_path_factory.mktemp("chat"), simulate(SimConfig(n=1500, seed=6, chat_share=0.5)))


@pytest.fixture(scope="module")
def biased_store(tmp_path_factory):
    plant = frozenset({"length", "position", "imbalance"})
    return land(tmp_path_factory.mktemp("biased"), simulate(SimConfig(n=2500, seed=7, plant=plant)))


def test_dpo_columns_and_types_are_trls_plain(plain_store, tmp_path):
    result, manifest = export(plain_store, "dpo", tmp_path / "dpo")
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


def test_kto_columns_and_conversational_format(chat_store, tmp_path):
    result, manifest = export(chat_store, "kto", tmp_path / "kto")
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


def test_exports_load_in_the_trainer_and_agree_with_trl(chat_store, plain_store, tmp_path):
    from prefstream.train.export import load_export

    for db, kind in ((chat_store, "dpo"), (plain_store, "kto"), (plain_store, "ipo")):
        result, manifest = export(db, kind, tmp_path / kind)
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


def test_no_prompt_lands_in_two_splits_and_exports_are_deterministic(plain_store, tmp_path):
    manifests = []
    for name in ("a", "b"):
        result, manifest = export(plain_store, "dpo", tmp_path / name, "--seed", "3", "--eval-fraction", "0.3")
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
    _, other_seed = export(plain_store, "dpo", tmp_path / "c", "--seed", "4", "--eval-fraction", "0.3")
    assert other_seed["content_hash"] != a["content_hash"]
    _, other_kind = export(plain_store, "ipo", tmp_path / "d", "--seed", "3", "--eval-fraction", "0.3")
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


def test_length_balancing_moves_longer_wins_to_half(biased_store, tmp_path):
    result, raw = export(biased_store, "dpo", tmp_path / "raw", "--force")
    assert result.exit_code == 0, result.output
    result, balanced = export(biased_store, "dpo", tmp_path / "balanced", "--force", "--balance-length")
    assert result.exit_code == 0, result.output
    assert raw["length"]["exported"]["longer_wins"] > 0.6  # the planted population prefers longer answers
    assert balanced["length"]["before_balancing"] == raw["length"]["exported"]
    assert balanced["length"]["exported"]["longer_wins"] == 0.5 and balanced["dropped"]["length_balance"] > 0
    rows = all_rows(tmp_path / "balanced")
    longer = sum(len(r["chosen"]) > len(r["rejected"]) for r in rows)
    shorter = sum(len(r["chosen"]) < len(r["rejected"]) for r in rows)
    assert longer == shorter and len(rows) == sum(balanced["rows"].values())
    assert "longer response won: " in result.output and "50.0% exported" in result.output


def recorded_export(store, export_id) -> list[tuple]:
    return query(store, "SELECT kind, snapshot, report_id, gate_passed, forced, manifest->>'$.content_hash' FROM exports WHERE export_id = ?", [export_id])


def test_gate_refuses_a_biased_export_unless_forced(biased_store, tmp_path):
    refused, _ = export(biased_store, "ipo", tmp_path / "refused")
    assert refused.exit_code == 1
    lines = refused.output.strip().splitlines()
    # One check per line, each with its remedy; only checks on what an IPO export reads.
    assert lines[0].startswith("prefstream: error: quality gate failed for this ipo export (report qr-")
    checks = [line.strip().split(":")[0] for line in lines[1:-1]]
    assert "length_skew" in checks and "position_bias" in checks and "label_imbalance" not in refused.output
    assert all(" -- remedy: " in line for line in lines[1:-1]) and "--balance-length" in refused.output
    assert "--force --force-reason TEXT" in lines[-1]
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary folder left
    forced, manifest = export(biased_store, "ipo", tmp_path / "forced", "--force", "--force-reason", "ablation run")
    assert forced.exit_code == 0, forced.output
    quality = manifest["quality"]
    assert manifest["kind"] == "ipo" and quality["passed"] is False and quality["forced"] is True and quality["reused"] is True
    assert quality["force_reason"] == "ablation run" and any(f.startswith("length_skew:") for f in quality["failures"])
    assert "FAILED, overridden with --force: ablation run" in forced.output
    assert recorded_export(biased_store, manifest["export_id"]) == [
        ("ipo", manifest["snapshot"], quality["report_id"], False, True, manifest["content_hash"])
    ]


def test_the_gate_judges_only_what_the_kind_reads(tmp_path):
    # Thumbs skewed toward "up" (normal in production) never stop a DPO export; for KTO the
    # imbalance the recommended weights correct is a note, not a refusal.
    store = land(tmp_path / "store", simulate(SimConfig(n=2500, seed=8, plant=frozenset({"imbalance"}))))
    result, dpo = export(store, "dpo", tmp_path / "dpo")
    assert result.exit_code == 0, result.output
    assert dpo["quality"]["passed"] is True and any(c["check"] == "label_imbalance" for c in dpo["quality"]["not_checked"])
    result, kto = export(store, "kto", tmp_path / "kto", "--force")  # (its thumbs' alpha is low: that still gates)
    assert result.exit_code == 0, result.output
    assert not any(f.startswith("label_imbalance") for f in kto["quality"]["failures"])
    assert any(n.startswith("label_imbalance") for n in kto["quality"]["notes"]) and "note: label_imbalance" in result.output


def test_length_skew_gates_pair_exports_unless_balanced(biased_store, tmp_path):
    result, manifest = export(biased_store, "dpo", tmp_path / "balanced", "--balance-length", "--force")
    assert result.exit_code == 0, result.output
    assert not any(f.startswith(("length_skew", "length_taste")) for f in manifest["quality"]["failures"])
    assert any(n.startswith("length_skew") for n in manifest["quality"]["notes"])


def test_a_stored_report_covering_the_snapshot_and_window_is_reused(tmp_path):
    store = land(tmp_path / "store", simulate(SimConfig(n=1200, seed=11, chat_share=0.0)))
    result, first = export(store, "dpo", tmp_path / "first")
    assert result.exit_code == 0 and first["quality"]["reused"] is False and "audited now" in result.output
    report_id = first["quality"]["report_id"]
    for kind in ("kto", "simpo"):
        result, again = export(store, kind, tmp_path / kind, "--force-reason", "not needed", "--force")
        assert result.exit_code == 0 and again["quality"]["report_id"] == report_id and again["quality"]["reused"] is True
        assert "reused: no re-audit" in result.output
        # --force when the gate passed: the reason is recorded and said.
        assert again["quality"]["forced"] is False and again["quality"]["force_reason"] == "not needed"
        assert "--force was not needed, its reason is recorded: not needed" in result.output
    result, cited = export(store, "dpo", tmp_path / "cited", "--report-id", report_id)
    assert result.exit_code == 0 and cited["quality"]["report_id"] == report_id
    # Another window is not what the report audited.
    result, _ = export(store, "dpo", tmp_path / "window", "--report-id", report_id, "--since", "2026-11-02T00:00:00Z")
    assert result.exit_code == 2 and f"quality report {report_id} does not cover this export" in result.output
    # New feedback lands: the report does not cover the new snapshot; the export audits again.
    land(tmp_path / "store", simulate(SimConfig(n=50, seed=12, chat_share=0.0)))
    result, _ = export(store, "dpo", tmp_path / "stale", "--report-id", report_id)
    assert result.exit_code == 2 and "does not cover this export" in result.output
    result, fresh = export(store, "dpo", tmp_path / "fresh")
    assert result.exit_code == 0 and fresh["quality"]["report_id"] != report_id and fresh["quality"]["reused"] is False
    assert not (tmp_path / "window").exists() and not (tmp_path / "stale").exists()


def test_the_gate_with_a_reusable_report_takes_under_a_second(plain_store, tmp_path):
    from prefstream.prep import ExportSettings, Output
    from prefstream.prep.gate import run_gate

    export(plain_store, "dpo", tmp_path / "first")  # stores a report
    with open_store(plain_store, create=False) as store:
        con = store.read()
        started = time.perf_counter()
        quality, _ = run_gate(store, con, snapshot_of(con), ExportSettings(kind="dpo"), Output(out=tmp_path / "x"))
        seconds = time.perf_counter() - started
        con.close()
    assert quality["reused"] is True and seconds < 1.0, seconds


def test_imbalanced_kto_export_recommends_weights_in_trls_band(biased_store, tmp_path):
    result, manifest = export(biased_store, "kto", tmp_path / "kto", "--force")
    assert result.exit_code == 0, result.output
    weights = manifest["kto_weights"]
    assert weights["desirable"] > 2 * weights["undesirable"]
    assert weights["undesirable_weight"] > 1.0 and weights["desirable_weight"] == 1.0
    assert 1.0 <= weights["weighted_ratio"] <= 4 / 3
    assert f"undesirable_weight {weights['undesirable_weight']}" in result.output


def test_kto_with_pairwise_and_kept_ties(plain_store, tmp_path):
    result, manifest = export(plain_store, "kto", tmp_path / "kto", "--include-pairwise", "--ties", "keep")
    assert result.exit_code == 0, result.output
    rows = all_rows(tmp_path / "kto")
    assert manifest["input"]["pairwise"]["pairs"] > 0 and "thumbs_tie" not in manifest["dropped"]
    decided_pairs = manifest["input"]["pairwise"]["pairs"] - sum(v for k, v in manifest["dropped"].items() if k.startswith("pairwise_"))
    thumbs_rows = manifest["input"]["thumbs"]["items"] - sum(v for k, v in manifest["dropped"].items() if k.startswith("thumbs_")) + manifest["ties_kept"]
    assert len(rows) == 2 * decided_pairs + thumbs_rows


def test_reliability_weighting_uses_the_audit(plain_store, tmp_path):
    result, manifest = export(plain_store, "dpo", tmp_path / "w", "--weighting", "reliability")
    assert result.exit_code == 0, result.output
    reliability = manifest["annotator_weights"]["reliability"]
    assert len(reliability) == 8 and all(0 < r <= 1 for r in reliability.values())
    rows = all_rows(tmp_path / "w")
    assert any(abs(r["weight"] - r["agreement"]) > 1e-9 for r in rows) and all(0 < r["weight"] <= 1 for r in rows)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_other_formats_hold_the_same_rows(plain_store, tmp_path, fmt):
    _, hf = export(plain_store, "kto", tmp_path / "hf")
    result, manifest = export(plain_store, "kto", tmp_path / fmt, "--format", fmt)
    assert result.exit_code == 0, result.output
    assert manifest["content_hash"] == hf["content_hash"] and manifest["files"] == {"train": f"train.{fmt}", "test": f"test.{fmt}"}
    builder = "parquet" if fmt == "parquet" else "json"
    loaded = datasets.load_dataset(builder, data_files={s: str(tmp_path / fmt / f"{s}.{fmt}") for s in ("train", "test")})
    original = datasets.load_from_disk(str(tmp_path / "hf"))
    for split in ("train", "test"):
        assert loaded[split].to_list() == original[split].to_list()


def test_lineage_names_the_backfilled_file(plain_store, tmp_path):
    _, manifest = export(plain_store, "dpo", tmp_path / "dpo")
    source = manifest["source"]
    assert source["kafka"] == [] and len(source["files"]) == 1
    entry = source["files"][0]
    assert entry["path"].endswith("events.jsonl") and 1 <= entry["first_line"] < entry["last_line"] <= 2500
    used = {e for r in all_rows(tmp_path / "dpo") for e in r["source_event_ids"]}
    assert entry["events"] == source["events"] == len(used)
    assert manifest["prefstream_version"] and manifest["store"] == str(plain_store) and manifest["snapshot"] >= 1
    assert (manifest["window"]["since"], manifest["window"]["until"]) == (None, None)
    assert manifest["window"]["implausible_ts_excluded"] == {"pairwise": 0}


def test_lineage_names_kafka_offsets(broker, make_topic, group_id, tmp_path):
    from prefstream.ingest.produce import produce
    from prefstream.tests.kafka_helpers import ingest

    topic = make_topic(partitions=2)
    produce(broker.bootstrap, topic, simulate(SimConfig(n=600, seed=3, chat_share=0.0)))
    _, store = ingest(broker, [topic], group_id, tmp_path / "store")
    store.close()
    result, manifest = export(tmp_path / "store", "kto", tmp_path / "kto", "--force")
    assert result.exit_code == 0, result.output
    kafka = manifest["source"]["kafka"]
    assert {k["partition"] for k in kafka} == {0, 1} and all(k["topic"] == topic for k in kafka)
    assert all(0 <= k["first_offset"] <= k["last_offset"] for k in kafka) and manifest["source"]["files"] == []


def pairwise(event_id, prompt, annotator, choice, ts="2026-11-01T10:00:00Z", a="good", b="bad") -> dict:
    return {"schema_version": 1, "kind": "pairwise", "event_id": event_id, "ts": ts, "prompt": prompt,
            "annotator_id": annotator, "response_a": a, "response_b": b, "choice": choice}


def thumbs(event_id, prompt, annotator, rating, response="an answer", ts="2026-11-01T10:00:00Z") -> dict:
    return {"schema_version": 1, "kind": "thumbs", "event_id": event_id, "ts": ts, "prompt": prompt,
            "annotator_id": annotator, "response": response, "rating": rating}


def data_files(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def test_an_export_of_a_snapshot_is_reproduced_byte_for_byte(tmp_path):
    store = land(tmp_path / "store", simulate(SimConfig(n=800, seed=13, chat_share=0.3)))
    result, first = export(store, "dpo", tmp_path / "first", "--force")
    assert result.exit_code == 0, result.output
    land(tmp_path / "store", simulate(SimConfig(n=400, seed=14, chat_share=0.3)))  # feedback keeps landing
    result, now = export(store, "dpo", tmp_path / "now", "--force")
    assert result.exit_code == 0 and now["content_hash"] != first["content_hash"] and now["snapshot"] > first["snapshot"]
    result, again = export(store, "dpo", tmp_path / "again", "--force", "--snapshot", str(first["snapshot"]))
    assert result.exit_code == 0, result.output
    assert again["snapshot"] == first["snapshot"] and again["content_hash"] == first["content_hash"]
    assert data_files(tmp_path / "again") == data_files(tmp_path / "first") and len(data_files(tmp_path / "first")) >= 7
    assert recorded_export(store, again["export_id"])[0][1] == first["snapshot"]
    result = run("export", "dpo", "--store", store, "--out", tmp_path / "gone", "--snapshot", "99999")
    assert result.exit_code == 2 and "snapshot 99999 does not exist" in result.output


def test_a_vote_cast_after_until_never_changes_an_export_of_the_window(tmp_path):
    until = "2026-11-05T00:00:00Z"
    messages = [pairwise(f"{q}-{a}", f"Q{q}?", f"u{a}", "a") for q in range(30) for a in range(3)]
    store = land(tmp_path / "store", messages)
    result, before = export(store, "dpo", tmp_path / "before", "--until", until, "--force", "--eval-fraction", "0.3")
    assert result.exit_code == 0, result.output
    # Every annotator changes their mind on Q0..Q9 after the window's end.
    land(tmp_path / "store", [pairwise(f"late-{q}-{a}", f"Q{q}?", f"u{a}", "b", ts="2026-11-06T00:00:00Z") for q in range(10) for a in range(3)])
    result, after = export(store, "dpo", tmp_path / "after", "--until", until, "--force", "--eval-fraction", "0.3")
    assert result.exit_code == 0, result.output
    assert after["content_hash"] == before["content_hash"] and data_files(tmp_path / "after") == data_files(tmp_path / "before")
    _, unbounded = export(store, "dpo", tmp_path / "unbounded", "--force", "--eval-fraction", "0.3")
    flipped = [r for r in all_rows(tmp_path / "unbounded") if r["chosen"] == "bad"]
    assert len(flipped) == 10


# The test split of prompts "Q0?" .. "Q19?" at --seed 0 --eval-fraction 0.5: a literal table
# (the first 8 bytes of sha256("0:Q{i}?") as an unsigned integer, mod 1e6, below 500000).
TEST_SPLIT_SEED_0 = {"Q2?", "Q5?", "Q6?", "Q8?", "Q11?", "Q13?", "Q14?", "Q16?", "Q18?", "Q19?"}


def test_splits_match_literal_assignments_and_never_move(tmp_path):
    plain = [pairwise(f"{q}-{a}", f"Q{q}?", f"u{a}", "a") for q in range(20) for a in range(2)]
    store = land(tmp_path / "store", plain)
    result, _ = export(store, "dpo", tmp_path / "plain", "--force", "--eval-fraction", "0.5")
    assert result.exit_code == 0, result.output
    data = datasets.load_from_disk(str(tmp_path / "plain"))
    assert set(data["test"]["prompt"]) == TEST_SPLIT_SEED_0 and set(data["train"]["prompt"]) == {f"Q{q}?" for q in range(20)} - TEST_SPLIT_SEED_0
    # A first chat event and 30 more prompts arrive: the export turns conversational, and not
    # one of the earlier prompts changes split.
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
    more = [pairwise(f"m{q}-{a}", f"More {q}?", f"u{a}", "a") for q in range(30) for a in range(2)]
    land(tmp_path / "store", [pairwise("chat-1", chat, "u1", "a"), *more])
    result, manifest = export(store, "dpo", tmp_path / "mixed", "--force", "--eval-fraction", "0.5")
    assert result.exit_code == 0 and manifest["prompt_format"] == "conversational"
    data = datasets.load_from_disk(str(tmp_path / "mixed"))
    test = {p[-1]["content"] for p in data["test"]["prompt"]}
    train = {p[-1]["content"] for p in data["train"]["prompt"]}
    assert {p for p in test if p.startswith("Q")} == TEST_SPLIT_SEED_0 and not train & TEST_SPLIT_SEED_0


def test_every_chat_variant_round_trips_to_a_trl_conversational_export(tmp_path):
    call = {"id": "call-1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    prompts = {
        "named": [{"role": "system", "content": "Be brief.", "name": "policy"}, {"role": "user", "content": "Hi?", "name": "ann"}],
        "parts": [{"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Oslo?"}]}],
        "tools": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                  {"role": "tool", "content": "7C", "tool_call_id": "call-1"}],
        "plain": "Plain?",
    }
    image = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]
    messages = [thumbs(f"{name}-{a}", prompt, f"u{a}", "up", response=f"answer {name}") for name, prompt in prompts.items() for a in range(2)]
    messages += [thumbs(f"image-{a}", image, f"u{a}", "up") for a in range(2)]
    messages += [thumbs(f"filler{q}-{a}", f"Filler {q}?", f"u{a}", "down") for q in range(12) for a in range(2)]
    store = land(tmp_path / "store", messages, expect_all_valid=True)
    result, manifest = export(store, "kto", tmp_path / "kto", "--force", "--eval-fraction", "0.3")
    assert result.exit_code == 0, result.output
    assert manifest["dropped"]["thumbs_non_text_content"] == 1  # the image prompt: a text export cannot carry it
    rows = {r["completion"][0]["content"][0]["text"]: r for r in all_rows(tmp_path / "kto")}
    none = {"name": None, "tool_calls": None, "tool_call_id": None}
    text = lambda s: [{"type": "text", "text": s}]  # noqa: E731
    assert rows["answer named"]["prompt"] == [
        {**none, "role": "system", "content": text("Be brief."), "name": "policy"}, {**none, "role": "user", "content": text("Hi?"), "name": "ann"},
    ]
    assert rows["answer parts"]["prompt"] == [{**none, "role": "user", "content": text("Weather in ") + text("Oslo?")}]
    assert rows["answer tools"]["prompt"] == [
        {**none, "role": "user", "content": text("Weather?")},
        {**none, "role": "assistant", "content": None, "tool_calls": [call]},
        {**none, "role": "tool", "content": text("7C"), "tool_call_id": "call-1"},
    ]
    assert rows["answer plain"]["prompt"] == [{**none, "role": "user", "content": text("Plain?")}]
    assert rows["answer plain"]["completion"] == [{**none, "role": "assistant", "content": text("answer plain")}]
    assert "answer image" not in rows and all(r["label"] for k, r in rows.items() if k.startswith("answer"))
    trl = pytest.importorskip("trl.data_utils")  # the `oracle` extra
    assert all(trl.is_conversational(r) for r in rows.values())


def test_timestamps_outside_the_plausible_range_are_left_out_and_counted(tmp_path):
    messages = [pairwise(f"{q}-{a}", f"Q{q}?", f"u{a}", "a") for q in range(20) for a in range(2)]
    messages += [pairwise("epoch", "Q0?", "u9", "b", ts="1970-01-01T00:00:00Z"), pairwise("future", "Q1?", "u0", "b", ts="2099-01-01T00:00:00Z")]
    store = land(tmp_path / "store", messages)
    result, manifest = export(store, "dpo", tmp_path / "out", "--force", "--eval-fraction", "0.5")
    assert result.exit_code == 0, result.output
    assert manifest["window"]["implausible_ts_excluded"] == {"pairwise": 2}
    assert "left out 2 pairwise events with an implausible ts (before 2000-01-01T00:00:00+00:00, or over 24 h after" in result.output
    rows = all_rows(tmp_path / "out")
    assert len(rows) == 20 and all(r["chosen"] == "good" and r["n_annotators"] == 2 for r in rows)  # u0's 2099 vote superseded nothing


def test_simpo_and_orpo_export_the_pairs_dpo_does(plain_store, tmp_path):
    _, dpo = export(plain_store, "dpo", tmp_path / "dpo")
    for kind in ("simpo", "orpo"):
        result, manifest = export(plain_store, kind, tmp_path / kind)
        assert result.exit_code == 0, result.output
        assert manifest["kind"] == kind and manifest["splits"] == dpo["splits"] and manifest["content_hash"] != dpo["content_hash"]


def test_a_catalog_store_is_recorded_without_its_password(pg_store, tmp_path):
    from prefstream.ingest.backfill import ingest_files
    from prefstream.store import StoreLocation
    from prefstream.tests.store_helpers import write_jsonl

    secret = "s3cret-pw"
    location = StoreLocation(f"{pg_store.store} password={secret}", pg_store.data_path)
    events = write_jsonl(tmp_path / "events.jsonl", simulate(SimConfig(n=600, seed=15, chat_share=0.0)))
    with open_store(location) as store:
        ingest_files(store, [events])
    result = run("export", "dpo", "--store", location.store, "--data-path", location.data_path, "--out", tmp_path / "out", "--force")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["store"] == location.redacted() and "password=***" in manifest["store"]
    assert secret not in (tmp_path / "out" / "manifest.json").read_text() and secret not in result.output
