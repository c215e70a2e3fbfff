"""Which annotators to trust: leave-one-out consensus, Dawid-Skene, per-annotator tests.

All functions take long-format frames (``item_id``, ``annotator_id``, ``label`` and, for
some, the pairwise / thumbs columns of :mod:`prefstream.quality.frames`) and return polars
frames with one row per annotator, so they can be tested against literal tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import sparse, stats


def loo_consensus(frame: pl.DataFrame) -> pl.DataFrame:
    """Each annotation with ``consensus``: the majority label of the *other* annotators on its item.

    ``consensus`` is null when nobody else labelled the item or the others tie. Rows keep
    the order of ``frame`` (null labels dropped). Vectorised: per-item label counts minus
    the annotation's own label, then a row-wise arg-max.
    """
    f = frame.select("item_id", "annotator_id", "label", *(["weight"] if "weight" in frame.columns else [])).drop_nulls("label")
    classes = f.get_column("label").unique().sort()
    k = len(classes)
    if f.is_empty():
        return f.with_columns(pl.lit(None, f.schema["label"]).alias("consensus"))
    label = f.get_column("label").replace_strict(classes, np.arange(k), return_dtype=pl.Int64).to_numpy()
    item = (f.get_column("item_id").rank("dense").cast(pl.Int64) - 1).to_numpy()
    counts = np.bincount(item * k + label, minlength=(int(item.max()) + 1) * k).reshape(-1, k)
    others = counts[item]
    others[np.arange(len(label)), label] -= 1
    top = others.max(1)
    decided = (top > 0) & ((others == top[:, None]).sum(1) == 1)
    consensus = pl.Series("consensus", classes.to_numpy()[others.argmax(1)], dtype=f.schema["label"])
    return f.with_columns(pl.when(pl.Series(decided)).then(consensus).otherwise(None).alias("consensus"))


def consensus_agreement(frame: pl.DataFrame, *, min_class: int = 5) -> pl.DataFrame:
    """Per annotator, against the leave-one-out consensus: ``compared`` (annotations that have
    one), ``agreement`` (share equal to it), ``kappa`` (that agreement corrected for chance from
    the annotator's and the consensus' label rates) and ``informedness`` (the mean over
    consensus labels seen ``min_class`` times or more of P(annotator says c | consensus c),
    rescaled so 0 is chance and 1 perfect; unlike kappa it does not shrink when one label
    dominates). Near 0 is a coin flip; negative means systematically the opposite.

    An optional ``weight`` column counts each row that many times (items grouped into patterns).
    """
    weight = pl.col("weight") if "weight" in frame.columns else pl.lit(1.0)
    compared = loo_consensus(frame.with_columns(weight.cast(pl.Float64).alias("weight"))).drop_nulls("consensus")
    per = compared.group_by("annotator_id").agg(
        pl.col("weight").sum().alias("compared"), (pl.col("weight") * (pl.col("label") == pl.col("consensus"))).sum().alias("agree")
    ).with_columns((pl.col("agree") / pl.col("compared")).alias("agreement")).drop("agree")
    own = compared.group_by("annotator_id", "label").agg(pl.col("weight").sum().alias("n_own"))
    cons = compared.group_by("annotator_id", "consensus").agg(pl.col("weight").sum().alias("n_cons")).rename({"consensus": "label"})
    chance = (
        own.join(cons, on=["annotator_id", "label"], how="full", coalesce=True)
        .fill_null(0)
        .join(per.select("annotator_id", "compared"), on="annotator_id")
        .group_by("annotator_id")
        .agg((pl.col("n_own") * pl.col("n_cons") / pl.col("compared") ** 2).sum().alias("chance"))
    )
    recall = (
        compared.group_by("annotator_id", "consensus")
        .agg(pl.col("weight").sum().alias("n"), ((pl.col("label") == pl.col("consensus")) * pl.col("weight")).sum().alias("hit"))
        .filter(pl.col("n") >= min_class)
        .group_by("annotator_id")
        .agg((pl.col("hit") / pl.col("n")).mean().alias("recall"), pl.len().alias("classes"))
        .select(
            "annotator_id",
            pl.when(pl.col("classes") >= 2)
            .then((pl.col("recall") - 1.0 / pl.col("classes")) / (1.0 - 1.0 / pl.col("classes")))
            .alias("informedness"),
        )
    )
    per = per.join(chance, on="annotator_id").join(recall, on="annotator_id", how="left")
    kappa = (
        pl.when(pl.col("chance") < 1.0)
        .then((pl.col("agreement") - pl.col("chance")) / (1.0 - pl.col("chance")))
        .otherwise(None)
    )
    return per.with_columns(kappa.alias("kappa"), pl.col("compared").cast(pl.Int64)).select("annotator_id", "compared", "agreement", "chance", "kappa", "informedness")


@dataclass(frozen=True)
class DawidSkene:
    """A Dawid-Skene fit: class ``prior`` and one confusion matrix per annotator (rows: true class, columns: label)."""

    classes: list[str]
    annotators: list[str]
    prior: np.ndarray  # (K,)
    confusion: np.ndarray  # (A, K, K)
    iterations: int

    def informedness(self) -> np.ndarray:
        """Mean per-class recall rescaled so labels independent of the truth score 0 and perfect ones 1
        (negative: systematically wrong). For two classes it is Youden's J, sensitivity + specificity - 1.
        Unlike a kappa it does not shrink when one class is rare."""
        k = len(self.classes)
        recall = np.einsum("akk->ak", self.confusion).mean(1)
        return (recall - 1.0 / k) / (1.0 - 1.0 / k)


def dawid_skene(frame: pl.DataFrame, *, max_iter: int = 100, tol: float = 1e-6, pseudo_count: float = 1.0) -> DawidSkene | None:
    """Dawid & Skene (1979) EM on items with two or more labels; None when that leaves fewer than two classes.

    Starts from majority-vote shares (so a minority of flipped annotators cannot swap the
    classes) and adds ``pseudo_count`` to every confusion cell, which pulls annotators with
    few labels toward "uninformative" instead of "perfect". Vectorised: each EM step is a
    handful of bincounts over the annotations. An optional ``weight`` column (the same on
    every row of an item) counts the item that many times: items grouped into patterns.
    """
    weight = pl.col("weight") if "weight" in frame.columns else pl.lit(1.0)
    f = frame.select("item_id", "annotator_id", "label", weight.cast(pl.Float64).alias("weight")).drop_nulls("label")
    f = f.filter(pl.len().over("item_id") >= 2)
    classes = sorted(f.get_column("label").unique().to_list())
    if len(classes) < 2:
        return None
    f = f.with_columns(
        (pl.col("item_id").rank("dense") - 1).cast(pl.Int64).alias("i"),
        (pl.col("annotator_id").rank("dense") - 1).cast(pl.Int64).alias("a"),
        (pl.col("label").rank("dense") - 1).cast(pl.Int64).alias("l"),
    )
    annotators = f.unique("a").sort("a").get_column("annotator_id").to_list()
    i, a, l = (f.get_column(c).to_numpy() for c in ("i", "a", "l"))
    n_items, n_ann, k = int(i.max()) + 1, len(annotators), len(classes)
    w = np.zeros(n_items)
    w[i] = f.get_column("weight").to_numpy()

    # incidence[item, (annotator, label)] = how many such labels the item got: each EM step
    # is then two sparse products instead of a loop over annotations.
    group = a * k + l
    incidence = sparse.csr_matrix((np.ones(len(i)), (i, group)), shape=(n_items, n_ann * k))
    posterior = np.bincount(i * k + l, minlength=n_items * k).reshape(n_items, k).astype(np.float64)
    posterior /= posterior.sum(1, keepdims=True)
    for iteration in range(1, max_iter + 1):
        prior = np.average(posterior, axis=0, weights=w)
        # (annotator, label) x true class -> (annotator, true class, label)
        confusion = np.asarray(incidence.T @ (posterior * w[:, None])).reshape(n_ann, k, k).transpose(0, 2, 1) + pseudo_count
        confusion /= confusion.sum(2, keepdims=True)
        log_conf = np.log(confusion).transpose(0, 2, 1).reshape(n_ann * k, k)
        log_post = np.log(np.maximum(prior, 1e-300)) + np.asarray(incidence @ log_conf)
        log_post -= log_post.max(1, keepdims=True)
        updated = np.exp(log_post)
        updated /= updated.sum(1, keepdims=True)
        change = np.abs(updated - posterior).max()
        posterior = updated
        if change < tol:
            break
    return DawidSkene(classes, annotators, np.average(posterior, axis=0, weights=w), confusion, iteration)


def position_rates(per: pl.DataFrame, *, min_count: int, margin: float, significance: float) -> pl.DataFrame:
    """Per annotator (``per``: annotator_id, ``n`` decided judgements with a known order, ``first``
    of them won by the first-shown response): the rate, a 95% Clopper-Pearson interval, a
    two-sided binomial test against 1/2, and ``position_bias``: at least ``min_count``
    decisions, the rate at least ``margin`` from 1/2, and p below ``significance`` divided by
    the number of annotators tested (Bonferroni)."""
    per = per.with_columns(pl.lit(0.5).alias("expected"))
    return _binomial_flags(per, "first_shown_rate", "position_bias", min_count, margin, significance)


def label_skew(per: pl.DataFrame, *, min_count: int, margin: float, significance: float) -> pl.DataFrame:
    """Per annotator (``per``: annotator_id, ``n`` thumbs, ``first`` of them up): the up rate
    against ``typical_rate``, the median rate over annotators with ``min_count`` or more
    labels (a median, so a skewed annotator cannot drag the reference toward itself), a
    binomial test against it, and ``label_skew`` with the rule of :func:`position_rates`."""
    big = per.filter(pl.col("n") >= min_count)
    typical = float((big.get_column("first") / big.get_column("n")).median()) if len(big) >= 2 else None  # one annotator has nobody to differ from
    per = per.with_columns(pl.lit(typical, pl.Float64).alias("expected"), pl.lit(typical, pl.Float64).alias("typical_rate"))
    return _binomial_flags(per, "up_rate", "label_skew", min_count, margin, significance)


def clopper_pearson(k: np.ndarray, n: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact binomial intervals, vectorised (the same numbers as ``binomtest(...).proportion_ci()``)."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    tail = (1.0 - confidence) / 2.0
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, stats.beta.ppf(tail, k, n - k + 1), 0.0)
        high = np.where(k < n, stats.beta.ppf(1.0 - tail, k + 1, n - k), 1.0)
    return low, high


def _binomial_flags(per: pl.DataFrame, rate_name: str, flag: str, min_count: int, margin: float, significance: float) -> pl.DataFrame:
    """Rates and intervals for everyone; binomial tests only where a flag is possible (enough
    labels and far enough from the expected rate), so 10^6 end-user annotators cost one
    vectorised pass, not 10^6 tests."""
    if per.is_empty():
        return pl.DataFrame()
    per = per.sort("annotator_id")
    k, n = per.get_column("first").to_numpy(), per.get_column("n").to_numpy()
    expected = per.get_column("expected").to_numpy().astype(np.float64)
    rate = np.divide(k, n, out=np.full(len(n), np.nan), where=n > 0)
    low, high = clopper_pearson(k, n)
    tested = (n >= min_count) & np.isfinite(expected)
    candidate = tested & (np.abs(rate - expected) >= margin)
    p_value = np.full(len(n), np.nan)
    for row in np.flatnonzero(candidate):
        p_value[row] = stats.binomtest(int(k[row]), int(n[row]), float(expected[row])).pvalue
    flagged = candidate & (p_value < significance / max(int(tested.sum()), 1))
    return per.drop("expected").with_columns(
        pl.Series(rate_name, rate).fill_nan(None),
        pl.Series("ci_low", low),
        pl.Series("ci_high", high),
        pl.Series("p_value", p_value).fill_nan(None),
        pl.Series(flag, flagged),
    )
