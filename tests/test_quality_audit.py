"""The audit on simulated stores: planted biases flagged on the right annotator, clean data passes,
bad input gives a report that says what could not be computed, reports are stored, citable,
reproducible as of a snapshot and reusable while nothing changed."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from prefstream.errors import PrefstreamError
from prefstream.ingest.simulator import PLANTED_ANNOTATORS, SimConfig, simulate
from prefstream.quality import Settings, audit, gate_for, latest_report, load_report, reusable_report
from prefstream.store import open_store
from prefstream.tests.store_helpers import land

ALL_PLANTS = frozenset({"position", "random", "flipped", "length", "imbalance"})
DATASET_FLAGS = ("length_skew", "length_taste", "position_bias", "label_imbalance", "drift", "duplicates", "contradictions")


def simulated_store(folder: Path, n: int = 6000, seed: int = 1, plant=frozenset(), **overrides) -> Path:
    """Simulate ``n`` events, write them as JSONL and land them in a fresh store; the store's path."""
    return land(folder, simulate(SimConfig(n=n, seed=seed, plant=frozenset(plant), **overrides)))


def audited(path: Path, **kwargs) -> dict:
    with open_store(path) as store:
        return audit(store, **kwargs)


def honest_flags(report: dict) -> dict:
    return {a["annotator_id"]: a["flags"] for a in report["annotators"] if a["annotator_id"] not in PLANTED_ANNOTATORS.values() and a["flags"]}


def flags_of(report: dict, annotator: str) -> list[str]:
    return next(a["flags"] for a in report["annotators"] if a["annotator_id"] == annotator)


def checks(gate) -> list[str]:
    return [f.check for f in gate.failures]


def insert_raw(path: Path, sql: str) -> None:
    """Rows another tool might have written: straight into a raw table, past every check at landing."""
    with open_store(path) as store:
        store.transact(lambda con: con.execute(sql))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clean_simulation_flags_nothing_and_passes(tmp_path, seed):
    report = audited(simulated_store(tmp_path, seed=seed), save=False)
    assert [a["flags"] for a in report["annotators"]] == [[]] * 8
    assert {name: report["bias"][name]["flagged"] for name in DATASET_FLAGS} == dict.fromkeys(DATASET_FLAGS, False)
    assert report["gate"]["passed"] and report["gate"]["failures"] == [] and report["verdicts"] == {"dpo": True, "kto": True}
    assert report["expectations"]["failed"] == 0 and report["expectations"]["evaluated"] > 30
    assert all(0.6 < a["reliability"] <= 1 for a in report["annotators"])
    for kind in ("thumbs", "pairwise"):
        agreement = report["agreement"][kind]
        assert 0.4 < agreement["alpha"] < 0.8
        assert agreement["alpha_ci"][0] < agreement["alpha"] < agreement["alpha_ci"][1]
        assert agreement["fleiss_kappa"] == pytest.approx(agreement["alpha"], abs=0.01)
    json.dumps(report, allow_nan=False)  # strictly JSON: no NaN, no numpy types


@pytest.mark.parametrize(
    "plant, annotator, flag, not_flags",
    [
        ("position", "ann-position", "position_bias", {"adversarial"}),
        ("random", "ann-random", "low_agreement", {"adversarial", "position_bias"}),
        ("flipped", "ann-flipped", "adversarial", {"low_agreement", "position_bias"}),
    ],
)
def test_planted_annotator_is_flagged_and_nobody_else(tmp_path, plant, annotator, flag, not_flags):
    report = audited(simulated_store(tmp_path, plant={plant}), save=False)
    flags = flags_of(report, annotator)
    assert flag in flags and not (not_flags & set(flags))
    assert honest_flags(report) == {}
    entry = next(a for a in report["annotators"] if a["annotator_id"] == annotator)
    assert entry["reliability"] < 0.5
    if plant == "position":
        assert entry["pairwise"]["first_shown_rate"] > 0.85 and entry["pairwise"]["position_p"] < 1e-6
    else:
        assert not report["bias"]["length_skew"]["flagged"] and not report["bias"]["length_taste"]["flagged"]


