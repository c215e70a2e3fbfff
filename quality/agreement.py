"""Agreement statistics on long-format labels: one row per (item, annotator, label).

Every statistic takes a polars frame with columns ``item_id``, ``annotator_id`` and
``label`` (a missing annotation is an absent row or a null label) and returns a plain
float. An undefined value (nothing pairable, one label used by everyone) is NaN with a
:class:`AgreementWarning` that says why; nothing here raises on data.

Why not call the ``krippendorff`` package: it needs a dense (raters x units) array and
builds (units x values) count matrices, which is slow and large at 10M annotations, and it
is not a runtime dependency. Here each statistic reduces to sums over per-item label counts
(one group-by, then ``np.bincount``), O(annotations). Item weights in those sums make the
bootstrap cheap: resampling items is re-weighting them. The ``krippendorff`` package,
statsmodels and scikit-learn are the test oracles.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

LEVELS = ("nominal", "ordinal", "interval", "ratio")
WEIGHTS = (None, "linear", "quadratic")


class AgreementWarning(UserWarning):
    """A statistic is undefined for this data; the message says why."""


def undefined(reason: str) -> float:
    warnings.warn(reason, AgreementWarning, stacklevel=3)
    return math.nan


@dataclass(frozen=True)
class Counts:
    """Labels as sparse per-item counts: row r says item ``item[r]`` got label ``values[value[r]]`` ``count[r]`` times."""

    item: np.ndarray  # int64 item code per row
    value: np.ndarray  # int64 index into ``values`` per row
    count: np.ndarray  # float64
    values: np.ndarray  # the distinct labels, sorted
    n_items: int

    def per_item(self, x: np.ndarray) -> np.ndarray:
        """Sum ``x`` (one number per row) within each item."""
        return np.bincount(self.item, x, minlength=self.n_items)


def label_counts(frame: pl.DataFrame) -> Counts:
    """Group ``frame`` into per-item label counts, dropping null (and NaN) labels.

    Items and labels become dense integer codes first; the (item, label) counts are then
    one ``np.bincount`` over ``item * K + label`` (or a sort when items x labels is too
    sparse for a dense table), which is several times faster than a two-column group-by.
    """
    _require(frame, ("item_id", "label"))
    labels = frame.select("item_id", "label").drop_nulls()
    if labels.schema["label"].is_float():
        labels = labels.filter(pl.col("label").is_not_nan())
    values = labels.get_column("label").unique().sort()
    k = len(values)
    if labels.is_empty():
        empty = np.zeros(0, dtype=np.int64)
        return Counts(empty, empty, np.zeros(0), values.to_numpy(), 0)
    if labels.schema["label"].is_numeric():
        value = np.searchsorted(values.to_numpy(), labels.get_column("label").to_numpy())
    else:
        value = labels.get_column("label").replace_strict(values, np.arange(k), return_dtype=pl.Int64).to_numpy()
    item = (labels.get_column("item_id").rank("dense").cast(pl.Int64) - 1).to_numpy()
    n_items = int(item.max()) + 1
    key = item * k + value
    if n_items * k <= 8 * len(key):
        table = np.bincount(key, minlength=n_items * k)
        key = np.flatnonzero(table)
        count = table[key]
    else:
        key, count = np.unique(key, return_counts=True)
    return Counts(item=key // k, value=key % k, count=count.astype(np.float64), values=values.to_numpy(), n_items=n_items)


# --- Krippendorff's alpha -------------------------------------------------------------


def krippendorff_alpha(frame: pl.DataFrame, level: str = "nominal") -> float:
    """Krippendorff's alpha at ``level`` (nominal, ordinal, interval or ratio); missing data allowed.

    Units with fewer than two labels are not pairable and are ignored, as in Krippendorff (2011).
    Ordinal, interval and ratio need labels that sort (ordinal) or are numbers.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    return _alpha_prepared(_prepare_alpha(label_counts(frame), level), None)


@dataclass(frozen=True)
class _AlphaParts:
    level: str
    counts: Counts
    m: np.ndarray  # values per item
    pairable_row: np.ndarray  # bool per row: its item has >= 2 values
    ratio_pairs: np.ndarray | None  # per item: sum over ordered value pairs of n_c n_k delta^2 (ratio only)


def _prepare_alpha(counts: Counts, level: str) -> _AlphaParts:
    m = counts.per_item(counts.count)
    pairable_row = m[counts.item] >= 2
    numeric = np.issubdtype(counts.values.dtype, np.number)
    ratio_pairs = _ratio_pair_sums(counts, pairable_row) if level == "ratio" and numeric else None
    return _AlphaParts(level, counts, m, pairable_row, ratio_pairs)


