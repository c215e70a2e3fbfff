"""Biases the whole dataset carries: length, position, label imbalance, drift.

Pure functions of aggregates the store computes (:mod:`prefstream.quality.sql`): counts,
per-group tallies, and for length one row per (length difference, order shown, verdict of
the others) with its tally. Each returns a JSON-able dict with its figures and
``flagged``; a figure that cannot be computed is None and ``reason`` says why.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import special, stats

from prefstream.quality.reliability import clopper_pearson

HISTOGRAM_BINS = 41
LENGTH_COLUMNS = ("delta", "r1_first", "consensus", "others", "trusted", "n", "k")


def length_skew(groups: pl.DataFrame, *, band: tuple[float, float]) -> dict:
    """Among decided judgements of pairs of unequal length, how often the longer response won.

    This is what DPO learns whatever its cause (good answers may simply be longer), so it
    is judged on the 95% interval: flagged when the whole interval lies outside ``band``.
    ``groups`` has :data:`LENGTH_COLUMNS`: ``delta`` is the length of one response of the pair
    minus the other's, ``n`` judgements, ``k`` of them for that response.
    """
    out: dict = {"flagged": False, "band": list(band), "n": int(groups.get_column("n").sum()) if len(groups) else 0}
    if out["n"] == 0:
        return out | {"reason": "no decided pairwise judgements (all ties, or no pairwise feedback)"}
    delta = groups.get_column("delta").to_numpy().astype(np.float64)
    n, k = groups.get_column("n").to_numpy().astype(np.float64), groups.get_column("k").to_numpy().astype(np.float64)
    # chosen minus rejected: +delta for the k judgements that chose r1, -delta for the others
    diff = np.concatenate([delta, -delta])
    weight = np.concatenate([k, n - k])
    longer_won = float(k[delta > 0].sum() + (n - k)[delta < 0].sum())
    unequal = float(n[delta != 0].sum())
    out |= {
        "mean_length_diff": float(np.average(diff, weights=weight)),
        "median_length_diff": _weighted_median(diff, weight),
        "n_unequal": int(unequal),
        "longer_won": int(longer_won),
        "histogram": _histogram(diff, weight),
    }
    if not unequal:
        return out | {"longer_won_share": None, "reason": "every decided pair has responses of equal length"}
    share = longer_won / unequal
    low, high = (float(x[0]) for x in clopper_pearson([longer_won], [unequal]))
    out |= {"longer_won_share": share, "longer_won_ci": [low, high], "flagged": bool(low > band[1] or high < band[0])}
    return out


def length_taste(groups: pl.DataFrame, *, max_coef: float, significance: float, min_count: int, excluded: list[str], control_available: bool) -> dict:
    """Do annotators prefer length beyond what quality explains?

    A logistic regression in the spirit of length-controlled AlpacaEval: P(a response is chosen) on
    tanh(length difference / its SD), the order shown, and the other annotators'
    Dawid-Skene verdict on the same pair standing in for quality (judgements it settles
    with posterior >= 0.95). ``coef`` is the length term. Without enough such judgements
    the verdict term is dropped (``control`` says which). Judgements by ``excluded``
    (unreliable) annotators are left out: they are no evidence about anybody's taste.
    Grouped rows give the same estimate as one row per judgement.
    """
    out: dict = {"flagged": False, "max_coef": max_coef}
    trusted = groups.filter(pl.col("trusted")) if len(groups) else groups
    if trusted.is_empty() or trusted.get_column("n").sum() == 0:
        return out | {"coef": None, "reason": "no decided pairwise judgements by reliable annotators"}
    delta_all = groups.get_column("delta").to_numpy().astype(np.float64)
    sd = float(np.sqrt(np.cov(delta_all, aweights=groups.get_column("n").to_numpy(), bias=True))) if len(groups) > 1 else 0.0
    if sd == 0:
        return out | {"coef": None, "reason": "every pair has the same length difference; no length effect to estimate"}
    rows, control = trusted, "none"
    confident = trusted.filter(pl.col("consensus") != 0)
    if control_available and trusted.filter(pl.col("others")).get_column("n").sum() >= min_count and confident.get_column("n").sum() >= min_count:
        rows, control = confident, "Dawid-Skene verdict of the other annotators"
    n_fit = int(rows.get_column("n").sum())
    if n_fit < min_count:
        return out | {"coef": None, "reason": f"only {n_fit} decided judgements; need {min_count} to estimate a length effect"}
    features = {
        "intercept": np.ones(len(rows)),
        "length": np.tanh(rows.get_column("delta").to_numpy() / sd),
        "position": rows.get_column("r1_first").to_numpy().astype(np.float64),
    }
    if control != "none":
        features["consensus"] = rows.get_column("consensus").to_numpy().astype(np.float64)
    for name in ("position", "consensus"):  # a constant column is collinear with the intercept
        if name in features and np.ptp(features[name]) == 0:
            del features[name]
    if "consensus" not in features:
        control = "none"
    n = rows.get_column("n").to_numpy().astype(np.float64)
    params, se = logistic_regression(np.column_stack(list(features.values())), rows.get_column("k").to_numpy() / n, weights=n)
    if params is None:
        return out | {"coef": None, "reason": "the length regression did not converge (the outcome is perfectly separated)"}
    index = list(features).index("length")
    p = float(2 * stats.norm.sf(abs(params[index] / se[index])))
    return out | {
        "coef": float(params[index]),
        "coef_se": float(se[index]),
        "p_value": p,
        "control": control,
        "n_fit": n_fit,
        "excluded_annotators": excluded,
        "length_sd": sd,
        "flagged": bool(abs(params[index]) > max_coef and p < significance),
    }


def logistic_regression(
    x: np.ndarray, y: np.ndarray, *, weights: np.ndarray | None = None, max_iter: int = 50, tol: float = 1e-10
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Maximum-likelihood logistic regression by Newton-Raphson; (params, standard errors) or (None, None).

    ``weights``: rows stand for that many observations, ``y`` being their share of successes
    (grouped binomial data; the same estimate as the ungrouped rows). A dozen lines of
    numpy instead of statsmodels, which is a test-only dependency here (it is the oracle).
    """
    weights = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    beta = np.zeros(x.shape[1])
    for _ in range(max_iter):
        p = special.expit(x @ beta)
        w = weights * p * (1.0 - p)
        hessian = x.T @ (x * w[:, None])
        try:
            step = np.linalg.solve(hessian, x.T @ (weights * (y - p)))
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
    covariance = np.linalg.inv(x.T @ (x * (weights * p * (1.0 - p))[:, None]))
    return beta, np.sqrt(np.diag(covariance))


