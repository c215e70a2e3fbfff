"""The audit on simulated stores: planted biases flagged on the right annotator, clean data passes,
bad input gives a report that says what could not be computed, reports are stored and citable."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from prefstream.ingest.simulator import PLANTED_ANNOTATORS, SimConfig, simulate
from prefstream.quality import audit, latest_report, load_report
from prefstream.store import LATEST_VERSION, open_store
from prefstream.tests.store_helpers import land

ALL_PLANTS = frozenset({"position", "random", "flipped", "length", "imbalance"})
DATASET_FLAGS = ("length_bias", "position_bias", "label_imbalance", "drift", "duplicates", "contradictions")


def simulated_db(folder: Path, n: int = 6000, seed: int = 1, plant=frozenset(), **overrides) -> Path:
    """Simulate ``n`` events, write them as JSONL and land them in a fresh store; the store's path."""
    return land(folder, simulate(SimConfig(n=n, seed=seed, plant=frozenset(plant), **overrides)))


def audited(path: Path, **kwargs) -> dict:
    con = open_store(path)
    try:
        return audit(con, **kwargs)
    finally:
        con.close()


def honest_flags(report: dict) -> dict:
    return {a["annotator_id"]: a["flags"] for a in report["annotators"] if a["annotator_id"] not in PLANTED_ANNOTATORS.values() and a["flags"]}


def flags_of(report: dict, annotator: str) -> list[str]:
    return next(a["flags"] for a in report["annotators"] if a["annotator_id"] == annotator)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clean_simulation_flags_nothing_and_passes(tmp_path, seed):
    report = audited(simulated_db(tmp_path, seed=seed), store=False)
    assert [a["flags"] for a in report["annotators"]] == [[]] * 8
    assert {name: report["bias"][name]["flagged"] for name in DATASET_FLAGS} == dict.fromkeys(DATASET_FLAGS, False)
    assert report["gate"] == {"passed": True, "failures": []}
    assert report["expectations"]["failed"] == 0 and report["expectations"]["evaluated"] > 20
    assert all(0.6 < a["reliability"] <= 1 for a in report["annotators"])
    for kind in ("thumbs", "pairwise"):
        agreement = report["agreement"][kind]
        assert 0.4 < agreement["alpha"] < 0.8
        assert agreement["alpha_ci"][0] < agreement["alpha"] < agreement["alpha_ci"][1]
        assert agreement["fleiss_kappa"] == pytest.approx(agreement["alpha"], abs=0.01)


@pytest.mark.parametrize(
    "plant, annotator, flag, not_flags",
    [
        ("position", "ann-position", "position_bias", {"adversarial"}),
        ("random", "ann-random", "low_agreement", {"adversarial", "position_bias"}),
        ("flipped", "ann-flipped", "adversarial", {"low_agreement", "position_bias"}),
    ],
)
def test_planted_annotator_is_flagged_and_nobody_else(tmp_path, plant, annotator, flag, not_flags):
    report = audited(simulated_db(tmp_path, plant={plant}), store=False)
    flags = flags_of(report, annotator)
    assert flag in flags and not (not_flags & set(flags))
    assert honest_flags(report) == {}
    entry = next(a for a in report["annotators"] if a["annotator_id"] == annotator)
    assert entry["reliability"] < 0.5
    if plant == "position":
        assert entry["pairwise"]["first_shown_rate"] > 0.85 and entry["pairwise"]["position_p"] < 1e-6
    else:
        assert not report["bias"]["length_bias"]["flagged"]


def test_planted_length_bias_is_flagged(tmp_path):
    clean = audited(simulated_db(tmp_path / "clean"), store=False)["bias"]["length_bias"]
    biased = audited(simulated_db(tmp_path / "length", plant={"length"}), store=False)
    length = biased["bias"]["length_bias"]
    assert length["flagged"] and not clean["flagged"]
    assert length["coef"] > 0.5 > clean["coef"] and length["p_value"] < 1e-6
    assert length["control"].startswith("Dawid-Skene")
    assert length["longer_won_share"] > clean["longer_won_share"] + 0.1
    assert length["mean_length_diff"] > clean["mean_length_diff"]
    assert sum(length["histogram"]["counts"]) == length["n"]
    assert honest_flags(biased) == {} and "length bias" in " ".join(biased["gate"]["failures"])


