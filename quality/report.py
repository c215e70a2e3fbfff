"""The audit: frames out of the store -> one JSON-able report -> the gate -> the quality_reports table.

:func:`audit` is the entry point; :func:`build_report` is the same thing on frames already
loaded, so every figure can be tested against literal tables without a database.
"""

from __future__ import annotations

import math
import warnings
from datetime import datetime, timezone

import duckdb
import numpy as np
import polars as pl

from prefstream import __version__
from prefstream.errors import PrefstreamError
from prefstream.quality import bias, reliability
from prefstream.quality.agreement import AgreementWarning, bootstrap_ci, cohen_kappa, fleiss_kappa, krippendorff_alpha
from prefstream.quality.frames import PAIRWISE_LABELS, THUMBS_LABELS, labels, load_pairwise, load_repeats, load_thumbs
from prefstream.times import parse_time
from prefstream.quality.gate import evaluate
from prefstream.quality.reports import save_report
from prefstream.quality.settings import Settings

KINDS = ("thumbs", "pairwise")
ANNOTATOR_FLAGS = ("low_agreement", "adversarial", "position_bias", "label_skew")


def audit(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    config: dict | None = None,
    store: bool = True,
) -> dict:
    """Audit the feedback with ts in [since, until) and return the report; with ``store`` it is
    saved in ``quality_reports`` and ``report["report_id"]`` is set.

    ``config`` is the ``[quality]`` table of the config file (None: defaults).
    """
    settings = Settings.from_config(config)
    since, until = parse_time(since, "since"), parse_time(until, "until")
    if since and until and since >= until:
        raise PrefstreamError(f"--since {since.isoformat()} is not before --until {until.isoformat()}")
    from prefstream.quality.expectations import run_expectations

    report = build_report(
        load_thumbs(con, since, until),
        load_pairwise(con, since, until),
        settings=settings,
        repeats=load_repeats(con, since, until),
        expectations=run_expectations(con, since, until),
        window={"since": since.isoformat() if since else None, "until": until.isoformat() if until else None},
    )
    if store:
        save_report(con, report)
    return report


def build_report(
    thumbs: pl.DataFrame,
    pairwise: pl.DataFrame,
    *,
    settings: Settings,
    repeats: dict | None = None,
    expectations: dict | None = None,
    window: dict | None = None,
) -> dict:
    """The report for already-loaded frames (see :mod:`prefstream.quality.frames` for their columns)."""
    g = settings.gate
    frames = {"thumbs": thumbs, "pairwise": pairwise}
    # Ties say nothing about which response is better, so Dawid-Skene models decided labels only.
    fits = {kind: reliability.dawid_skene(labels(frames[kind]).drop_nulls("label").filter(pl.col("label") != "tie")) for kind in KINDS}
    annotators = annotator_table(thumbs, pairwise, settings, fits)
    flagged = _flagged_share(annotators)
    report = {
        "report_id": None,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "prefstream_version": __version__,
        "window": window or {"since": None, "until": None},
        "settings": settings.as_dict(),
        "counts": {kind: _counts(frames[kind], kind) for kind in KINDS},
        "agreement": {kind: agreement_summary(frames[kind], kind, settings) for kind in KINDS},
        "annotators": annotators,
        "flagged_annotators": flagged,
        "bias": {
            "length_bias": bias.length_bias(
                pairwise, max_coef=g.max_length_coef, significance=g.significance, min_count=g.min_count,
                unreliable=frozenset(flagged["annotators"]), ds=fits["pairwise"],
            ),
            "position_bias": bias.position_bias(pairwise, max_bias=g.max_position_bias, significance=g.significance, min_count=g.min_count),
            "label_imbalance": bias.label_imbalance(thumbs, max_ratio=g.max_label_ratio),
            "drift": bias.drift(thumbs, pairwise, margin=g.drift_margin, significance=g.significance, min_count=g.min_count),
            **_repeats(repeats, g.max_contradiction_share),
        },
        "expectations": expectations or {"evaluated": 0, "failed": 0, "failed_names": [], "skipped": {"all": "not run"}},
    }
    report["gate"] = evaluate(report, g)
    return jsonable(report)