def _alpha_prepared(parts: _AlphaParts, weights: np.ndarray | None) -> float:
    c = parts.counts
    if parts.level in ("interval", "ratio") and not np.issubdtype(c.values.dtype, np.number):
        return undefined(f"{parts.level} alpha needs numeric labels, not {c.values.dtype} ones; use level='nominal' or 'ordinal'")
    w_item = np.ones(c.n_items) if weights is None else weights
    pairable_item = parts.m >= 2
    w_item = np.where(pairable_item, w_item, 0.0)
    rows = parts.pairable_row
    n_c = np.bincount(c.value[rows], (w_item[c.item] * c.count)[rows], minlength=len(c.values))
    n = n_c.sum()
    if n < 2 or not pairable_item.any():
        return undefined("alpha is undefined: no unit has two or more labels (nothing is pairable)")
    if np.count_nonzero(n_c) < 2:
        return undefined("alpha is undefined: every pairable label is the same value, so there is no variation to agree on")
    m = np.where(pairable_item, parts.m, 2.0)  # the guard only avoids 0/0 on weight-0 items
    if parts.level == "nominal":
        sq = c.per_item(c.count**2)
        observed = np.sum(w_item * (m**2 - sq) / (m - 1))
        expected = (n**2 - np.sum(n_c**2)) / (n - 1)
        return float(1.0 - observed / expected)
    if parts.level == "ratio":
        observed = np.sum(w_item * parts.ratio_pairs / (m - 1))
        expected = _ratio_expected(c.values.astype(np.float64), n_c) / (n - 1)
        return float(1.0 - observed / expected)
    # Interval and ordinal: delta^2 is a squared difference of a per-value score (the value
    # itself, or for ordinal its mid-rank among all pairable values: Krippendorff's ordinal
    # metric is exactly (r_c - r_k)^2 with r_c = sum_{g<c} n_g + n_c / 2), so the sum over
    # value pairs within a unit is 2 (m S2 - S1^2): no coincidence matrix is needed.
    if parts.level == "ordinal":
        score = np.cumsum(n_c) - n_c / 2.0
    else:
        score = c.values.astype(np.float64)
        score = score - np.average(score, weights=n_c)  # centring keeps m S2 - S1^2 accurate
    x = score[c.value]
    s1 = c.per_item(c.count * x)
    s2 = c.per_item(c.count * x * x)
    observed = np.sum(w_item * 2.0 * (m * s2 - s1**2) / (m - 1))
    t1, t2 = np.sum(w_item * s1), np.sum(w_item * s2)
    expected = 2.0 * (n * t2 - t1**2) / (n - 1)
    return float(1.0 - observed / expected)


def _ratio_delta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    total = a + b
    return np.divide(a - b, total, out=np.zeros(np.broadcast(a, b).shape), where=total != 0) ** 2


def _ratio_pair_sums(counts: Counts, pairable_row: np.ndarray) -> np.ndarray:
    """Per item, the sum of n_uc n_uk delta^2(c, k) over ordered value pairs (a within-item self-join)."""
    rows = pl.DataFrame(
        {"item": counts.item[pairable_row], "x": counts.values[counts.value[pairable_row]].astype(np.float64), "n": counts.count[pairable_row]}
    )
    pairs = rows.join(rows, on="item", suffix="_k").filter(pl.col("x") != pl.col("x_k"))
    delta = _ratio_delta(pairs.get_column("x").to_numpy(), pairs.get_column("x_k").to_numpy())
    weight = pairs.get_column("n").to_numpy() * pairs.get_column("n_k").to_numpy()
    return np.bincount(pairs.get_column("item").to_numpy(), weight * delta, minlength=counts.n_items)


def _ratio_expected(values: np.ndarray, n_c: np.ndarray, block: int = 2048) -> float:
    """sum_c sum_k n_c n_k delta^2(c, k), in blocks of rows so memory stays O(block x values)."""
    total = 0.0
    for start in range(0, len(values), block):
        v = values[start : start + block, None]
        total += float(np.sum(n_c[start : start + block, None] * n_c[None, :] * _ratio_delta(v, values[None, :])))
    return total


# --- Fleiss' kappa --------------------------------------------------------------------


def fleiss_kappa(frame: pl.DataFrame) -> float:
    """Fleiss' kappa (1971) over items with two or more labels.

    With the same number of raters on every item this is Fleiss' statistic exactly; with
    varying numbers each item's agreement P_i uses its own n_i (the usual generalisation),
    and P-bar is the mean over items.
    """
    return _fleiss_prepared(label_counts(frame), None)


