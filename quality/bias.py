"""Biases the whole dataset carries: length, position, label imbalance, drift.

Pure functions of the frames from :mod:`prefstream.quality.frames`; each returns a
JSON-able dict with its figures and ``flagged``. A figure that cannot be computed is None
and ``reason`` says why.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import special, stats

from prefstream.quality.reliability import DawidSkene, dawid_skene, loo_posterior

HISTOGRAM_BINS = 41
# The length fit keeps judgements whose pair the other annotators settle with at least this
# posterior probability: a shaky verdict is a poor stand-in for quality, and the length term
# would pick up the quality it misses (good answers tend to be longer).
CONFIDENT = 0.95


def length_bias(
    pairwise: pl.DataFrame,
    *,
    max_coef: float,
    significance: float,
    min_count: int,
    unreliable: frozenset[str] = frozenset(),
    ds: DawidSkene | None = None,
) -> dict:
    """Does the longer response win more often than its quality explains?

    Raw figures: the share of decided judgements (unequal lengths) where the longer response
    won, and chosen-minus-rejected length in characters. Those confound length with quality
    whenever good answers also tend to be longer, so the flag rests on a logistic
    regression in the spirit of length-controlled AlpacaEval: P(a chosen) on
    tanh(length difference / its SD), the order shown, and the other annotators' verdict on
    the same pair standing in for quality. ``coef`` is the length term: how far length moves
    a judgement beyond what the other annotators' verdict predicts. Without overlapping
    annotations the verdict term is dropped (``control`` says which). ``unreliable``
    annotators' judgements are left out of the fit; ``ds`` is a Dawid-Skene fit of the
    decided labels if the caller already has one (else it is fitted here).
    """
    decided = pairwise.filter(pl.col("label").is_in(["r1", "r2"]))
    out: dict = {"flagged": False, "n": len(decided)}
    if decided.is_empty():
        return out | {"reason": "no decided pairwise judgements (all ties, or no pairwise feedback)"}
    decided = decided.with_columns(
        pl.when(pl.col("choice") == "a").then(pl.col("length_a")).otherwise(pl.col("length_b")).alias("chosen_length"),
        pl.when(pl.col("choice") == "a").then(pl.col("length_b")).otherwise(pl.col("length_a")).alias("rejected_length"),
    ).with_columns((pl.col("chosen_length") - pl.col("rejected_length")).alias("diff"))
    diff = decided.get_column("diff").to_numpy().astype(np.float64)
    unequal = diff[diff != 0]
    out |= {
        "mean_length_diff": float(diff.mean()),
        "median_length_diff": float(np.median(diff)),
        "n_unequal": int(unequal.size),
        "longer_won_share": float((unequal > 0).mean()) if unequal.size else None,
        "histogram": _histogram(diff),
    }
    if unequal.size:
        ci = stats.binomtest(int((unequal > 0).sum()), int(unequal.size)).proportion_ci(0.95)
        out["longer_won_ci"] = [float(ci.low), float(ci.high)]

    fit = _length_regression(decided, min_count, unreliable, ds or dawid_skene(decided))
    out |= fit
    coef, p = fit.get("coef"), fit.get("p_value")
    out["flagged"] = bool(coef is not None and abs(coef) > max_coef and p is not None and p < significance)
    return out


def _length_regression(decided: pl.DataFrame, min_count: int, unreliable: frozenset[str], ds: DawidSkene | None) -> dict:
    y = (decided.get_column("choice") == "a").to_numpy().astype(np.float64)
    delta = (decided.get_column("length_a") - decided.get_column("length_b")).to_numpy().astype(np.float64)
    shown = decided.get_column("shown_first").to_numpy()
    position = np.where(shown == "a", 1.0, np.where(shown == "b", -1.0, 0.0))
    sd = float(delta.std())
    if sd == 0:
        return {"coef": None, "reason": "every pair has the same length difference; no length effect to estimate"}
    features = {"intercept": np.ones_like(y), "length": np.tanh(delta / sd), "position": position}
    # Judgements of unreliable annotators are no evidence about anybody's taste for length,
    # and their weak link to quality would leave the length term to soak up quality instead.
    trusted = ~decided.get_column("annotator_id").is_in(list(unreliable)).to_numpy()
    rows = trusted
    control = "none"
    others = decided.select(pl.len().over("item_id") >= 2).to_series().to_numpy()
    if ds is not None and others.sum() >= min_count:
        # Quality stand-in: the log-odds that response a is the better one given the *other*
        # annotators' labels, each weighted by its Dawid-Skene confusion (so a flipped
        # annotator's vote counts reversed and a random one's hardly at all).
        post = loo_posterior(decided, ds)
        a_class = np.where(decided.get_column("a_is_r1").to_numpy(), ds.classes.index("r1"), ds.classes.index("r2"))
        p_a = post[np.arange(len(post)), a_class]
        confident = trusted & others & (np.abs(p_a - 0.5) >= CONFIDENT - 0.5)
        if confident.sum() >= min_count:
            features["consensus"] = np.sign(p_a - 0.5)
            rows, control = confident, "Dawid-Skene verdict of the other annotators"
    if not position.any():
        del features["position"]
    if rows.sum() < min_count:
        return {"coef": None, "reason": f"only {int(rows.sum())} decided judgements; need {min_count} to estimate a length effect"}
    params, se = logistic_regression(np.column_stack(list(features.values()))[rows], y[rows])
    if params is None:
        return {"coef": None, "reason": "the length regression did not converge (the outcome is perfectly separated)"}
    index = list(features).index("length")
    z = params[index] / se[index]
    return {
        "coef": float(params[index]),
        "coef_se": float(se[index]),
        "p_value": float(2 * stats.norm.sf(abs(z))),
        "control": control,
        "n_fit": int(rows.sum()),
        "excluded_annotators": sorted(unreliable),
        "length_sd": sd,
    }
def logistic_regression(x: np.ndarray, y: np.ndarray, *, max_iter: int = 50, tol: float = 1e-10) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Maximum-likelihood logistic regression by Newton-Raphson; (params, standard errors) or (None, None).

    A dozen lines of numpy instead of statsmodels, which is a test-only dependency here (it is the oracle).
    """
    beta = np.zeros(x.shape[1])
    for _ in range(max_iter):
        p = special.expit(x @ beta)
        w = p * (1.0 - p)
        hessian = x.T @ (x * w[:, None])
        try:
            step = np.linalg.solve(hessian, x.T @ (y - p))
        except np.linalg.LinAlgError:
            return None, None
        beta = beta + step
        if np.max(np.abs(step)) < tol:
            break
    else:
        return None, None
    if not np.all(np.isfinite(beta)) or np.max(np.abs(beta)) > 30:
        return None, None
    p = special.expit(x @ beta)
    covariance = np.linalg.inv(x.T @ (x * (p * (1.0 - p))[:, None]))
    return beta, np.sqrt(np.diag(covariance))