def _counts(frame: pl.DataFrame, kind: str) -> dict:
    expected = THUMBS_LABELS if kind == "thumbs" else PAIRWISE_LABELS
    unexpected = int(frame.get_column("label").null_count()) if len(frame) else 0
    out = {
        "annotations": len(frame) - unexpected,
        "items": frame.get_column("item_id").n_unique() if len(frame) else 0,
        "annotators": frame.get_column("annotator_id").n_unique() if len(frame) else 0,
        "unexpected_labels": unexpected,
    }
    if unexpected:
        raw = "rating" if kind == "thumbs" else "choice"
        seen = sorted({str(v) for v in frame.filter(pl.col("label").is_null()).get_column(raw).unique().to_list()})
        out["note"] = f"{unexpected} {kind} rows with {raw} outside {{{', '.join(expected)}}} ({', '.join(seen[:5])}) were left out of every statistic"
    return out


def agreement_summary(frame: pl.DataFrame, kind: str, settings: Settings) -> dict:
    """Krippendorff's alpha (nominal) with a bootstrap CI, Fleiss' kappa, and Cohen's kappa when
    exactly two annotators labelled; ``reasons`` says why a figure is missing."""
    long = labels(frame).drop_nulls("label")
    pairable = long.group_by("item_id").len().filter(pl.col("len") >= 2).height if len(long) else 0
    annotators = sorted(long.get_column("annotator_id").unique().to_list())
    out: dict = {
        "level": "nominal",
        "labels": list(THUMBS_LABELS if kind == "thumbs" else PAIRWISE_LABELS),
        "n": len(long),
        "n_items": long.get_column("item_id").n_unique(),
        "n_pairable_items": pairable,
        "n_annotators": len(annotators),
        "alpha": None,
        "alpha_ci": None,
        "fleiss_kappa": None,
        "cohen_kappa": None,
        "reasons": [],
    }
    if long.is_empty():
        out["reasons"].append(f"no {kind} feedback in the audited window")
        return out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AgreementWarning)
        out["alpha"] = krippendorff_alpha(long, "nominal")
        if math.isfinite(out["alpha"]):
            out["alpha_ci"] = list(bootstrap_ci(krippendorff_alpha, long, "nominal", n_boot=settings.bootstrap, seed=settings.seed))
        out["fleiss_kappa"] = fleiss_kappa(long)
        if len(annotators) == 2:
            out["cohen_kappa"] = cohen_kappa(long, annotators[0], annotators[1])
        elif len(annotators) < 2:
            out["reasons"].append(f"only one annotator ({annotators[0]}) labelled {kind}: agreement needs two")
    out["reasons"] += list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, AgreementWarning)))
    if len(annotators) > 2:
        out["reasons"].append(f"Cohen's kappa is for two annotators; {len(annotators)} labelled {kind} (see alpha and Fleiss' kappa)")
    return out


def annotator_table(thumbs: pl.DataFrame, pairwise: pl.DataFrame, settings: Settings, fits: dict) -> list[dict]:
    """One dict per annotator: volume, agreement with the leave-one-out consensus, the Dawid-Skene
    confusion estimate (``fits``: kind -> fit or None), first-shown and up rates,
    ``reliability`` in [0, 1] (None without overlapping labels) and ``flags``."""
    g = settings.gate
    per: dict[str, dict] = {}
    for kind, frame in (("thumbs", thumbs), ("pairwise", pairwise)):
        long = labels(frame).drop_nulls("label")
        if long.is_empty():
            continue
        overlap = long.filter(pl.len().over("item_id") >= 2).group_by("annotator_id").len("n_overlap")
        volume = long.group_by("annotator_id").len("n").join(overlap, on="annotator_id", how="left").fill_null(0)
        consensus = {r["annotator_id"]: r for r in reliability.consensus_agreement(long).to_dicts()}
        ds_rows = _ds_rows(fits[kind])
        for row in volume.sort("annotator_id").to_dicts():
            entry = per.setdefault(row["annotator_id"], {"annotator_id": row["annotator_id"], "flags": [], "volume": {}})
            entry["volume"][kind] = row["n"]
            figures = {"n": row["n"], "n_overlap": row["n_overlap"]}
            mine = consensus.get(row["annotator_id"], {})
            figures |= {k: mine.get(k) for k in ("compared", "agreement", "kappa")}
            figures["consensus_informedness"] = mine.get("informedness")
            figures |= ds_rows.get(row["annotator_id"], {"informedness": None, "confusion": None})
            _agreement_flags(entry, figures, g)
            entry[kind] = figures
    skew = reliability.label_skew(thumbs, min_count=g.min_count, margin=g.label_skew_margin, significance=g.significance)
    for r in skew.to_dicts() if len(skew) else []:
        entry = per[r["annotator_id"]]["thumbs"]
        entry |= {"up_rate": r["up_rate"], "typical_up_rate": r["typical_rate"], "up_rate_ci": [r["ci_low"], r["ci_high"]], "label_skew_p": r["p_value"]}
        if r["label_skew"]:
            per[r["annotator_id"]]["flags"].append("label_skew")
    position = reliability.position_rates(pairwise, min_count=g.min_count, margin=g.position_margin, significance=g.significance)
    for r in position.to_dicts() if len(position) else []:
        entry = per[r["annotator_id"]]["pairwise"]
        entry |= {"first_shown_n": r["n"], "first_shown_rate": r["first_shown_rate"], "first_shown_ci": [r["ci_low"], r["ci_high"]], "position_p": r["p_value"]}
        if r["position_bias"]:
            per[r["annotator_id"]]["flags"].append("position_bias")
    for entry in per.values():
        entry["volume"]["total"] = sum(entry["volume"].values())
        entry["reliability"] = _reliability(entry)
        if "adversarial" in entry["flags"]:  # the more specific diagnosis of the same symptom
            entry["flags"] = [f for f in entry["flags"] if f != "low_agreement"]
        entry["flags"] = [f for f in ANNOTATOR_FLAGS if f in entry["flags"]]
    return [per[a] for a in sorted(per)]


