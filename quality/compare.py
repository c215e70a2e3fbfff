"""Model against model: the win rate of B over A, and AlpacaEval 2's length-controlled win rate.

Every pairwise judgement whose two models are A and B counts (people, experts and judge
models alike, each reported apart and together), oriented so that ``outcome`` is 1 when B
won, 0.5 for a tie and 0 when A won.

- **Win rate**: the mean outcome, with a percentile bootstrap interval over judgements.
- **Length-controlled win rate** (Dubois et al. 2024, AlpacaEval 2's GLM without its
  instruction-difficulty term, which needs many models): a logistic regression of the outcome
  on ``tanh(d / sd(d))`` plus an intercept, where ``d`` is B's length minus A's in characters
  and ``sd`` its sample standard deviation (not centred: zero must mean "equally long"); the
  win rate predicted at ``d = 0`` is ``sigmoid(intercept)``, its standard error by the delta
  method from the model-based covariance. Ties enter as outcome 0.5 (the Bernoulli likelihood
  with a fractional target, as AlpacaEval's soft preferences do).
"""

from __future__ import annotations

from html import escape

import numpy as np
import polars as pl
from scipy.special import expit

from prefstream.errors import PrefstreamError

Z95 = 1.959963984540054


def win_rate(outcomes, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean outcome with a percentile bootstrap interval; counts of B wins, ties and A wins."""
    y = np.asarray(outcomes, dtype=float)
    if y.size == 0:
        raise ValueError("no judgements")
    rng = np.random.default_rng(seed)
    # Resampled means in chunks, so memory stays at ~1M indices whatever the number of judgements.
    chunk = max(1, 1_000_000 // y.size)
    means = np.concatenate([y[rng.integers(0, y.size, (min(chunk, n_boot - i), y.size))].mean(axis=1) for i in range(0, n_boot, chunk)])
    tail = (1 - level) / 2
    return {
        "n": int(y.size),
        "b_wins": int((y == 1).sum()),
        "ties": int((y == 0.5).sum()),
        "a_wins": int((y == 0).sum()),
        "win_rate": float(y.mean()),
        "ci": [float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))],
        "ci_level": level,
        "n_boot": n_boot,
    }


def fit_logit(x: np.ndarray, y: np.ndarray, *, max_iter: int = 100, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray, bool]:
    """Maximum-likelihood logistic regression by Newton's method: ``(beta, covariance, converged)``.

    Hand-written because it is a dozen lines: statsmodels (which gives the same numbers, see
    the tests) is too heavy a runtime dependency for one regression, and scikit-learn's
    LogisticRegression penalises by default and returns no standard errors. ``y`` may hold
    fractional targets (ties as 0.5). ``converged`` is false under (quasi-)separation, where
    the maximum lies at infinity.
    """
    beta = np.zeros(x.shape[1])
    for _ in range(max_iter):
        p = expit(x @ beta)
        hessian = x.T @ (x * (p * (1 - p))[:, None])
        try:
            step = np.linalg.solve(hessian, x.T @ (y - p))
        except np.linalg.LinAlgError:
            break
        beta = beta + step
        if np.abs(beta).max() > 30:  # sigmoid(30) = 1 - 1e-13: the data separate
            break
        if np.abs(step).max() < tol:
            p = expit(x @ beta)
            return beta, np.linalg.inv(x.T @ (x * (p * (1 - p))[:, None])), True
    return beta, np.full((x.shape[1], x.shape[1]), np.nan), False


def length_controlled(outcomes, len_a, len_b) -> dict:
    """AlpacaEval 2's GLM win rate at zero length difference, with its delta-method standard error."""
    y = np.asarray(outcomes, dtype=float)
    d = np.asarray(len_b, dtype=float) - np.asarray(len_a, dtype=float)
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    if sd > 0:
        x = np.column_stack([np.ones_like(d), np.tanh(d / sd)])
    else:  # every pair has the same length difference: nothing to control for
        x = np.ones((y.size, 1))
    beta, cov, converged = fit_logit(x, y)
    # Under separation (length alone decides every judgement) there is no finite estimate.
    lc = float(expit(beta[0])) if converged else None
    se_logit = float(np.sqrt(cov[0, 0])) if converged else None
    return {
        "lc_win_rate": lc,
        "se": lc * (1 - lc) * se_logit if converged else None,
        # on the logit scale, mapped back: stays inside [0, 1]
        "ci": [float(expit(beta[0] + s * Z95 * se_logit)) for s in (-1, 1)] if converged else None,
        "intercept": float(beta[0]) if converged else None,
        "length_coef": float(beta[1]) if converged and x.shape[1] > 1 else None,
        "length_diff_sd_chars": sd,
        "mean_length_diff_chars": float(d.mean()),
        "converged": converged,
        "not_estimable": None if converged else (
            "every judgement went the same way" if np.all(y == y[0]) else "the length difference separates the outcomes"
        ),
    }


def oriented(frame: pl.DataFrame, model_a: str, model_b: str) -> pl.DataFrame:
    """Judgement rows (``choice``, ``model_a``, ``model_b``, ``len_a``, ``len_b``) turned to A = ``model_a``:
    columns ``outcome`` (1 B won, 0.5 tie, 0 A won), ``len_a``, ``len_b`` and the rest unchanged."""
    swapped = pl.col("model_a") == model_b
    won = pl.when(pl.col("choice") == "tie").then(0.5).when(pl.col("choice") == "b").then(1.0).otherwise(0.0)
    return frame.with_columns(
        outcome=pl.when(swapped).then(1 - won).otherwise(won),
        len_a=pl.when(swapped).then(pl.col("len_b")).otherwise(pl.col("len_a")),
        len_b=pl.when(swapped).then(pl.col("len_a")).otherwise(pl.col("len_b")),
    )


def compare_frame(frame: pl.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Per annotator kind and for all judgements together: win rate and length-controlled win rate.

    ``frame`` has ``outcome``, ``len_a``, ``len_b`` and ``annotator_kind`` (see :func:`oriented`).
    """
    groups = {"all": frame} | {kind: part for (kind,), part in sorted(frame.group_by("annotator_kind"), key=lambda g: g[0])}
    out = {}
    for name, part in groups.items():
        figures = win_rate(part["outcome"], n_boot=n_boot, seed=seed)
        figures["length_controlled"] = length_controlled(part["outcome"], part["len_a"], part["len_b"])
        figures["mean_length_chars"] = {"a": float(part["len_a"].mean()), "b": float(part["len_b"].mean())}
        out[name] = figures
    return out


_PAIR_SQL = """
SELECT choice, model_a, model_b, length(response_a) AS len_a, length(response_b) AS len_b,
       annotator_kind, annotator_id, json_extract_string(metadata, '$.request_id') AS request_id
FROM pairwise_current
WHERE (model_a = $a AND model_b = $b) OR (model_a = $b AND model_b = $a)"""


def compare(con, model_a: str, model_b: str, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Compare two models on the current pairwise judgements in the store ``con`` reads.

    Raises :class:`PrefstreamError` when no judgement pits them against each other.
    """
    if model_a == model_b:
        raise PrefstreamError(f"--model-a and --model-b are both {model_a}; compare two different models")
    frame = con.execute(_PAIR_SQL, {"a": model_a, "b": model_b}).pl()
    if frame.is_empty():
        raise PrefstreamError(
            f"no pairwise feedback compares {model_a} with {model_b}; emit requests with `prefstream generate` "
            "and answer them (people, or `prefstream judge`), then land the judgements"
        )
    frame = oriented(frame, model_a, model_b)
    return {
        "model_a": model_a,
        "model_b": model_b,
        "judgements": frame.height,
        "from_requests": int(frame["request_id"].is_not_null().sum()),
        "annotators": frame["annotator_id"].n_unique(),
        "by_kind": compare_frame(frame, n_boot=n_boot, seed=seed),
    }


def b_won(result: dict, kind: str = "all") -> bool | None:
    """Whether B beat A: the length-controlled win rate's interval above 0.5 (True), below (False),
    or straddling it (None); the bootstrap interval of the raw win rate where the GLM did not converge."""
    figures = result["by_kind"][kind]
    low, high = figures["length_controlled"]["ci"] or figures["ci"]
    return True if low > 0.5 else False if high < 0.5 else None


def rate(value: float | None) -> str:
    """A win rate for people: three decimals, or "n/a" where it could not be estimated."""
    return "n/a" if value is None else f"{value:.3f}"


def summary_lines(result: dict) -> list[str]:
    """The terminal form: one line per annotator kind."""
    lines = [f"{result['model_b']} (B) vs {result['model_a']} (A): {result['judgements']} judgements, {result['annotators']} annotators"]
    for kind, f in result["by_kind"].items():
        lc = f["length_controlled"]
        lc_text = f"{lc['lc_win_rate']:.3f} ± {lc['se']:.3f} (SE)" if lc["converged"] else f"not estimable ({lc['not_estimable']})"
        lines.append(
            f"  {kind:<7} n={f['n']:<5} B wins {f['b_wins']}, ties {f['ties']}, A wins {f['a_wins']}; "
            f"win rate {f['win_rate']:.3f} [{f['ci'][0]:.3f}, {f['ci'][1]:.3f}]; length-controlled {lc_text}; "
            f"mean length A {f['mean_length_chars']['a']:.0f} / B {f['mean_length_chars']['b']:.0f} chars"
        )
    return lines


def html_section(result: dict) -> str:
    """An HTML ``<section>`` with the comparison table (for reports; no scripts, no external files)."""
    rows = []
    for kind, f in result["by_kind"].items():
        lc = f["length_controlled"]
        se = f"{lc['se']:.3f}" if lc["se"] is not None else "n/a"
        cells = [
            escape(kind), f["n"], f["b_wins"], f["ties"], f["a_wins"], f"{f['win_rate']:.3f}",
            f"{f['ci'][0]:.3f} – {f['ci'][1]:.3f}", rate(lc["lc_win_rate"]), se,
            f"{f['mean_length_chars']['a']:.0f} / {f['mean_length_chars']['b']:.0f}",
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" if i == 0 else f'<td class="num">{c}</td>' for i, c in enumerate(cells)) + "</tr>")
    head = ["annotators", "n", "B wins", "ties", "A wins", "win rate", "95% CI", "length-controlled", "SE", "mean chars A / B"]
    header = "".join(f"<th>{h}</th>" if i == 0 else f'<th class="num">{h}</th>' for i, h in enumerate(head))
    return (
        f"<section><h2>{escape(result['model_b'])} (B) vs {escape(result['model_a'])} (A)</h2>"
        f"<p class=note>{result['judgements']} judgements; ties count half; length-controlled: AlpacaEval 2's GLM "
        "predicted at equal length.</p>"
        f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


__all__ = ["win_rate", "fit_logit", "length_controlled", "oriented", "compare_frame", "compare", "b_won", "rate", "summary_lines", "html_section"]
