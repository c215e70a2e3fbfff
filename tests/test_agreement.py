"""Agreement statistics against published worked examples and the established implementations."""

from __future__ import annotations

import math
import warnings

import krippendorff
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from prefstream.quality import AgreementWarning, bootstrap_ci, cohen_kappa, fleiss_kappa, krippendorff_alpha

NAN = math.nan


def long_frame(matrix, labels=None) -> pl.DataFrame:
    """(raters x units) reliability data, NaN = missing -> long format; ``labels`` maps codes to labels."""
    rows = [
        (f"u{u:03d}", f"r{r}", labels[int(v)] if labels else float(v))
        for r, row in enumerate(matrix)
        for u, v in enumerate(row)
        if not (isinstance(v, float) and math.isnan(v))
    ]
    return pl.DataFrame(rows, schema=["item_id", "annotator_id", "label"], orient="row")


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C:
# four observers, twelve units, values 1-5, missing data.
K2011_C = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
        [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
    ]
)


@pytest.mark.parametrize("level, published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)])
def test_krippendorff_2011_example_c(level, published):
    alpha = krippendorff_alpha(long_frame(K2011_C), level)
    assert alpha == pytest.approx(published, abs=5e-4)
    assert alpha == pytest.approx(krippendorff.alpha(K2011_C, level_of_measurement=level), abs=1e-9)


def test_krippendorff_2011_example_a_binary_two_observers():
    data = np.array([[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]], dtype=float)
    assert krippendorff_alpha(long_frame(data)) == pytest.approx(0.095, abs=5e-4)  # 1 - 19 * 4 / (14 * 6)


def test_krippendorff_2011_example_b_nominal_letters():
    codes = "abcde"
    a, b = "a a b b d c c c e d d a".split(), "b a b b b c c c e d d d".split()
    data = np.array([[codes.index(x) for x in a], [codes.index(x) for x in b]], dtype=float)
    assert krippendorff_alpha(long_frame(data, labels=codes)) == pytest.approx(0.692, abs=5e-4)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_alpha_matches_krippendorff_package_on_random_data(seed, level):
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 6, 400)
    data = np.where(rng.random((6, 400)) < 0.7, truth, rng.integers(0, 8, (6, 400))).astype(float)
    data[rng.random(data.shape) < 0.35] = NAN  # plenty missing, some units left with one value
    expected = krippendorff.alpha(data, level_of_measurement=level)
    assert krippendorff_alpha(long_frame(data), level) == pytest.approx(expected, abs=1e-6)


def test_nominal_alpha_on_string_labels_equals_coded():
    data = K2011_C
    labels = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
    assert krippendorff_alpha(long_frame(data, labels=labels)) == pytest.approx(krippendorff_alpha(long_frame(data)), abs=1e-12)


# Fleiss (1971): 30 patients, 6 psychiatrists each, 5 diagnoses; published kappa 0.430.
FLEISS_1971 = np.array(
    [
        [4, 4, 4, 4, 4, 4], [2, 2, 2, 5, 5, 5], [2, 3, 3, 3, 3, 5], [5, 5, 5, 5, 5, 5], [2, 2, 2, 4, 4, 4],
        [1, 1, 3, 3, 3, 3], [3, 3, 3, 3, 5, 5], [1, 1, 3, 3, 3, 4], [1, 1, 4, 4, 4, 4], [5, 5, 5, 5, 5, 5],
        [1, 4, 4, 4, 4, 4], [1, 2, 4, 4, 4, 4], [2, 2, 2, 3, 3, 3], [1, 4, 4, 4, 4, 4], [2, 2, 4, 4, 4, 5],
        [3, 3, 3, 3, 3, 5], [1, 1, 1, 4, 5, 5], [1, 1, 1, 1, 1, 2], [2, 2, 4, 4, 4, 4], [1, 3, 3, 5, 5, 5],
        [5, 5, 5, 5, 5, 5], [2, 4, 4, 4, 4, 4], [2, 2, 4, 5, 5, 5], [1, 1, 4, 4, 4, 4], [1, 4, 4, 4, 4, 5],
        [2, 2, 2, 2, 2, 4], [1, 1, 1, 1, 5, 5], [2, 2, 4, 4, 4, 4], [1, 3, 3, 3, 3, 3], [5, 5, 5, 5, 5, 5],
    ]
)


def test_fleiss_1971_published_example():
    kappa = fleiss_kappa(long_frame(FLEISS_1971.T.astype(float)))
    assert kappa == pytest.approx(0.430, abs=5e-4)
    assert kappa == pytest.approx(sm_fleiss_kappa(aggregate_raters(FLEISS_1971)[0]), abs=1e-9)