def test_length_skew_and_length_taste_found_on_a_planted_set_and_quiet_on_a_clean_one(tmp_path):
    clean = audited(simulated_store(tmp_path / "clean"), save=False)["bias"]
    biased = audited(simulated_store(tmp_path / "length", plant={"length"}), save=False)
    skew, taste = biased["bias"]["length_skew"], biased["bias"]["length_taste"]
    assert skew["flagged"] and taste["flagged"] and not clean["length_skew"]["flagged"] and not clean["length_taste"]["flagged"]
    assert skew["longer_won_ci"][0] > 0.6 > clean["length_skew"]["longer_won_ci"][1]
    assert taste["coef"] > 0.5 > clean["length_taste"]["coef"] and taste["p_value"] < 1e-6
    assert taste["control"].startswith("Dawid-Skene")
    assert sum(skew["histogram"]["counts"]) == skew["n"]
    assert honest_flags(biased) == {}
    dpo = gate_for(biased, "dpo")
    assert {"length_skew", "length_taste"} <= set(checks(dpo))
    assert any(f.remedy.startswith("export with --balance-length") for f in dpo.failures)
    balanced = gate_for(biased, "dpo", balance_length=True)
    assert not {"length_skew", "length_taste"} & set(checks(balanced)) and any(n.startswith("length_skew") for n in balanced.notes)
    assert "length_skew" not in checks(gate_for(biased, "kto"))


def test_label_imbalance_is_a_kto_note_and_refused_only_beyond_the_ratio(tmp_path):
    path = simulated_store(tmp_path, plant={"imbalance"})
    report = audited(path, save=False, config={"gate": {"min_alpha": 0.0}})  # skewed labels also lower alpha; not this test's point
    imbalance = report["bias"]["label_imbalance"]
    assert not imbalance["flagged"] and 3 < imbalance["ratio"] < 10
    low, high = imbalance["kto_weights"]["desirable_weight"]
    assert 1 <= low * imbalance["up"] / imbalance["down"] <= high * imbalance["up"] / imbalance["down"] <= 4 / 3 + 1e-9
    kto = gate_for(report, "kto")
    assert kto.passed and any(n.startswith("label_imbalance") and "desirable_weight" in n for n in kto.notes)
    strict = audited(path, save=False, config={"gate": {"max_label_ratio": 2.0, "min_alpha": 0.0}})
    assert checks(gate_for(strict, "kto")) == ["label_imbalance"]
    dpo = gate_for(strict, "dpo")
    assert dpo.passed and not any("label_imbalance" in n for n in dpo.notes)  # a DPO export never looks at it


def test_gate_scoping_thumbs_skew_passes_dpo_and_position_bias_passes_kto(tmp_path):
    """Each check reads its own data: a thumbs problem never refuses a pair export, nor a pairwise one a KTO export."""
    config = {"gate": {"max_label_ratio": 2.0, "max_position_bias": 0.02}}
    skewed = audited(simulated_store(tmp_path / "thumbs", plant={"imbalance"}), save=False, config=config)
    assert not gate_for(skewed, "kto").passed and gate_for(skewed, "dpo").passed
    assert {"check": "label_imbalance", "reason": "reads thumbs feedback; a dpo export does not"} in gate_for(skewed, "dpo").not_checked
    biased = audited(simulated_store(tmp_path / "position", plant={"position"}), save=False, config={"gate": config["gate"] | {"min_alpha": 0.0, "significance": 0.01}})
    assert biased["bias"]["position_bias"]["flagged"]
    assert checks(gate_for(biased, "dpo")) == ["position_bias"] and gate_for(biased, "kto").passed
    assert any(item["check"] == "position_bias" for item in gate_for(biased, "kto").not_checked)
    assert checks(gate_for(biased, "kto", include_pairwise=True)) == ["position_bias"]
    for kind in ("ipo", "simpo", "orpo"):
        assert checks(gate_for(biased, kind)) == ["position_bias"]
    with pytest.raises(PrefstreamError, match="no gate for export kind 'sft'"):
        gate_for(biased, "sft")


def test_heavily_biased_dataset_fails_with_every_bias_on_the_right_annotator(tmp_path):
    report = audited(simulated_store(tmp_path, plant=ALL_PLANTS))
    assert report["gate"]["passed"] is False
    failed = {f["check"] for f in report["gate"]["failures"]}
    assert {"length_skew", "low_alpha", "flagged_annotators"} <= failed
    assert all(f["remedy"] and f["message"] for f in report["gate"]["failures"])
    assert "position_bias" in flags_of(report, "ann-position")
    assert "low_agreement" in flags_of(report, "ann-random") and "adversarial" not in flags_of(report, "ann-random")
    assert "adversarial" in flags_of(report, "ann-flipped")
    assert honest_flags(report) == {}
    assert sorted(report["flagged_annotators"]["annotators"]) == sorted(PLANTED_ANNOTATORS.values())