def test_planted_imbalance_is_flagged_with_kto_weights(tmp_path):
    report = audited(simulated_db(tmp_path, plant={"imbalance"}), store=False)
    imbalance = report["bias"]["label_imbalance"]
    assert imbalance["flagged"] and imbalance["ratio"] > 3
    low, high = imbalance["kto_weights"]["desirable_weight"]
    assert 1 <= low * imbalance["up"] / imbalance["down"] <= high * imbalance["up"] / imbalance["down"] <= 4 / 3 + 1e-9
    assert honest_flags(report) == {}
    assert any(f.startswith("label imbalance") for f in report["gate"]["failures"])


def test_heavily_biased_dataset_fails_the_gate_with_every_bias_on_the_right_annotator(tmp_path):
    path = simulated_db(tmp_path, plant=ALL_PLANTS)
    report = audited(path)
    assert report["gate"]["passed"] is False
    failures = " | ".join(report["gate"]["failures"])
    for needle in ("length bias", "label imbalance", "alpha", "low_agreement/adversarial"):
        assert needle in failures
    assert "position_bias" in flags_of(report, "ann-position")
    assert "low_agreement" in flags_of(report, "ann-random") and "adversarial" not in flags_of(report, "ann-random")
    assert "adversarial" in flags_of(report, "ann-flipped")
    assert honest_flags(report) == {}
    assert sorted(report["flagged_annotators"]["annotators"]) == sorted(PLANTED_ANNOTATORS.values())


def test_report_is_stored_citable_and_latest(tmp_path):
    path = simulated_db(tmp_path, n=1500)
    con = open_store(path)
    try:
        assert latest_report(con) is None
        first = audit(con)
        second = audit(con, since="2026-11-03T00:00:00Z")
        assert first["report_id"] != second["report_id"] and first["report_id"].startswith("qr-")
        assert latest_report(con)["report_id"] == second["report_id"]
        assert load_report(con, first["report_id"])["gate"] == first["gate"]
        rows = con.execute("SELECT report_id, passed, since FROM quality_reports ORDER BY created_at").fetchall()
        assert [r[0] for r in rows] == [first["report_id"], second["report_id"]]
        assert rows[1][2] == datetime(2026, 11, 3, tzinfo=timezone.utc)
        assert rows[0][1] is first["gate"]["passed"]
    finally:
        con.close()
    json.dumps(first, allow_nan=False)  # strictly JSON: no NaN, no numpy types


def test_window_filters_on_ts(tmp_path):
    path = simulated_db(tmp_path, n=1500)
    whole = audited(path, store=False)
    window = audited(path, since=datetime(2026, 11, 2, tzinfo=timezone.utc), until="2026-11-04T00:00:00Z", store=False)
    assert 0 < window["counts"]["thumbs"]["annotations"] < whole["counts"]["thumbs"]["annotations"]
    assert {r["group"] for r in window["bias"]["drift"]["thumbs_by_day"]} == {"2026-11-02", "2026-11-03"}
    assert window["window"] == {"since": "2026-11-02T00:00:00+00:00", "until": "2026-11-04T00:00:00+00:00"}


# --- bad input: a report that says what could not be computed, never a traceback -----------


def test_empty_database(tmp_path):
    path = tmp_path / "empty.duckdb"
    open_store(path).close()
    report = audited(path)
    assert report["gate"]["passed"] is False
    assert report["gate"]["failures"] == ["no feedback in the audited window: nothing to train on"]
    assert report["agreement"]["thumbs"]["reasons"] == ["no thumbs feedback in the audited window"]
    assert report["annotators"] == [] and report["bias"]["length_bias"]["reason"]
    assert report["expectations"]["skipped"] == {"thumbs": "no thumbs rows in the audited window", "pairwise": "no pairwise rows in the audited window"}