def _fleiss_prepared(c: Counts, weights: np.ndarray | None) -> float:
    n_i = c.per_item(c.count)
    rated = n_i >= 2
    if not rated.any():
        return undefined("Fleiss' kappa is undefined: no item has two or more labels")
    w = np.where(rated, 1.0 if weights is None else weights, 0.0)
    safe_n = np.where(rated, n_i, 2.0)
    p_i = (c.per_item(c.count**2) - safe_n) / (safe_n * (safe_n - 1))
    p_bar = np.sum(w * p_i) / np.sum(w)
    n_j = np.bincount(c.value, w[c.item] * c.count, minlength=len(c.values))
    p_j = n_j / n_j.sum()
    p_e = np.sum(p_j**2)
    if p_e >= 1.0 - 1e-12:
        return undefined("Fleiss' kappa is undefined: every label is the same value, so chance agreement is 1")
    return float((p_bar - p_e) / (1.0 - p_e))


# --- Cohen's kappa --------------------------------------------------------------------


@dataclass(frozen=True)
class _PairLabels:
    item: np.ndarray  # item code per shared item
    a: np.ndarray  # label index of annotator a
    b: np.ndarray
    k: int
    n_items: int


def cohen_kappa(frame: pl.DataFrame, a: str, b: str, weights: str | None = None) -> float:
    """Cohen's kappa between annotators ``a`` and ``b`` on the items both labelled.

    ``weights`` None (nominal), "linear" or "quadratic" (ordinal labels: distance is the
    difference of the labels' positions in sorted order, as in scikit-learn).
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', not {weights!r}")
    return _cohen_prepared(_pair_labels(frame, a, b), weights, None, a, b)


def _pair_labels(frame: pl.DataFrame, a: str, b: str) -> _PairLabels:
    _require(frame, ("item_id", "annotator_id", "label"))
    both = (
        frame.filter(pl.col("annotator_id").is_in([a, b]) & pl.col("label").is_not_null())
        .unique(["item_id", "annotator_id"], keep="last", maintain_order=True)
        .pivot("annotator_id", index="item_id", values="label")
    )
    if a not in both.columns or b not in both.columns or a == b:
        both = pl.DataFrame({"item_id": [], a: [], b: []})
    shared = both.drop_nulls([a, b])
    values = pl.concat([shared.get_column(a), shared.get_column(b)]).unique().sort()
    index = pl.DataFrame({"label": values}).with_row_index("code")

    def codes(column: str) -> np.ndarray:
        joined = shared.select(pl.col(column).alias("label")).join(index, on="label", how="left", maintain_order="left")
        return joined.get_column("code").to_numpy().astype(np.int64)

    return _PairLabels(np.arange(len(shared)), codes(a), codes(b), len(values), len(shared))


def _cohen_prepared(p: _PairLabels, weights: str | None, item_weights: np.ndarray | None, a: str = "a", b: str = "b") -> float:
    if p.n_items == 0:
        return undefined(f"Cohen's kappa is undefined: annotators {a} and {b} share no labelled item")
    w = np.ones(p.n_items) if item_weights is None else item_weights[p.item]
    confusion = np.bincount(p.a * p.k + p.b, w, minlength=p.k * p.k).reshape(p.k, p.k)
    expected = np.outer(confusion.sum(1), confusion.sum(0)) / confusion.sum()
    idx = np.arange(p.k)
    if weights is None:
        distance = 1.0 - np.eye(p.k)
    else:
        distance = np.abs(idx[:, None] - idx[None, :]).astype(np.float64)
        distance = distance if weights == "linear" else distance**2
    chance = np.sum(distance * expected)
    if chance <= 0:
        return undefined(f"Cohen's kappa is undefined: {a} and {b} used a single label between them, so chance agreement is 1")
    return float(1.0 - np.sum(distance * confusion) / chance)


# --- Bootstrap ------------------------------------------------------------------------


def bootstrap_ci(
    statistic: Callable[..., float],
    frame: pl.DataFrame,
    *args,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    **kwargs,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(frame, *args, **kwargs)``, resampling items.

    The statistics of this module are re-weighted (an item drawn k times gets weight k),
    O(items) per replicate; any other callable is re-run on resampled frames. Replicates
    where the statistic is undefined are dropped; (nan, nan) when none is defined.
    """
    rng = np.random.default_rng(seed)
    replicate = _weighted_replicate(statistic, frame, *args, **kwargs)
    if replicate is None:
        replicate = _resampling_replicate(statistic, frame, *args, **kwargs)
    draws = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AgreementWarning)
        for _ in range(n_boot):
            draws.append(replicate(rng))
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return (math.nan, math.nan)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return (float(low), float(high))