def position_bias(pairwise: pl.DataFrame, *, max_bias: float, significance: float, min_count: int) -> dict:
    """How often the first-shown response won, over all annotators (ties and unknown order left out)."""
    known = pairwise.drop_nulls("first_shown_chosen")
    n = len(known)
    out: dict = {"flagged": False, "n": n, "n_unknown_order": int(pairwise.filter(pl.col("shown_first").is_null()).height)}
    if n == 0:
        return out | {"reason": "no decided pairwise judgement records which response was shown first"}
    first = int(known.get_column("first_shown_chosen").sum())
    test = stats.binomtest(first, n)
    ci = test.proportion_ci(0.95)
    rate = first / n
    out |= {"first_shown_rate": rate, "ci": [float(ci.low), float(ci.high)], "p_value": float(test.pvalue)}
    out["flagged"] = bool(n >= min_count and abs(rate - 0.5) > max_bias and test.pvalue < significance)
    return out


def label_imbalance(thumbs: pl.DataFrame, *, max_ratio: float) -> dict:
    """The up:down ratio of thumbs, and the KTO weights that bring it into TRL's recommended band.

    TRL's KTOTrainer wants (desirable_weight x #up) : (undesirable_weight x #down) between
    1:1 and 4:3; keeping one weight at 1, the other's range follows.
    """
    rated = thumbs.drop_nulls("label")
    up = int((rated.get_column("label") == "up").sum()) if len(rated) else 0
    down = len(rated) - up
    out: dict = {"flagged": False, "up": up, "down": down, "max_ratio": max_ratio}
    if up == 0 or down == 0:
        reason = "no thumbs feedback" if up == down == 0 else f"only {'up' if down == 0 else 'down'} ratings: KTO needs both"
        return out | {"ratio": None, "up_share": up / len(rated) if len(rated) else None, "reason": reason, "flagged": len(rated) > 0}
    ratio = up / down
    out |= {
        "ratio": ratio,
        "up_share": up / (up + down),
        "kto_weights": {
            "desirable_weight": [down / up, 4.0 / 3.0 * down / up],
            "undesirable_weight": [0.75 * up / down, up / down],
            "note": "set ONE of these (the other stays 1.0) so desirable x #up : undesirable x #down lies in 1:1-4:3",
        },
        "flagged": bool(ratio > max_ratio or ratio < 1.0 / max_ratio),
    }
    return out


