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
    f = frame.select("item_id", "annotator_id", "label").drop_nulls("label")
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
    """
    compared = loo_consensus(frame).drop_nulls("consensus")
    per = compared.group_by("annotator_id").agg(
        pl.len().alias("compared"), (pl.col("label") == pl.col("consensus")).mean().alias("agreement")
    )
    own = compared.group_by("annotator_id", "label").len("n_own")
    cons = compared.group_by("annotator_id", "consensus").len("n_cons").rename({"consensus": "label"})
    chance = (
        own.join(cons, on=["annotator_id", "label"], how="full", coalesce=True)
        .fill_null(0)
        .join(per.select("annotator_id", "compared"), on="annotator_id")
        .group_by("annotator_id")
        .agg((pl.col("n_own") * pl.col("n_cons") / pl.col("compared") ** 2).sum().alias("chance"))
    )
    recall = (
        compared.group_by("annotator_id", "consensus")
        .agg(pl.len().alias("n"), (pl.col("label") == pl.col("consensus")).mean().alias("recall"))
        .filter(pl.col("n") >= min_class)
        .group_by("annotator_id")
        .agg(pl.col("recall").mean().alias("recall"), pl.len().alias("classes"))
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
    return per.with_columns(kappa.alias("kappa")).select("annotator_id", "compared", "agreement", "chance", "kappa", "informedness")


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
    handful of bincounts over the annotations.
    """
    f = frame.select("item_id", "annotator_id", "label").drop_nulls("label")
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

    # incidence[item, (annotator, label)] = how many such labels the item got: each EM step
    # is then two sparse products instead of a loop over annotations.
    group = a * k + l
    incidence = sparse.csr_matrix((np.ones(len(i)), (i, group)), shape=(n_items, n_ann * k))
    posterior = np.bincount(i * k + l, minlength=n_items * k).reshape(n_items, k).astype(np.float64)
    posterior /= posterior.sum(1, keepdims=True)
    for iteration in range(1, max_iter + 1):
        prior = posterior.mean(0)
        # (annotator, label) x true class -> (annotator, true class, label)
        confusion = np.asarray(incidence.T @ posterior).reshape(n_ann, k, k).transpose(0, 2, 1) + pseudo_count
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
    return DawidSkene(classes, annotators, posterior.mean(0), confusion, iteration)


def loo_posterior(frame: pl.DataFrame, ds: DawidSkene) -> np.ndarray:
    """For each row of ``frame``: P(true class | every *other* label on the same item) under the
    fit ``ds``, shape (rows, classes). Labels from annotators the fit does not know, and labels
    outside its classes, carry no evidence; a row whose item has no other label gets the prior."""
    k = len(ds.classes)
    log_conf = np.log(ds.confusion)
    annotator = frame.select(
        pl.col("annotator_id").replace_strict(ds.annotators, list(range(len(ds.annotators))), default=-1, return_dtype=pl.Int64)
    ).to_series().to_numpy()
    label = frame.select(
        pl.col("label").replace_strict(ds.classes, list(range(k)), default=-1, return_dtype=pl.Int64)
    ).to_series().to_numpy()
    known = (annotator >= 0) & (label >= 0)
    evidence = np.zeros((len(frame), k))
    evidence[known] = log_conf[annotator[known], :, label[known]]
    item = frame.select(pl.col("item_id").rank("dense").cast(pl.Int64) - 1).to_series().to_numpy()
    totals = np.stack([np.bincount(item, evidence[:, t]) for t in range(k)], axis=1)
    log_post = np.log(np.maximum(ds.prior, 1e-300)) + totals[item] - evidence
    log_post -= log_post.max(1, keepdims=True)
    post = np.exp(log_post)
    return post / post.sum(1, keepdims=True)


def position_rates(pairwise: pl.DataFrame, *, min_count: int, margin: float, significance: float) -> pl.DataFrame:
    """Per annotator: how often the first-shown response was chosen (ties and unknown order left out),
    a 95% Clopper-Pearson interval, a two-sided binomial test against 1/2, and ``position_bias``:
    at least ``min_count`` decisions, the rate at least ``margin`` from 1/2, and p below
    ``significance`` divided by the number of annotators tested (Bonferroni)."""
    decided = pairwise.drop_nulls("first_shown_chosen").group_by("annotator_id").agg(
        pl.len().alias("n"), pl.col("first_shown_chosen").sum().alias("first")
    )
    return _binomial_flags(decided, lambda row: 0.5, "first_shown_rate", "position_bias", min_count, margin, significance)


def label_skew(thumbs: pl.DataFrame, *, min_count: int, margin: float, significance: float) -> pl.DataFrame:
    """Per annotator: the thumbs-up rate against ``typical_rate``, the median rate over annotators
    with ``min_count`` or more labels (a median, so a skewed annotator cannot drag the
    reference toward itself or anyone else), a binomial test against it, and ``label_skew``
    with the same rule as :func:`position_rates`."""
    rated = thumbs.drop_nulls("label").with_columns((pl.col("label") == "up").alias("up"))
    per = rated.group_by("annotator_id").agg(pl.len().alias("n"), pl.col("up").sum().alias("first"))
    rates = [r["first"] / r["n"] for r in per.to_dicts() if r["n"] >= min_count]
    typical = float(np.median(rates)) if len(rates) >= 2 else None  # one annotator has nobody to differ from
    per = per.with_columns(pl.lit(typical, pl.Float64).alias("typical_rate"))
    return _binomial_flags(per, lambda row: row["typical_rate"], "up_rate", "label_skew", min_count, margin, significance)


def _binomial_flags(per: pl.DataFrame, expected, rate_name: str, flag: str, min_count: int, margin: float, significance: float) -> pl.DataFrame:
    rows = per.sort("annotator_id").to_dicts()
    tested = {r["annotator_id"] for r in rows if r["n"] >= min_count and expected(r) is not None}
    out = []
    for r in rows:
        p0 = expected(r)
        rate = r["first"] / r["n"] if r["n"] else None
        result = {"annotator_id": r["annotator_id"], "n": r["n"], rate_name: rate, "ci_low": None, "ci_high": None, "p_value": None, flag: False}
        if r["n"]:
            test = stats.binomtest(r["first"], r["n"], p0 if p0 is not None else 0.5)
            ci = test.proportion_ci(0.95)
            result.update(ci_low=float(ci.low), ci_high=float(ci.high), p_value=float(test.pvalue) if p0 is not None else None)
            result[flag] = bool(
                r["annotator_id"] in tested and abs(rate - p0) >= margin and test.pvalue < significance / max(len(tested), 1)
            )
        if "typical_rate" in r:
            result["typical_rate"] = r["typical_rate"]
        out.append(result)
    return pl.DataFrame(out, infer_schema_length=None) if out else pl.DataFrame()