def position_bias(n: int, first: int, n_unknown_order: int, *, max_bias: float, significance: float, min_count: int) -> dict:
    """How often the first-shown response won, over all annotators: ``first`` of ``n`` decided
    judgements whose order is known (``n_unknown_order`` judgements do not record it)."""
    out: dict = {"flagged": False, "n": n, "n_unknown_order": n_unknown_order}
    if n == 0:
        return out | {"reason": "no decided pairwise judgement records which response was shown first"}
    test = stats.binomtest(first, n)
    ci = test.proportion_ci(0.95)
    rate = first / n
    out |= {"first_shown_rate": rate, "ci": [float(ci.low), float(ci.high)], "p_value": float(test.pvalue)}
    out["flagged"] = bool(n >= min_count and abs(rate - 0.5) > max_bias and test.pvalue < significance)
    return out


def label_imbalance(up: int, down: int, *, max_ratio: float) -> dict:
    """The up:down ratio of thumbs, and the KTO weights that bring it into TRL's recommended band.

    TRL's KTOTrainer wants (desirable_weight x #up) : (undesirable_weight x #down) between
    1:1 and 4:3; keeping one weight at 1, the other's range follows. Those weights correct
    any imbalance, so ``flagged`` (a refusal) is kept for ratios beyond ``max_ratio``, where
    one class is too thin to learn from whatever its weight.
    """
    total = up + down
    out: dict = {"flagged": False, "up": up, "down": down, "max_ratio": max_ratio}
    if up == 0 or down == 0:
        reason = "no thumbs feedback" if total == 0 else f"only {'up' if down == 0 else 'down'} ratings: KTO needs both"
        return out | {"ratio": None, "up_share": up / total if total else None, "reason": reason, "flagged": total > 0}
    ratio = up / down
    return out | {
        "ratio": ratio,
        "up_share": up / total,
        "kto_weights": {
            "desirable_weight": [down / up, 4.0 / 3.0 * down / up],
            "undesirable_weight": [0.75 * up / down, up / down],
            "note": "set ONE of these (the other stays 1.0) so desirable x #up : undesirable x #down lies in 1:1-4:3",
        },
        "flagged": bool(ratio > max_ratio or ratio < 1.0 / max_ratio),
    }


DRIFT_TABLES = {"thumbs_by_day": "thumbs", "thumbs_by_model": "thumbs", "pairwise_by_day": "pairwise", "pairwise_by_day_first_shown": "pairwise"}
DRIFT_CHECKED = ("thumbs_by_day", "thumbs_by_model", "pairwise_by_day_first_shown")


def drift(tables: dict[str, list[dict]], *, margin: float, significance: float, min_count: int) -> dict:
    """Rates by UTC day and by model version (``tables``: name -> rows ``{group, n, k}``);
    flagged when a group with ``min_count`` or more labels is ``margin`` or more away from
    the overall rate and a chi-square test of homogeneity says the difference is not chance.
    ``reasons_by_kind`` says which data (thumbs, pairwise) drifted."""
    out: dict = {"flagged": False, "reasons": [], "reasons_by_kind": {"thumbs": [], "pairwise": []}}
    for name in DRIFT_TABLES:
        out[name] = [r | {"rate": r["k"] / r["n"]} for r in tables.get(name, []) if r["n"]]
    for name in DRIFT_CHECKED:
        reason = _drifted(out[name], margin, significance, min_count)
        if reason:
            text = f"{name.replace('_', ' ')}: {reason}"
            out["reasons"].append(text)
            out["reasons_by_kind"][DRIFT_TABLES[name]].append(text)
    out["flagged"] = bool(out["reasons"])
    return out


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


def _histogram(diff: np.ndarray, weight: np.ndarray) -> dict:
    """Counts of chosen-minus-rejected length on symmetric bins clipped to the 99th percentile of |diff|."""
    limit = _weighted_quantile(np.abs(diff), weight, 0.99) or 1.0
    edges = np.linspace(-limit, limit, HISTOGRAM_BINS + 1)
    counts, _ = np.histogram(np.clip(diff, -limit, limit), bins=edges, weights=weight)
    return {"edges": [float(e) for e in edges], "counts": [int(round(c)) for c in counts]}


def _weighted_quantile(x: np.ndarray, weight: np.ndarray, q: float) -> float:
    order = np.argsort(x, kind="stable")
    cumulative = np.cumsum(weight[order])
    return float(x[order][np.searchsorted(cumulative, q * cumulative[-1])])


def _weighted_median(x: np.ndarray, weight: np.ndarray) -> float:
    return _weighted_quantile(x, weight, 0.5)
