"""Reliability and bias functions on literal tables and tallies, with statsmodels and scipy as oracles."""

from __future__ import annotations

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal
import pytest
import statsmodels.api as sm

from prefstream.errors import PrefstreamError
from prefstream.quality import Settings
from prefstream.quality.bias import LENGTH_COLUMNS, drift, label_imbalance, length_skew, length_taste, logistic_regression, position_bias
from prefstream.quality.reliability import clopper_pearson, consensus_agreement, dawid_skene, label_skew, loo_consensus, position_rates


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


def test_dawid_skene_on_weighted_patterns_equals_the_fit_on_every_item():
    """Items grouped into patterns with a weight give the same fit as the items one by one."""
    rows = []
    for i in range(300):
        truth = ("up", "down")[i % 2]
        other = "down" if truth == "up" else "up"
        rows += [(f"i{i}", "a", truth), (f"i{i}", "b", truth if i % 7 else other), (f"i{i}", "c", other if i % 5 == 0 else truth)]
    items = frame(rows)
    patterns = (
        items.group_by("item_id").agg(pl.col("annotator_id"), pl.col("label"))
        .with_columns(pl.col("annotator_id").list.join(",").alias("key_a"), pl.col("label").list.join(",").alias("key_l"))
        .group_by("key_a", "key_l").agg(pl.col("item_id").first(), pl.len().cast(pl.Float64).alias("weight"))
    )
    weighted = patterns.select("item_id", "weight").join(items, on="item_id")
    one, grouped = dawid_skene(items), dawid_skene(weighted)
    assert grouped.prior == pytest.approx(one.prior, abs=1e-6) and grouped.confusion == pytest.approx(one.confusion, abs=1e-6)
    assert_frame_equal(consensus_agreement(weighted).sort("annotator_id"), consensus_agreement(items).sort("annotator_id"), check_exact=False)


def test_dawid_skene_needs_two_classes():
    assert dawid_skene(frame([("i", "a", "up"), ("i", "b", "up")])) is None


def per_annotator(rows) -> pl.DataFrame:
    """(annotator_id, outcome) rows -> the per-annotator tallies the store computes: n and first (outcomes True)."""
    frame = pl.DataFrame(rows, schema=["annotator_id", "hit"], orient="row")
    return frame.group_by("annotator_id").agg(pl.len().alias("n"), pl.col("hit").sum().alias("first"))


def test_position_rates_flag_only_a_significant_large_deviation():
    rows = [("fair", i % 2 == 0) for i in range(200)] + [("first", i % 10 != 0) for i in range(200)] + [("few", True)] * 10
    table = {r["annotator_id"]: r for r in position_rates(per_annotator(rows), min_count=30, margin=0.15, significance=0.001).to_dicts()}
    assert table["first"]["position_bias"] and table["first"]["first_shown_rate"] == 0.9
    assert not table["fair"]["position_bias"] and table["fair"]["p_value"] is None  # within the margin: not even tested
    assert not table["few"]["position_bias"] and table["few"]["first_shown_rate"] == 1.0  # below min_count
    assert table["first"]["ci_low"] < 0.9 < table["first"]["ci_high"]


def test_clopper_pearson_matches_scipy_binomtest():
    from scipy import stats

    k, n = np.array([0, 3, 50, 200, 7]), np.array([10, 10, 100, 200, 1000])
    low, high = clopper_pearson(k, n)
    for i in range(len(k)):
        ci = stats.binomtest(int(k[i]), int(n[i])).proportion_ci(0.95)
        assert (low[i], high[i]) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_label_skew_compares_with_the_typical_annotator():
    rows = [("a", True)] * 80 + [("a", False)] * 20 + [("b", True)] * 78 + [("b", False)] * 22 + [("skewed", False)] * 90 + [("skewed", True)] * 10
    table = {r["annotator_id"]: r for r in label_skew(per_annotator(rows), min_count=30, margin=0.2, significance=0.001).to_dicts()}
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