def _ds_rows(ds: reliability.DawidSkene | None) -> dict[str, dict]:
    if ds is None:
        return {}
    informedness = ds.informedness()
    return {
        a: {
            "informedness": float(informedness[i]),
            "confusion": {t: {l: float(ds.confusion[i, ti, li]) for li, l in enumerate(ds.classes)} for ti, t in enumerate(ds.classes)},
        }
        for i, a in enumerate(ds.annotators)
    }


def _agreement_flags(entry: dict, figures: dict, g) -> None:
    """low_agreement: Dawid-Skene informedness below ``g.low_agreement``; adversarial: at or below
    ``g.adversarial`` on *both* readings, Dawid-Skene and agreement with the leave-one-out
    consensus (two independent signs of "systematically flipped")."""
    informedness = figures["informedness"]
    if informedness is None or figures["n_overlap"] < g.min_count:
        return
    loo = figures["consensus_informedness"]
    if informedness <= g.adversarial and loo is not None and loo <= g.adversarial:
        entry["flags"].append("adversarial")
    elif informedness < g.low_agreement:
        entry["flags"].append("low_agreement")


def _reliability(entry: dict) -> float | None:
    """Informedness clipped to [0, 1], averaged over kinds weighted by overlapping labels."""
    pairs = [
        (max(0.0, min(1.0, entry[k]["informedness"])), entry[k]["n_overlap"])
        for k in KINDS
        if k in entry and entry[k]["informedness"] is not None and entry[k]["n_overlap"] > 0
    ]
    if not pairs:
        return None
    return float(np.average([p for p, _ in pairs], weights=[w for _, w in pairs]))


def _flagged_share(annotators: list[dict]) -> dict:
    flagged = [a for a in annotators if {"low_agreement", "adversarial"} & set(a["flags"])]
    total = sum(a["volume"]["total"] for a in annotators)
    share = sum(a["volume"]["total"] for a in flagged) / total if total else None
    return {"annotators": [a["annotator_id"] for a in flagged], "share": share}


def _repeats(repeats: dict | None, max_share: float) -> dict:
    if repeats is None:
        return {
            "duplicates": {"flagged": False, "reason": "not computed (no store)"},
            "contradictions": {"flagged": False, "groups": 0, "share": 0.0, "reason": "not computed (no store)"},
        }
    current = sum(repeats[k]["current"] for k in KINDS)
    groups = sum(repeats[k]["contradictions"] for k in KINDS)
    share = groups / current if current else 0.0
    return {
        "duplicates": {
            "flagged": any(repeats[k]["content_duplicates"] for k in KINDS),
            **{k: {f: repeats[k][f] for f in ("events", "current", "content_duplicates", "retries")} for k in KINDS},
            "dead_letters": repeats["dead_letters"],
        },
        "contradictions": {
            "flagged": share > max_share,
            "groups": groups,
            "share": share,
            **{k: repeats[k]["contradictions"] for k in KINDS},
        },
    }


def jsonable(value):
    """Plain JSON types all the way down: NaN and infinities become None, numpy scalars Python ones."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