def drift(thumbs: pl.DataFrame, pairwise: pl.DataFrame, *, margin: float, significance: float, min_count: int) -> dict:
    """Label rates by UTC day and by model version; flagged when a group with ``min_count`` or more
    labels is ``margin`` or more away from the overall rate and a chi-square test of homogeneity
    says the difference is not chance."""
    out: dict = {"flagged": False, "reasons": []}
    rated = thumbs.drop_nulls("label").with_columns((pl.col("label") == "up").alias("up"))
    decided = pairwise.filter(pl.col("label").is_in(["r1", "r2", "tie"]))
    out["thumbs_by_day"] = _rates(rated, "day", "up")
    out["thumbs_by_model"] = _rates(rated.with_columns(pl.col("model_id").fill_null("(none)")), "model_id", "up")
    out["pairwise_by_day"] = _rates(decided.with_columns((pl.col("label") == "tie").alias("tie")), "day", "tie")
    out["pairwise_by_day_first_shown"] = _rates(decided.drop_nulls("first_shown_chosen"), "day", "first_shown_chosen")
    for name, rate_name in (("thumbs_by_day", "up"), ("thumbs_by_model", "up"), ("pairwise_by_day_first_shown", "first_shown_chosen")):
        rows = out[name]
        reason = _drifted(rows, margin, significance, min_count)
        if reason:
            out["reasons"].append(f"{name.replace('_', ' ')}: {reason}")
    out["flagged"] = bool(out["reasons"])
    return out


def _rates(frame: pl.DataFrame, by: str, flag: str) -> list[dict]:
    if frame.is_empty():
        return []
    grouped = frame.group_by(by).agg(pl.len().alias("n"), pl.col(flag).cast(pl.Int64).sum().alias("k")).sort(by)
    return [{"group": str(r[by]), "n": r["n"], "k": r["k"], "rate": r["k"] / r["n"]} for r in grouped.to_dicts()]


def _drifted(rows: list[dict], margin: float, significance: float, min_count: int) -> str | None:
    big = [r for r in rows if r["n"] >= min_count]
    if len(big) < 2:
        return None
    k = np.array([r["k"] for r in big], dtype=np.float64)
    n = np.array([r["n"] for r in big], dtype=np.float64)
    overall = k.sum() / n.sum()
    if overall in (0.0, 1.0):
        return None
    table = np.column_stack([k, n - k])
    p = stats.chi2_contingency(table, correction=False)[1]
    worst = max(big, key=lambda r: abs(r["rate"] - overall))
    if abs(worst["rate"] - overall) >= margin and p < significance:
        return f"{worst['group']} rate {worst['rate']:.2f} vs {overall:.2f} overall (chi-square p={p:.1e})"
    return None


def _histogram(diff: np.ndarray) -> dict:
    """Counts of chosen-minus-rejected length on symmetric bins clipped to the 1st-99th percentile."""
    limit = float(np.percentile(np.abs(diff), 99)) or 1.0
    edges = np.linspace(-limit, limit, HISTOGRAM_BINS + 1)
    counts, _ = np.histogram(np.clip(diff, -limit, limit), bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