def test_model_judges_are_reported_apart_with_their_agreement_with_humans(tmp_path):
    events = list(simulate(SimConfig(n=6000, seed=4)))
    for event in events:
        if event["annotator_id"] in ("ann-06", "ann-07"):
            event["annotator_kind"] = "model"
    report = audited(land(tmp_path, events), save=False)
    for kind in ("thumbs", "pairwise"):
        judges = report["judges"][kind]
        assert judges["model_labels"] > 0 and judges["human_labels"] > 2 * judges["model_labels"]
        assert judges["human"]["n_annotators"] == 6 and judges["model"]["n_annotators"] == 2
        versus = judges["human_vs_model"]
        assert versus["shared_items"] > 100 and 0.7 < versus["agreement"] <= 1 and versus["kappa"] > 0.4
    kinds = {a["annotator_id"]: a["judge"] for a in report["annotators"]}
    assert kinds["ann-07"] == "model" and kinds["ann-00"] == "human"
    assert report["annotator_summary"]["by_judge"] == {"human": 6, "model": 2}


def test_report_is_bounded_with_many_annotators(tmp_path):
    report = audited(simulated_store(tmp_path, n=4000, annotators=400), save=False, config={"report_annotators": 10})
    summary = report["annotator_summary"]
    assert summary["total"] == 400 and len(report["annotators"]) == summary["detailed"] <= 10 + summary["flagged"]
    assert summary["tail"]["annotators"] == 400 - summary["detailed"]
    assert summary["tail"]["labels"] + sum(a["volume"]["total"] for a in report["annotators"]) == sum(
        report["counts"][k]["annotations"] for k in ("thumbs", "pairwise")
    )
    volumes = [a["volume"]["total"] for a in report["annotators"] if not a["flags"]]
    assert volumes == sorted(volumes, reverse=True)


def test_report_is_stored_citable_and_records_its_snapshot(tmp_path):
    path = simulated_store(tmp_path, n=1500)
    with open_store(path) as store:
        assert latest_report(store) is None
        first = audit(store)
        second = audit(store, since="2026-11-03T00:00:00Z")
        assert first["report_id"] != second["report_id"] and first["report_id"].startswith("qr-")
        assert latest_report(store)["report_id"] == second["report_id"]
        assert load_report(store, first["report_id"])["gate"] == first["gate"]
        con = store.read()
        rows = con.execute("SELECT report_id, passed, since, snapshot FROM quality_reports ORDER BY created_at").fetchall()
        con.close()
    assert [r[0] for r in rows] == [first["report_id"], second["report_id"]]
    assert rows[1][2] == datetime(2026, 11, 3, tzinfo=timezone.utc) and rows[0][1] is first["gate"]["passed"]
    assert rows[0][3] == first["snapshot"] and first["store"] == str(path)
    with pytest.raises(PrefstreamError, match="no quality report 'qr-nope'"):
        load_report(path and open_store(path), "qr-nope")


FIGURES = ("counts", "agreement", "judges", "annotators", "annotator_summary", "flagged_annotators", "bias", "expectations", "timestamps", "gate")


def test_audit_as_of_a_snapshot_reproduces_the_report_after_more_feedback(tmp_path):
    path = simulated_store(tmp_path, n=1500)
    with open_store(path) as store:
        before = audit(store, save=False)
    simulated_store(tmp_path, n=3000, seed=9)  # more feedback lands in the same store
    with open_store(path) as store:
        again = audit(store, snapshot=before["snapshot"], save=False)
        now = audit(store, save=False)
    assert again["snapshot"] == before["snapshot"] < now["snapshot"]
    assert {k: again[k] for k in FIGURES} == {k: before[k] for k in FIGURES}
    assert now["counts"] != before["counts"]


def test_reusable_report_covers_the_same_snapshot_window_and_settings(tmp_path):
    path = simulated_store(tmp_path, n=1500)
    window = {"since": "2026-11-02T00:00:00Z", "until": "2026-11-05T00:00:00Z"}
    with open_store(path) as store:
        assert reusable_report(store, **window) is None
        made = audit(store, **window)
        # Saving the report made a new snapshot, which changed no feedback: still reusable there.
        assert reusable_report(store, **window)["report_id"] == made["report_id"]
        assert reusable_report(store, **window, snapshot=made["snapshot"])["report_id"] == made["report_id"]
        assert reusable_report(store, since=window["since"]) is None  # another window
        assert reusable_report(store, **window, settings=Settings.from_config({"bootstrap": 50})) is None
    simulated_store(tmp_path, n=1600, seed=5)
    with open_store(path) as store:
        assert reusable_report(store, **window) is None  # feedback landed since
        assert reusable_report(store, **window, snapshot=made["snapshot"])["report_id"] == made["report_id"]