def test_a_kind_with_no_rows_is_skipped_not_failed(tmp_path):
    report = audited(simulated_db(tmp_path, n=2000, pairwise_share=0.0), store=False)
    assert report["counts"]["pairwise"]["annotations"] == 0
    assert report["agreement"]["pairwise"]["alpha"] is None
    assert "no decided pairwise" in report["bias"]["length_bias"]["reason"]
    assert report["bias"]["position_bias"]["flagged"] is False
    assert report["gate"]["passed"] is True, report["gate"]


def test_one_annotator_only(tmp_path):
    report = audited(simulated_db(tmp_path, n=600, annotators=1, raters_per_item=1), store=False)
    agreement = report["agreement"]["thumbs"]
    assert agreement["alpha"] is None
    assert any("only one annotator" in r for r in agreement["reasons"])
    assert any("nothing is pairable" in r for r in agreement["reasons"])
    (only,) = report["annotators"]
    assert only["reliability"] is None and only["flags"] == []
    assert report["bias"]["length_bias"]["control"] == "none"  # nobody else to stand in for quality


def test_all_ties(tmp_path):
    report = audited(simulated_db(tmp_path, n=900, pairwise_share=1.0, tie_rate=1.0, update_rate=0.0), store=False)
    pairwise = report["agreement"]["pairwise"]
    assert pairwise["alpha"] is None and any("same value" in r for r in pairwise["reasons"])
    assert report["bias"]["length_bias"]["reason"].startswith("no decided pairwise")
    assert report["bias"]["position_bias"]["n"] == 0
    assert all(a["flags"] == [] for a in report["annotators"])


def test_labels_outside_the_expected_set_are_counted_and_left_out(tmp_path):
    path = simulated_db(tmp_path, n=900)
    con = open_store(path)
    # A view over a table written by some other tool: a rating the store would have refused.
    con.execute("CREATE OR REPLACE VIEW thumbs_current AS SELECT * REPLACE (CASE WHEN hash(event_id) % 10 = 0 THEN 'meh' ELSE rating END AS rating) FROM thumbs")
    report = audit(con, store=False)
    con.close()
    counts = report["counts"]["thumbs"]
    assert counts["unexpected_labels"] > 0 and "meh" in counts["note"]
    assert report["agreement"]["thumbs"]["n"] == counts["annotations"]


def test_failed_expectations_fail_the_gate(tmp_path):
    path = simulated_db(tmp_path, n=900)
    con = open_store(path)
    con.execute("UPDATE thumbs SET response = '' WHERE event_id IN (SELECT event_id FROM thumbs LIMIT 3)")
    report = audit(con, store=False)
    con.close()
    assert "thumbs: expect_column_values_to_be_between(response_length)" in report["expectations"]["failed_names"]
    assert any(f.startswith("expectations: 1 of") for f in report["gate"]["failures"])


def test_contradictions_at_the_same_instant_are_counted(tmp_path):
    path = simulated_db(tmp_path, n=900)
    con = open_store(path)
    con.execute(
        """INSERT INTO thumbs SELECT * REPLACE (event_id || '-x' AS event_id, CASE rating WHEN 'up' THEN 'down' ELSE 'up' END AS rating,
           source || '-x' AS source) FROM thumbs LIMIT 40"""
    )
    report = audit(con, store=False)
    con.close()
    contradictions = report["bias"]["contradictions"]
    assert contradictions["thumbs"] == 40 and contradictions["flagged"]
    assert any(f.startswith("contradictions") for f in report["gate"]["failures"])


def test_storing_into_a_read_only_store_is_a_one_line_error(tmp_path):
    from prefstream.errors import PrefstreamError

    path = simulated_db(tmp_path, n=300)
    con = open_store(path, read_only=True)
    try:
        with pytest.raises(PrefstreamError, match="cannot store the quality report.*--no-store"):
            audit(con)
        assert audit(con, store=False)["report_id"] is None
    finally:
        con.close()


def test_an_older_store_gains_the_reports_table_on_open(tmp_path):
    path = tmp_path / "old.duckdb"
    open_store(path, migrate_to=2).close()
    con = open_store(path)
    try:
        assert con.execute("SELECT max(version) FROM schema_migrations").fetchall() == [(LATEST_VERSION,)]
        assert latest_report(con) is None
    finally:
        con.close()