def _multinomial_weights(rng: np.random.Generator, n_items: int) -> np.ndarray:
    return np.bincount(rng.integers(0, n_items, n_items), minlength=n_items).astype(np.float64)


def _weighted_replicate(statistic, frame, *args, **kwargs):
    if statistic not in (krippendorff_alpha, fleiss_kappa, cohen_kappa):
        return None
    bound = inspect.signature(statistic).bind(frame, *args, **kwargs)
    bound.apply_defaults()
    arg = bound.arguments
    if statistic is krippendorff_alpha:
        parts = _prepare_alpha(label_counts(frame), arg["level"])
        return lambda rng: _alpha_prepared(parts, _multinomial_weights(rng, parts.counts.n_items))
    if statistic is fleiss_kappa:
        counts = label_counts(frame)
        return lambda rng: _fleiss_prepared(counts, _multinomial_weights(rng, counts.n_items))
    pair = _pair_labels(frame, arg["a"], arg["b"])
    return lambda rng: _cohen_prepared(pair, arg["weights"], _multinomial_weights(rng, pair.n_items), arg["a"], arg["b"])


def _resampling_replicate(statistic, frame, *args, **kwargs):
    items = frame.get_column("item_id").unique()

    def replicate(rng: np.random.Generator) -> float:
        drawn = pl.DataFrame({"item_id": items.gather(rng.integers(0, len(items), len(items))).to_list()})
        drawn = drawn.with_row_index("copy")
        resampled = drawn.join(frame, on="item_id").with_columns(
            pl.format("{}#{}", pl.col("item_id"), pl.col("copy")).alias("item_id")
        ).drop("copy")
        return statistic(resampled, *args, **kwargs)

    return replicate


def _require(frame: pl.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"frame needs columns {', '.join(columns)}; missing {', '.join(missing)}")


# --- From item patterns ---------------------------------------------------------------


def pattern_counts(patterns: np.ndarray, values: np.ndarray) -> Counts:
    """``Counts`` whose "items" are label-count patterns: ``patterns[p, v]`` is how often label
    ``values[v]`` occurs on every item of pattern ``p``.

    Alpha (nominal) and Fleiss' kappa see an item only through its label counts, so items
    with the same counts are interchangeable: the store groups them (one row per pattern
    with its multiplicity) and the statistics weight each pattern by it. Exact, and the
    memory no longer grows with the number of items.
    """
    p, v = np.nonzero(patterns)
    return Counts(item=p.astype(np.int64), value=v.astype(np.int64), count=patterns[p, v].astype(np.float64), values=np.asarray(values), n_items=len(patterns))


def pattern_agreement(counts: Counts, multiplicity: np.ndarray, *, n_boot: int, seed: int, confidence: float = 0.95) -> dict:
    """Nominal alpha, its percentile bootstrap interval over items, and Fleiss' kappa, from item
    patterns (see :func:`pattern_counts`) and how many items share each.

    Resampling N items uniformly draws each pattern Multinomial(N, multiplicity / N) times,
    so the bootstrap is exact and O(patterns) per replicate. NaN figures come with an
    :class:`AgreementWarning`, as everywhere in this module.
    """
    multiplicity = np.asarray(multiplicity, dtype=np.float64)
    parts = _prepare_alpha(counts, "nominal")
    alpha = _alpha_prepared(parts, multiplicity)
    fleiss = _fleiss_prepared(counts, multiplicity)
    ci = (math.nan, math.nan)
    if math.isfinite(alpha) and n_boot > 0:
        rng = np.random.default_rng(seed)
        total = int(multiplicity.sum())
        share = multiplicity / multiplicity.sum()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AgreementWarning)
            draws = np.array([_alpha_prepared(parts, rng.multinomial(total, share).astype(np.float64)) for _ in range(n_boot)])
        draws = draws[np.isfinite(draws)]
        if draws.size:
            tail = (1.0 - confidence) / 2.0 * 100.0
            ci = tuple(float(x) for x in np.percentile(draws, [tail, 100.0 - tail]))
    return {"alpha": alpha, "alpha_ci": ci, "fleiss_kappa": fleiss}


def pair_pattern_kappa(confusion: np.ndarray, labels: tuple[str, str] = ("a", "b")) -> float:
    """Cohen's kappa (nominal) from a K x K table of (label of a, label of b) counts over shared items."""
    k = confusion.shape[0]
    a, b = np.divmod(np.flatnonzero(confusion.ravel()), k)
    pair = _PairLabels(np.arange(len(a)), a, b, k, len(a))
    return _cohen_prepared(pair, None, confusion[a, b].astype(np.float64), *labels)