def test_window_filters_on_ts(tmp_path):
    path = simulated_store(tmp_path, n=1500)
    whole = audited(path, save=False)
    window = audited(path, since=datetime(2026, 11, 2, tzinfo=timezone.utc), until="2026-11-04T00:00:00Z", save=False)
    assert 0 < window["counts"]["thumbs"]["annotations"] < whole["counts"]["thumbs"]["annotations"]
    assert {r["group"] for r in window["bias"]["drift"]["thumbs_by_day"]} == {"2026-11-02", "2026-11-03"}
    assert window["window"] == {"since": "2026-11-02T00:00:00+00:00", "until": "2026-11-04T00:00:00+00:00"}


def test_implausible_timestamps_are_counted_shown_and_left_out_not_blocking(tmp_path):
    path = simulated_store(tmp_path, n=1500)
    clean = audited(path, save=False)
    insert_raw(path, """INSERT INTO thumbs_raw SELECT * REPLACE ('old-' || event_id AS event_id, TIMESTAMPTZ '1970-01-01 00:00:00+00' AS ts)
                        FROM thumbs_raw LIMIT 3""")
    insert_raw(path, """INSERT INTO pairwise_raw SELECT * REPLACE ('future-' || event_id AS event_id, ingested_at + INTERVAL 30 DAY AS ts)
                        FROM pairwise_raw LIMIT 2""")
    report = audited(path, save=False)
    t = report["timestamps"]
    assert t["implausible"] == 5 and t["thumbs"]["too_early"] == 3 and t["pairwise"]["too_late"] == 2
    assert {e["event_id"][:4] for e in t["thumbs"]["examples"]} == {"old-"} and "left out" in t["note"]
    assert report["counts"] == clean["counts"] and report["agreement"] == clean["agreement"]
    assert report["gate"]["passed"] and report["expectations"]["failed"] == 0
    narrow = audited(path, since="2026-11-02T00:00:00Z", save=False)
    assert narrow["timestamps"]["thumbs"]["implausible"] == 0  # 1970 is outside this window anyway


# --- bad input: a report that says what could not be computed, never a traceback -----------


def test_empty_store(tmp_path):
    path = tmp_path / "empty"
    open_store(path).close()
    report = audited(path)
    assert report["agreement"]["thumbs"]["reasons"] == ["no thumbs feedback in the audited window"]
    assert report["annotators"] == [] and report["bias"]["length_skew"]["reason"] and report["bias"]["length_taste"]["reason"]
    assert report["expectations"]["skipped"] == {"thumbs": "no thumbs rows in the audited window", "pairwise": "no pairwise rows in the audited window"}
    for kind in ("all", "dpo", "kto"):
        gate = gate_for(report, kind)
        assert checks(gate) == ["no_data"] and gate.failures[0].remedy.startswith("widen --since/--until")
        assert any(item["check"] == "expectations" for item in gate.not_checked)


def test_a_kind_with_no_rows_is_skipped_not_failed(tmp_path):
    report = audited(simulated_store(tmp_path, n=2000, pairwise_share=0.0), save=False)
    assert report["counts"]["pairwise"]["annotations"] == 0 and report["agreement"]["pairwise"]["alpha"] is None
    assert "no decided pairwise" in report["bias"]["length_skew"]["reason"]
    assert report["gate"]["passed"] is True and gate_for(report, "kto").passed
    dpo = gate_for(report, "dpo")
    assert checks(dpo) == ["no_data"] and {"check": "pairwise checks", "reason": "no pairwise feedback in the audited window"} in dpo.not_checked


def test_one_annotator_only(tmp_path):
    report = audited(simulated_store(tmp_path, n=600, annotators=1, raters_per_item=1), save=False)
    agreement = report["agreement"]["thumbs"]
    assert agreement["alpha"] is None
    assert any("only one annotator" in r for r in agreement["reasons"]) and any("nothing is pairable" in r for r in agreement["reasons"])
    (only,) = report["annotators"]
    assert only["reliability"] is None and only["flags"] == []
    assert report["bias"]["length_taste"].get("control") in (None, "none")  # nobody else to stand in for quality
    gate = gate_for(report, "all")
    assert gate.passed and {i["check"] for i in gate.not_checked} >= {"low_alpha (thumbs)", "low_alpha (pairwise)"}


