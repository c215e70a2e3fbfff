"""quality.compare: win rate with a bootstrap interval and AlpacaEval 2's length-controlled win rate."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from prefstream.quality.compare import compare_frame, fit_logit, length_controlled, oriented, win_rate

# Four pairs where B is 10 characters longer, four where it is 10 shorter. The two-valued length
# feature makes the model saturated, so the fit reproduces each group's mean outcome and
# everything is hand-computable: logit(LC) = (logit(0.75) + logit(0.375)) / 2 = ln(1.8) / 2, and
# Var(intercept) = (1/(4 * .75 * .25) + 1/(4 * .375 * .625)) / 4 = 0.6.
TABLE = pl.DataFrame(
    {
        "choice": ["b", "b", "b", "a", "b", "a", "a", "tie"],
        "len_b_minus_a": [10, 10, 10, 10, -10, -10, -10, -10],
    }
)


def _outcomes(table):
    return table["choice"].replace_strict({"b": 1.0, "tie": 0.5, "a": 0.0}).to_numpy()


def test_length_controlled_win_rate_matches_hand_computed_values():
    y = _outcomes(TABLE)
    d = TABLE["len_b_minus_a"].to_numpy()
    result = length_controlled(y, np.full(8, 100), 100 + d)
    lc = math.sqrt(1.8) / (1 + math.sqrt(1.8))
    assert result["converged"]
    assert result["intercept"] == pytest.approx(math.log(1.8) / 2, abs=1e-9)
    assert result["lc_win_rate"] == pytest.approx(lc, abs=1e-9)  # 0.57295
    assert result["se"] == pytest.approx(lc * (1 - lc) * math.sqrt(0.6), abs=1e-9)  # 0.18953
    c = math.tanh(10 / math.sqrt(800 / 7))  # sd of the differences, ddof=1
    assert result["length_coef"] == pytest.approx((math.log(3) - math.log(0.6)) / (2 * c), abs=1e-9)
    assert win_rate(y)["win_rate"] == pytest.approx(4.5 / 8)


def test_length_controlled_matches_statsmodels_logit():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(7)
    n = 400
    len_a = rng.integers(20, 400, n)
    len_b = rng.integers(20, 600, n)
    d = len_b - len_a
    p = 1 / (1 + np.exp(-(0.3 + 1.2 * np.tanh(d / d.std(ddof=1)))))
    y = (rng.random(n) < p).astype(float)
    y[rng.random(n) < 0.1] = 0.5  # ties, as fractional targets
    ours = length_controlled(y, len_a, len_b)
    x = sm.add_constant(np.tanh(d / d.std(ddof=1)))
    fit = sm.Logit(y, x).fit(disp=0, tol=1e-12)
    assert ours["intercept"] == pytest.approx(fit.params[0], abs=1e-7)
    assert ours["length_coef"] == pytest.approx(fit.params[1], abs=1e-7)
    lc = 1 / (1 + np.exp(-fit.params[0]))
    assert ours["lc_win_rate"] == pytest.approx(lc, abs=1e-8)
    assert ours["se"] == pytest.approx(lc * (1 - lc) * fit.bse[0], rel=1e-6)


def test_fit_logit_reports_separation_instead_of_a_number():
    x = np.column_stack([np.ones(6), [-1.0, -1, -1, 1, 1, 1]])
    _, cov, converged = fit_logit(x, np.array([0.0, 0, 0, 1, 1, 1]))
    assert not converged and np.isnan(cov).all()
    shorter_wins = length_controlled([1.0, 1, 0, 0], [10, 10, 5, 5], [5, 5, 10, 10])
    assert (shorter_wins["converged"], shorter_wins["lc_win_rate"], shorter_wins["se"]) == (False, None, None)
    assert shorter_wins["not_estimable"] == "the length difference separates the outcomes"
    assert length_controlled([1.0, 1, 1], [3, 5, 9], [4, 2, 7])["not_estimable"] == "every judgement went the same way"


def test_length_controlled_with_equal_lengths_is_the_raw_win_rate():
    y = np.array([1.0, 1, 0, 0.5])
    result = length_controlled(y, [5, 5, 5, 5], [5, 5, 5, 5])
    assert result["lc_win_rate"] == pytest.approx(0.625) and result["length_coef"] is None


def test_win_rate_bootstrap_is_seeded_and_brackets_the_estimate():
    y = np.array([1.0] * 30 + [0.0] * 10 + [0.5] * 10)
    first, again = win_rate(y, seed=3), win_rate(y, seed=3)
    assert first == again
    assert first["win_rate"] == pytest.approx(0.7)
    assert first["ci"][0] < 0.7 < first["ci"][1]
    assert (first["b_wins"], first["ties"], first["a_wins"]) == (30, 10, 10)
    assert win_rate([1.0, 1.0])["ci"] == [1.0, 1.0]


def test_oriented_flips_judgements_given_the_other_way_round():
    frame = pl.DataFrame(
        {
            "choice": ["a", "b", "tie", "a"],
            "model_a": ["r1", "r1", "r2", "r2"],
            "model_b": ["r2", "r2", "r1", "r1"],
            "len_a": [1, 2, 3, 4],
            "len_b": [10, 20, 30, 40],
            "annotator_kind": ["user", "user", "model", "model"],
        }
    )
    out = oriented(frame, "r1", "r2")
    assert out["outcome"].to_list() == [0.0, 1.0, 0.5, 1.0]
    assert out["len_b"].to_list() == [10, 20, 3, 4]
    by_kind = compare_frame(out, n_boot=200)
    assert set(by_kind) == {"all", "model", "user"}
    assert by_kind["all"]["win_rate"] == pytest.approx(2.5 / 4)