def test_fleiss_wikipedia_example_from_counts():
    # Wikipedia's worked example: 10 items, 14 raters, 5 categories; kappa 0.210.
    counts = np.array(
        [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
         [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    )
    rows = [(f"i{i}", f"r{i}-{k}-{j}", k) for i, row in enumerate(counts) for k, n in enumerate(row) for j in range(n)]
    frame = pl.DataFrame(rows, schema=["item_id", "annotator_id", "label"], orient="row")
    assert fleiss_kappa(frame) == pytest.approx(0.210, abs=5e-4)
    assert fleiss_kappa(frame) == pytest.approx(sm_fleiss_kappa(counts), abs=1e-9)


def two_raters(y1, y2) -> pl.DataFrame:
    n = len(y1)
    return pl.DataFrame({"item_id": list(range(n)) * 2, "annotator_id": ["a"] * n + ["b"] * n, "label": list(y1) + list(y2)})


def test_cohen_wikipedia_example():
    # 50 grant proposals: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> kappa 0.4.
    y1 = ["yes"] * 25 + ["no"] * 25
    y2 = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(two_raters(y1, y2), "a", "b") == pytest.approx(0.4, abs=1e-12)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_matches_sklearn(weights):
    rng = np.random.default_rng(7)
    y1 = rng.integers(0, 5, 700)
    y2 = np.where(rng.random(700) < 0.6, y1, rng.integers(0, 5, 700))
    frame = two_raters(y1, y2)
    # Labels missing for some items of one annotator: only shared items count.
    frame = frame.filter(~((pl.col("annotator_id") == "b") & (pl.col("item_id") % 11 == 0)))
    keep = np.arange(700) % 11 != 0
    assert cohen_kappa(frame, "a", "b", weights) == pytest.approx(cohen_kappa_score(y1[keep], y2[keep], weights=weights), abs=1e-9)


@pytest.mark.parametrize(
    "call, reason",
    [
        (lambda f: krippendorff_alpha(f), "no variation"),
        (lambda f: fleiss_kappa(f), "chance agreement is 1"),
        (lambda f: cohen_kappa(f, "a", "b"), "single label"),
        (lambda f: krippendorff_alpha(f.filter(pl.col("annotator_id") == "a")), "nothing is pairable"),
        (lambda f: cohen_kappa(f, "a", "nobody"), "share no labelled item"),
        (lambda f: krippendorff_alpha(f, "interval"), "numeric labels"),
    ],
)
def test_undefined_is_nan_with_a_warning_that_says_why(call, reason):
    everyone_up = two_raters(["up"] * 5, ["up"] * 5)
    with pytest.warns(AgreementWarning, match=reason):
        assert math.isnan(call(everyone_up))


def test_empty_frame_and_null_labels_are_nan_not_errors():
    empty = pl.DataFrame(schema={"item_id": pl.String, "annotator_id": pl.String, "label": pl.String})
    with pytest.warns(AgreementWarning):
        assert math.isnan(krippendorff_alpha(empty))
    with pytest.warns(AgreementWarning):
        assert math.isnan(fleiss_kappa(empty))
    nulls = two_raters(["up", None, "down", "up"], ["up", "down", None, "down"])
    assert krippendorff_alpha(nulls) == pytest.approx(krippendorff_alpha(two_raters(["up", "up"], ["up", "down"])))


def test_bootstrap_ci_brackets_the_estimate_and_is_deterministic():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 600)
    data = np.where(rng.random((4, 600)) < 0.85, truth, 1 - truth).astype(float)
    frame = long_frame(data)
    alpha = krippendorff_alpha(frame)
    low, high = bootstrap_ci(krippendorff_alpha, frame, "nominal", n_boot=300, seed=1)
    assert low < alpha < high and high - low < 0.2
    assert bootstrap_ci(krippendorff_alpha, frame, "nominal", n_boot=300, seed=1) == (low, high)
    # Any callable works by resampling the frame; it agrees with the re-weighting fast path.
    slow = bootstrap_ci(lambda f: krippendorff_alpha(f), frame, n_boot=150, seed=2)
    assert slow[0] == pytest.approx(low, abs=0.03) and slow[1] == pytest.approx(high, abs=0.03)
    for statistic, args in ((fleiss_kappa, ()), (cohen_kappa, ("r0", "r1"))):
        lo, hi = bootstrap_ci(statistic, frame, *args, n_boot=200)
        assert lo < statistic(frame, *args) < hi


def test_bootstrap_ci_of_an_undefined_statistic_is_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AgreementWarning)
        assert all(math.isnan(x) for x in bootstrap_ci(krippendorff_alpha, two_raters(["up"] * 5, ["up"] * 5), n_boot=20))


def test_alpha_on_a_million_annotations_matches_the_package():
    # Scale check for the vectorised path (timings live in bench/agreement.py, not here).
    rng = np.random.default_rng(0)
    units, raters = 250_000, 4
    truth = rng.integers(1, 6, units)
    data = np.where(rng.random((raters, units)) < 0.8, truth, rng.integers(1, 6, (raters, units))).astype(float)
    item = np.tile(np.arange(units), raters)
    frame = pl.DataFrame({"item_id": item, "annotator_id": np.repeat(np.arange(raters), units), "label": data.ravel()})
    for level in ("nominal", "interval"):
        assert krippendorff_alpha(frame, level) == pytest.approx(krippendorff.alpha(data, level_of_measurement=level), abs=1e-6)