def test_all_ties(tmp_path):
    report = audited(simulated_store(tmp_path, n=900, pairwise_share=1.0, tie_rate=1.0, update_rate=0.0), save=False)
    pairwise = report["agreement"]["pairwise"]
    assert pairwise["alpha"] is None and any("same value" in r for r in pairwise["reasons"])
    assert report["bias"]["length_skew"]["reason"].startswith("no decided pairwise")
    assert report["bias"]["position_bias"]["n"] == 0
    assert all(a["flags"] == [] for a in report["annotators"])


def test_labels_outside_the_expected_set_are_counted_left_out_and_fail_expectations(tmp_path):
    path = simulated_store(tmp_path, n=900)
    insert_raw(path, "INSERT INTO thumbs_raw SELECT * REPLACE ('meh-' || event_id AS event_id, 'x-' || event_id AS item_id, 'meh' AS rating) FROM thumbs_raw LIMIT 7")
    report = audited(path, save=False)
    counts = report["counts"]["thumbs"]
    assert counts["unexpected_labels"] == 7 and "meh" in counts["note"]
    assert report["agreement"]["thumbs"]["n"] == counts["annotations"]
    assert "thumbs: expect_column_values_to_be_in_set(rating)" in report["expectations"]["failed_names"]


def test_failed_expectations_fail_every_export_kind(tmp_path):
    path = simulated_store(tmp_path, n=900)
    insert_raw(path, "INSERT INTO thumbs_raw SELECT * REPLACE ('e-' || event_id AS event_id, '' AS response) FROM thumbs_raw LIMIT 3")
    report = audited(path, save=False)
    result = next(r for r in report["expectations"]["suites"]["thumbs"] if r["name"] == "expect_column_value_lengths_to_be_between(response)")
    assert result["unexpected_count"] == 3 and not result["success"]
    for kind in ("dpo", "kto"):
        assert checks(gate_for(report, kind)) == ["expectations"]  # the store's health gates every export


def test_contradictions_at_the_same_instant_are_counted(tmp_path):
    path = simulated_store(tmp_path, n=900)
    insert_raw(path, """INSERT INTO thumbs_raw SELECT * REPLACE (event_id || '-x' AS event_id, CASE rating WHEN 'up' THEN 'down' ELSE 'up' END AS rating,
                        source || '-x' AS source) FROM thumbs_raw LIMIT 40""")
    report = audited(path, save=False)
    contradictions = report["bias"]["contradictions"]
    assert contradictions["thumbs"] == 40 and contradictions["flagged"]
    assert checks(gate_for(report, "kto")) == ["contradictions"] and gate_for(report, "dpo").passed


def test_physical_copies_and_producer_retries_count_once(tmp_path):
    path = simulated_store(tmp_path, n=900)
    before = audited(path, save=False)
    insert_raw(path, "INSERT INTO thumbs_raw SELECT * FROM thumbs_raw LIMIT 30")  # a redelivered batch
    insert_raw(path, "INSERT INTO pairwise_raw SELECT * REPLACE (source || '-retry' AS source) FROM pairwise_raw LIMIT 20")  # producer retries
    after = audited(path, save=False)
    assert {k: after[k] for k in ("counts", "agreement")} == {k: before[k] for k in ("counts", "agreement")}
    assert after["bias"]["duplicates"]["thumbs"]["events"] == before["bias"]["duplicates"]["thumbs"]["events"]
    assert after["bias"]["duplicates"]["pairwise"]["retries"] == 20 and after["expectations"]["failed"] == 0


def test_saving_through_a_read_only_connection_is_a_one_line_error(tmp_path):
    path = simulated_store(tmp_path, n=300)
    with open_store(path) as store:
        con = store.read()
        try:
            with pytest.raises(PrefstreamError, match="cannot store the quality report.*--no-store"):
                audit(con)
            assert audit(con, save=False)["report_id"] is None
            with pytest.raises(PrefstreamError, match="needs the store"):
                audit(con, snapshot=1)
        finally:
            con.close()


def test_audit_and_reuse_on_a_postgresql_catalog(pg_store):
    from prefstream.quality.synthetic import Synthetic, build

    with open_store(pg_store) as store:
        build(store, Synthetic(9_000, days=3))
        made = audit(store)
        assert made["counts"]["thumbs"]["annotations"] > 0 and made["snapshot"] > 0
        assert reusable_report(store)["report_id"] == made["report_id"]
        build(store, Synthetic(300, seed=1))
        assert reusable_report(store) is None
        assert audit(store, snapshot=made["snapshot"], save=False)["agreement"] == made["agreement"]