def test_grouped_logistic_regression_equals_the_ungrouped_fit():
    """Rows standing for n observations with k successes give statsmodels' estimate on the expanded data."""
    rng = np.random.default_rng(3)
    x = np.column_stack([np.ones(3000), rng.integers(-3, 4, 3000).astype(float), rng.choice([-1.0, 0.0, 1.0], 3000)])
    y = (rng.random(3000) < 1 / (1 + np.exp(-(0.2 + 0.5 * x[:, 1] + 0.8 * x[:, 2])))).astype(float)
    oracle = sm.Logit(y, x).fit(disp=0)
    grouped = pl.DataFrame({"a": x[:, 1], "b": x[:, 2], "y": y}).group_by("a", "b").agg(pl.len().alias("n"), pl.col("y").sum().alias("k"))
    gx = np.column_stack([np.ones(len(grouped)), grouped["a"].to_numpy(), grouped["b"].to_numpy()])
    n = grouped["n"].to_numpy().astype(float)
    params, se = logistic_regression(gx, grouped["k"].to_numpy() / n, weights=n)
    assert params == pytest.approx(oracle.params, abs=1e-6) and se == pytest.approx(oracle.bse, abs=1e-6)


def groups(rows) -> pl.DataFrame:
    """Length groups: (delta = len r1 - len r2, r1_first, consensus, others, trusted, n, k = r1 chosen)."""
    return pl.DataFrame(rows, schema=list(LENGTH_COLUMNS), orient="row")


def test_length_skew_raw_figures_on_a_literal_table():
    table = groups(
        [
            (20, 1, 0, False, True, 3, 2),  # r1 longer by 20: chosen twice (longer won), rejected once
            (-40, -1, 0, False, True, 1, 0),  # r2 longer by 40 and chosen: longer won
            (0, 1, 0, False, True, 2, 1),  # equal length: in the mean, not in the share
        ]
    )
    result = length_skew(table, band=(0.4, 0.6))
    assert result["n"] == 6 and result["n_unequal"] == 4 and result["longer_won"] == 3
    assert result["longer_won_share"] == pytest.approx(3 / 4)
    assert result["mean_length_diff"] == pytest.approx((20 + 20 - 20 + 40 + 0 + 0) / 6)
    assert not result["flagged"]  # 3 of 4: the interval is far too wide to lie outside the band
    assert sum(result["histogram"]["counts"]) == 6


@pytest.mark.parametrize("share, flagged", [(0.5, False), (0.58, False), (0.7, True), (0.3, True)])
def test_length_skew_is_judged_on_the_interval(share, flagged):
    n = 2000
    table = groups([(30, 0, 0, False, True, n, round(share * n))])  # r1 always the longer one
    result = length_skew(table, band=(0.4, 0.6))
    assert result["longer_won_share"] == pytest.approx(share) and result["flagged"] is flagged


