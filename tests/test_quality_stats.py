"""Reliability and bias functions on literal tables, with statsmodels as the regression oracle."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm

from prefstream.errors import PrefstreamError
from prefstream.quality import Settings
from prefstream.quality.bias import drift, label_imbalance, length_bias, logistic_regression, position_bias
from prefstream.quality.reliability import consensus_agreement, dawid_skene, label_skew, loo_consensus, loo_posterior, position_rates


def frame(rows, columns=("item_id", "annotator_id", "label")) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=list(columns), orient="row")


def test_loo_consensus_is_the_majority_of_the_others():
    labels = frame(
        [
            ("i1", "a", "up"), ("i1", "b", "up"), ("i1", "c", "down"),  # c disagrees with a unanimous a, b
            ("i2", "a", "up"), ("i2", "b", "down"),  # one other each: the other's label
            ("i3", "a", "up"),  # nobody else
            ("i4", "a", "up"), ("i4", "b", "down"), ("i4", "c", "up"), ("i4", "d", "down"),  # others tie for a
        ]
    )
    got = loo_consensus(labels).select("item_id", "annotator_id", "consensus").rows()
    assert got == [
        ("i1", "a", None), ("i1", "b", None), ("i1", "c", "up"),
        ("i2", "a", "down"), ("i2", "b", "up"),
        ("i3", "a", None),
        ("i4", "a", "down"), ("i4", "b", "up"), ("i4", "c", "down"), ("i4", "d", "up"),
    ]
    # i1: for a, the others are (up, down): a tie, so no consensus; same for b.


def test_consensus_agreement_and_its_chance_correction():
    rows = []
    for i in range(40):
        truth = "up" if i % 2 else "down"
        flipped = "down" if truth == "up" else "up"
        rows += [(f"i{i}", "h1", truth), (f"i{i}", "h2", truth), (f"i{i}", "h3", truth), (f"i{i}", "bad", flipped)]
    table = {r["annotator_id"]: r for r in consensus_agreement(frame(rows)).to_dicts()}
    assert table["h1"]["agreement"] == 1.0 and table["h1"]["kappa"] == pytest.approx(1.0)
    assert table["bad"]["agreement"] == 0.0 and table["bad"]["kappa"] == pytest.approx(-1.0)
    assert table["bad"]["compared"] == 40
    assert table["h1"]["informedness"] == pytest.approx(1.0) and table["bad"]["informedness"] == pytest.approx(-1.0)


def test_dawid_skene_recovers_honest_random_and_flipped_annotators():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(600):
        truth = rng.integers(0, 2)
        for name, accuracy in (("h1", 0.9), ("h2", 0.85), ("h3", 0.9), ("coin", 0.5), ("flip", 0.1)):
            label = truth if rng.random() < accuracy else 1 - truth
            rows.append((f"i{i}", name, ["down", "up"][label]))
    fit = dawid_skene(frame(rows))
    informedness = dict(zip(fit.annotators, fit.informedness()))
    assert informedness["h1"] == pytest.approx(0.8, abs=0.08)
    assert abs(informedness["coin"]) < 0.12
    assert informedness["flip"] == pytest.approx(-0.8, abs=0.08)
    assert fit.prior == pytest.approx([0.5, 0.5], abs=0.06)
    # Leave-one-out posterior: the others' labels decide; a flipped label counts reversed.
    probe = frame([("p", "h1", "up"), ("p", "flip", "down"), ("p", "coin", "down")])
    post = loo_posterior(probe, fit)
    up = fit.classes.index("up")
    assert post[2, up] > 0.95  # for coin's row: h1 says up, flip says down -> both point to up


def test_dawid_skene_needs_two_classes():
    assert dawid_skene(frame([("i", "a", "up"), ("i", "b", "up")])) is None


def test_position_rates_flag_only_a_significant_large_deviation():
    rows = [("fair", i % 2 == 0) for i in range(200)] + [("first", i % 10 != 0) for i in range(200)] + [("few", True)] * 10
    pairwise = pl.DataFrame(rows, schema=["annotator_id", "first_shown_chosen"], orient="row")
    table = {r["annotator_id"]: r for r in position_rates(pairwise, min_count=30, margin=0.15, significance=0.001).to_dicts()}
    assert table["first"]["position_bias"] and table["first"]["first_shown_rate"] == 0.9
    assert not table["fair"]["position_bias"]
    assert not table["few"]["position_bias"] and table["few"]["first_shown_rate"] == 1.0  # below min_count
    assert table["first"]["ci_low"] < 0.9 < table["first"]["ci_high"]


def test_label_skew_compares_with_the_typical_annotator():
    rows = [("a", "up")] * 80 + [("a", "down")] * 20 + [("b", "up")] * 78 + [("b", "down")] * 22 + [("skewed", "down")] * 90 + [("skewed", "up")] * 10
    thumbs = pl.DataFrame(rows, schema=["annotator_id", "label"], orient="row")
    table = {r["annotator_id"]: r for r in label_skew(thumbs, min_count=30, margin=0.2, significance=0.001).to_dicts()}
    assert table["skewed"]["label_skew"] and table["skewed"]["typical_rate"] == pytest.approx(0.78)
    assert not table["a"]["label_skew"] and not table["b"]["label_skew"]


def test_logistic_regression_matches_statsmodels():
    rng = np.random.default_rng(5)
    x = np.column_stack([np.ones(2000), rng.normal(size=2000), rng.choice([-1.0, 1.0], 2000)])
    y = (rng.random(2000) < 1 / (1 + np.exp(-(0.3 + 0.8 * x[:, 1] - 0.5 * x[:, 2])))).astype(float)
    params, se = logistic_regression(x, y)
    oracle = sm.Logit(y, x).fit(disp=0)
    assert params == pytest.approx(oracle.params, abs=1e-6)
    assert se == pytest.approx(oracle.bse, abs=1e-6)
    separated = logistic_regression(x[:, :2], (x[:, 1] > 0).astype(float))
    assert separated == (None, None)


def pairs(rows) -> pl.DataFrame:
    """Pairwise rows: (item, annotator, choice, shown_first, length_a, length_b); a is r1 throughout."""
    out = pl.DataFrame(rows, schema=["item_id", "annotator_id", "choice", "shown_first", "length_a", "length_b"], orient="row")
    return out.with_columns(
        pl.when(pl.col("choice") == "tie").then(pl.lit("tie")).when(pl.col("choice") == "a").then(pl.lit("r1")).otherwise(pl.lit("r2")).alias("label"),
        pl.lit(True).alias("a_is_r1"),
        pl.when(pl.col("choice") == "tie").then(None).otherwise(pl.col("choice") == pl.col("shown_first")).alias("first_shown_chosen"),
    )


def test_length_bias_raw_figures_on_a_literal_table():
    table = pairs(
        [
            ("p1", "x", "a", "a", 30, 10),  # longer won, +20
            ("p2", "x", "b", "b", 30, 10),  # shorter won, -20
            ("p3", "x", "a", "b", 50, 10),  # longer won, +40
            ("p4", "x", "tie", "a", 50, 10),  # ties are not decided
            ("p5", "x", "b", "a", 10, 10),  # equal length: counted in the mean, not in the share
        ]
    )
    result = length_bias(table, max_coef=1.0, significance=0.001, min_count=30)
    assert result["n"] == 4 and result["n_unequal"] == 3
    assert result["longer_won_share"] == pytest.approx(2 / 3)
    assert result["mean_length_diff"] == pytest.approx((20 - 20 + 40 + 0) / 4)
    assert result["coef"] is None and "need 30" in result["reason"] and not result["flagged"]


def test_length_bias_separates_taste_for_length_from_quality():
    """Good answers are much longer here; only the population that *also* prefers length is flagged.

    The control is a stand-in for quality, not quality itself: with length this tied to
    quality some of it leaks into the length term (about 0.5 here, against 2 for a real
    taste for length), which is what ``max_length_coef`` has to sit above for such data.
    """
    rng = np.random.default_rng(11)

    def simulate(length_taste: float) -> pl.DataFrame:
        rows = []
        for p in range(1500):
            good_is_a = rng.random() < 0.5
            good_len, bad_len = 60 + rng.integers(0, 120), 20 + rng.integers(0, 120)
            la, lb = (good_len, bad_len) if good_is_a else (bad_len, good_len)
            longer = "a" if la > lb else "b"
            for annotator in ("x", "y", "z"):
                shown = "a" if rng.random() < 0.5 else "b"
                if rng.random() < length_taste:
                    choice = longer
                else:
                    correct = rng.random() < 0.9
                    choice = ("a" if good_is_a else "b") if correct else ("b" if good_is_a else "a")
                rows.append((f"p{p}", annotator, choice, shown, int(la), int(lb)))
        return pairs(rows)

    honest = length_bias(simulate(0.0), max_coef=1.0, significance=0.001, min_count=30)
    biased = length_bias(simulate(0.6), max_coef=1.0, significance=0.001, min_count=30)
    assert honest["longer_won_share"] > 0.6  # the raw share alone would cry wolf
    assert honest["control"].startswith("Dawid-Skene") and not honest["flagged"]
    assert biased["flagged"] and biased["coef"] > 1.0 > honest["coef"]


def test_position_bias_over_all_annotators():
    rows = [("p", "x", "a" if i % 5 else "b", "a", 10, 20) for i in range(500)]  # first shown (a) wins 80%
    result = position_bias(pairs(rows), max_bias=0.05, significance=0.001, min_count=30)
    assert result["first_shown_rate"] == pytest.approx(0.8) and result["flagged"]
    empty = position_bias(pairs([]).with_columns(pl.col("first_shown_chosen").cast(pl.Boolean)), max_bias=0.05, significance=0.001, min_count=30)
    assert empty["n"] == 0 and "reason" in empty and not empty["flagged"]


@pytest.mark.parametrize(
    "up, down, flagged, desirable",
    [(900, 100, True, (100 / 900, 4 / 3 * 100 / 900)), (500, 500, False, (1.0, 4 / 3)), (100, 300, True, (3.0, 4.0))],
)
def test_label_imbalance_and_kto_weights(up, down, flagged, desirable):
    thumbs = pl.DataFrame({"label": ["up"] * up + ["down"] * down})
    result = label_imbalance(thumbs, max_ratio=2.0)
    assert result["ratio"] == pytest.approx(up / down) and result["flagged"] is flagged
    assert result["kto_weights"]["desirable_weight"] == pytest.approx(list(desirable))
    low, high = result["kto_weights"]["desirable_weight"]
    assert 1.0 <= low * up / down <= 4 / 3 and 1.0 <= high * up / down <= 4 / 3 + 1e-12  # TRL's band


def test_label_imbalance_with_one_label_only_says_why():
    result = label_imbalance(pl.DataFrame({"label": ["up"] * 10}), max_ratio=2.0)
    assert result["ratio"] is None and "only up" in result["reason"] and result["flagged"]


def test_drift_by_day_is_flagged_only_when_large_and_significant():
    days = ["2026-11-01"] * 300 + ["2026-11-02"] * 300
    steady = ["up" if i % 2 else "down" for i in range(600)]
    shifted = ["up" if i % 2 else "down" for i in range(300)] + ["up" if i % 10 else "down" for i in range(300)]
    empty_pairs = pairs([]).with_columns(pl.lit(None, pl.Date).alias("day"), pl.col("first_shown_chosen").cast(pl.Boolean))
    for labels, expected in ((steady, False), (shifted, True)):
        thumbs = pl.DataFrame({"label": labels, "day": days, "model_id": ["m"] * 600})
        result = drift(thumbs, empty_pairs, margin=0.15, significance=0.001, min_count=30)
        assert result["flagged"] is expected
    assert "2026-11-02" in result["reasons"][0]


def test_settings_reject_unknown_keys_and_wrong_types():
    assert Settings.from_config({"gate": {"min_alpha": 0.5}}).gate.min_alpha == 0.5
    assert Settings.from_config(None) == Settings()
    with pytest.raises(PrefstreamError, match="unknown key.*min_alfa"):
        Settings.from_config({"gate": {"min_alfa": 0.5}})
    with pytest.raises(PrefstreamError, match="wrong type"):
        Settings.from_config({"gate": {"min_alpha": "high"}})
    with pytest.raises(PrefstreamError, match="fail_on: unknown check"):
        Settings.from_config({"gate": {"fail_on": ["length"]}})
