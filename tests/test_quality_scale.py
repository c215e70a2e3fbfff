"""The audit at scale: a 2M-event store written straight into the raw tables with DuckDB SQL gives the
same figures as a 200k-event sample of the same generator, within sampling tolerances."""

from __future__ import annotations

import numpy as np
import pytest

from prefstream.quality import audit
from prefstream.quality.synthetic import Synthetic, build
from prefstream.store import open_store

# Tolerances: several standard errors of the 200k sample (~33k items and ~100k labels per kind).
ALPHA_TOL, RATE_TOL, RELIABILITY_TOL = 0.02, 0.012, 0.03


def audited(folder, events: int) -> dict:
    with open_store(folder) as store:
        build(store, Synthetic(events))
        return audit(store, save=False)


def honest_reliability(report: dict) -> float:
    return float(np.median([a["reliability"] for a in report["annotators"] if not a["flags"]]))


@pytest.mark.slow
def test_two_million_events_match_a_200k_sample(tmp_path):
    small, big = audited(tmp_path / "small", 200_000), audited(tmp_path / "big", 2_000_000)
    for kind in ("thumbs", "pairwise"):
        assert big["counts"][kind]["annotations"] == pytest.approx(10 * small["counts"][kind]["annotations"], rel=0.01)
        a, b = small["agreement"][kind], big["agreement"][kind]
        assert b["alpha"] == pytest.approx(a["alpha"], abs=ALPHA_TOL)
        assert b["alpha_ci"][1] - b["alpha_ci"][0] < a["alpha_ci"][1] - a["alpha_ci"][0]  # ten times the data, a narrower interval
    for section, figure in (("position_bias", "first_shown_rate"), ("length_skew", "longer_won_share"), ("label_imbalance", "up_share")):
        assert big["bias"][section][figure] == pytest.approx(small["bias"][section][figure], abs=RATE_TOL)
    assert honest_reliability(big) == pytest.approx(honest_reliability(small), abs=RELIABILITY_TOL)
    flags = lambda report: {a["annotator_id"]: a["flags"] for a in report["annotators"] if a["flags"]}  # noqa: E731
    assert flags(big) == flags(small) and "position_bias" in flags(big)["ann-position"] and "low_agreement" in flags(big)["ann-random"]
    assert not big["bias"]["length_skew"]["flagged"] and not big["bias"]["length_taste"]["flagged"]
    assert big["expectations"]["failed"] == 0 and big["timestamps"]["implausible"] == 0
    assert big["annotator_summary"]["total"] == small["annotator_summary"]["total"] == 11


@pytest.mark.slow
def test_a_hundred_thousand_end_user_annotators_give_a_bounded_report(tmp_path):
    """One annotator per end user: the report keeps the top by volume in full and summarises the tail."""
    import json

    with open_store(tmp_path / "users") as store:
        build(store, Synthetic(300_000, honest=99_998))
        report = audit(store, save=False)
    summary = report["annotator_summary"]
    assert summary["total"] > 90_000 and len(report["annotators"]) == summary["detailed"] == 100
    assert summary["tail"]["annotators"] == summary["total"] - 100 and summary["tail"]["reliability"]["estimated"] > 0
    assert len(json.dumps(report)) < 500_000