def simulated_groups(length_taste: float, seed: int = 11) -> pl.DataFrame:
    """Judgements where good answers are much longer; a share ``length_taste`` goes to the longer one
    whatever its quality. ``consensus`` is the others' confident verdict (the truth, 97% of the time: posterior >= 0.95)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(6000):
        good_is_r1 = rng.random() < 0.5
        good_len, bad_len = 60 + rng.integers(0, 120), 20 + rng.integers(0, 120)
        delta = int(good_len - bad_len) if good_is_r1 else int(bad_len - good_len)
        r1_first = 1 if rng.random() < 0.5 else -1
        verdict = (1 if good_is_r1 else -1) * (1 if rng.random() < 0.97 else -1)
        if rng.random() < length_taste:
            chose_r1 = delta > 0
        else:
            chose_r1 = good_is_r1 if rng.random() < 0.9 else not good_is_r1
        rows.append((delta, r1_first, verdict, True, True, 1, int(chose_r1)))
    return groups(rows).group_by(list(LENGTH_COLUMNS[:5])).agg(pl.col("n").sum(), pl.col("k").sum())


def test_length_taste_separates_a_taste_for_length_from_quality():
    """Good answers are much longer: the longer one wins often even for honest annotators
    (length_skew would flag it); only a population that also prefers length has length_taste."""
    honest = length_taste(simulated_groups(0.0), max_coef=1.0, significance=0.001, min_count=30, excluded=[], control_available=True)
    biased = length_taste(simulated_groups(0.6), max_coef=1.0, significance=0.001, min_count=30, excluded=[], control_available=True)
    assert length_skew(simulated_groups(0.0), band=(0.4, 0.6))["flagged"]
    assert honest["control"].startswith("Dawid-Skene") and not honest["flagged"]
    assert biased["flagged"] and biased["coef"] > 1.0 > honest["coef"]
    without = length_taste(simulated_groups(0.0), max_coef=1.0, significance=0.001, min_count=30, excluded=[], control_available=False)
    assert without["control"] == "none" and without["coef"] > honest["coef"]  # no quality control: length soaks it up


def test_length_taste_needs_enough_judgements():
    result = length_taste(groups([(10, 1, 1, True, True, 5, 3)]), max_coef=0.5, significance=0.001, min_count=30, excluded=[], control_available=True)
    assert result["coef"] is None and "reason" in result and not result["flagged"]


def test_position_bias_over_all_annotators():
    result = position_bias(500, 400, 7, max_bias=0.05, significance=0.001, min_count=30)
    assert result["first_shown_rate"] == pytest.approx(0.8) and result["flagged"] and result["n_unknown_order"] == 7
    empty = position_bias(0, 0, 0, max_bias=0.05, significance=0.001, min_count=30)
    assert empty["n"] == 0 and "reason" in empty and not empty["flagged"]


@pytest.mark.parametrize(
    "up, down, flagged, desirable",
    [(900, 100, False, (100 / 900, 4 / 3 * 100 / 900)), (500, 500, False, (1.0, 4 / 3)), (100, 300, False, (3.0, 4.0)), (1100, 100, True, (1 / 11, 4 / 33))],
)
def test_label_imbalance_and_kto_weights(up, down, flagged, desirable):
    """KTO weights correct an imbalance; only beyond max_label_ratio (10:1) is it flagged."""
    result = label_imbalance(up, down, max_ratio=10.0)
    assert result["ratio"] == pytest.approx(up / down) and result["flagged"] is flagged
    assert result["kto_weights"]["desirable_weight"] == pytest.approx(list(desirable))
    low, high = result["kto_weights"]["desirable_weight"]
    assert 1.0 <= low * up / down <= 4 / 3 and 1.0 <= high * up / down <= 4 / 3 + 1e-12  # TRL's band


def test_label_imbalance_with_one_label_only_says_why():
    result = label_imbalance(10, 0, max_ratio=10.0)
    assert result["ratio"] is None and "only up" in result["reason"] and result["flagged"]


def test_drift_by_day_is_flagged_only_when_large_and_significant():
    steady = [{"group": "2026-11-01", "n": 300, "k": 150}, {"group": "2026-11-02", "n": 300, "k": 150}]
    shifted = [{"group": "2026-11-01", "n": 300, "k": 150}, {"group": "2026-11-02", "n": 300, "k": 270}]
    for rows, expected in ((steady, False), (shifted, True)):
        result = drift({"thumbs_by_day": rows}, margin=0.15, significance=0.001, min_count=30)
        assert result["flagged"] is expected
    assert "2026-11-02" in result["reasons"][0] and result["reasons_by_kind"] == {"thumbs": result["reasons"], "pairwise": []}


def test_settings_reject_unknown_keys_and_wrong_types():
    assert Settings.from_config({"gate": {"min_alpha": 0.5}}).gate.min_alpha == 0.5
    assert Settings.from_config(None) == Settings()
    with pytest.raises(PrefstreamError, match="unknown key.*min_alfa"):
        Settings.from_config({"gate": {"min_alfa": 0.5}})
    with pytest.raises(PrefstreamError, match="wrong type"):
        Settings.from_config({"gate": {"min_alpha": "high"}})
    with pytest.raises(PrefstreamError, match="fail_on: unknown check"):
        Settings.from_config({"gate": {"fail_on": ["length"]}})
    with pytest.raises(PrefstreamError, match=r"\[quality.gate\] max_dead_letter_share = 2"):
        Settings.from_config({"gate": {"max_dead_letter_share": 2}})
    with pytest.raises(PrefstreamError, match="min_longer_share 0.7 / max_longer_share 0.6"):
        Settings.from_config({"gate": {"min_longer_share": 0.7}})
    with pytest.raises(PrefstreamError, match="earliest_ts = 'yesterday'"):
        Settings.from_config({"earliest_ts": "yesterday"})
    with pytest.raises(PrefstreamError, match=r"\[quality.gate\] must be a table"):
        Settings.from_config({"gate": 3})
