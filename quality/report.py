"""The audit: one scan of the window -> aggregates -> one JSON-able report -> the gate -> ``quality_reports``.

:func:`audit` is the entry point. Every figure comes from the aggregates of
:class:`prefstream.quality.sql.Window` (per item pattern, per annotator, per day, per
length difference), so memory follows the number of annotators and patterns, not events.
"""

from __future__ import annotations

import math
import time
import warnings
from datetime import datetime, timezone

import duckdb
import numpy as np
import polars as pl

from prefstream import __version__
from prefstream.errors import PrefstreamError
from prefstream.quality import bias, expectations, reliability
from prefstream.quality.agreement import AgreementWarning, pair_pattern_kappa, pattern_agreement, pattern_counts
from prefstream.quality.gate import gate_for
from prefstream.quality.reports import save_report
from prefstream.quality.settings import Settings
from prefstream.quality.sql import KINDS, LABELS, Window
from prefstream.times import parse_time

ANNOTATOR_FLAGS = ("low_agreement", "adversarial", "position_bias", "label_skew")
MAX_FLAGGED_DETAIL = 1000  # flagged annotators reported in full; beyond, counted (10^5 flagged end users is a finding, not a table)
MAX_NAMES = 20  # annotator ids listed inline in summaries


def audit(
    source,
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    snapshot: int | None = None,
    config: dict | None = None,
    save: bool = True,
    progress=None,
) -> dict:
    """Audit the feedback with ts in [since, until) and return the report.

    ``source``: a :class:`prefstream.store.Store` (read as of ``snapshot``, default the
    current one; the report is saved through a write transaction) or an open connection
    (read as it stands). ``config`` is the ``[quality]`` table of the config file (None:
    defaults). ``progress(text)`` hears what the audit is doing. With ``save`` the report
    is stored in ``quality_reports`` and ``report["report_id"]`` is set.
    """
    settings = Settings.from_config(config)
    since, until = parse_time(since, "since"), parse_time(until, "until")
    if since and until and since >= until:
        raise PrefstreamError(f"--since {since.isoformat()} is not before --until {until.isoformat()}")
    from prefstream.store import Store

    store = source if isinstance(source, Store) else None
    if store is None and snapshot is not None:
        raise PrefstreamError("audit as of a snapshot needs the store, not a connection: audit(store, snapshot=N)")
    con = store.read(snapshot=snapshot) if store else source
    try:
        report = build_report(con, since=since, until=until, settings=settings, progress=progress or (lambda text: None))
    finally:
        if store:
            con.close()
    report["store"] = store.location.redacted() if store else None
    if save:
        save_report(store or con, report)
    return report


def build_report(con: duckdb.DuckDBPyConnection, *, since: datetime | None, until: datetime | None, settings: Settings, progress) -> dict:
    """The report of the window [since, until) on ``con`` (see :func:`audit`)."""
    from prefstream.store import snapshot_of

    started = time.perf_counter()
    steps = ("reading the window", "agreement", "annotators", "bias", "expectations")

    def step(i: int) -> None:
        progress(f"audit: {steps[i]} ({i + 1}/{len(steps)}, {time.perf_counter() - started:.0f} s)")

    g = settings.gate
    step(0)
    w = Window(con, since, until, settings)
    try:
        counts = {kind: _counts(w.counts(kind), kind) for kind in KINDS}
        step(1)
        agreement = {kind: agreement_summary(w, kind, settings) for kind in KINDS}
        judges = judges_summary(w, settings, counts)
        step(2)
        table, fits = annotator_frame(w, settings)
        flagged = _flagged(table)
        step(3)
        ds = fits.get("pairwise")
        groups = w.length_groups(_log_confusion(ds), tuple(np.log(ds.prior)) if ds else (0.0, 0.0), flagged["all"])
        events = {kind: w.events(kind) for kind in KINDS}
        repeats = {kind: events[kind]["repeats"] for kind in KINDS}
        report_bias = {
            "length_skew": bias.length_skew(groups, band=(g.min_longer_share, g.max_longer_share)),
            "length_taste": bias.length_taste(
                groups, max_coef=g.max_length_coef, significance=g.significance, min_count=g.min_count,
                excluded=flagged["all"][:MAX_NAMES], control_available=ds is not None,
            ),
            "position_bias": bias.position_bias(*w.position_totals(), max_bias=g.max_position_bias, significance=g.significance, min_count=g.min_count),
            "label_imbalance": bias.label_imbalance(*w.label_totals(), max_ratio=g.max_label_ratio),
            "drift": bias.drift(w.drift_tables(), margin=g.drift_margin, significance=g.significance, min_count=g.min_count),
            **_repeats(repeats, g.max_contradiction_share),
        }
        step(4)
        results = {kind: events[kind]["expectations"] for kind in KINDS if events[kind]["rows"]}
        skipped = {kind: f"no {kind} rows in the audited window" for kind in KINDS if not events[kind]["rows"]}
        timestamps = {kind: w.timestamps(kind) for kind in KINDS}
        dead = w.dead_letters()
    finally:
        w.close()
    received = sum(repeats[k]["events"] + timestamps[k]["implausible"] for k in KINDS)
    report = {
        "report_id": None,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "prefstream_version": __version__,
        "snapshot": snapshot_of(con),
        "window": {"since": since.isoformat() if since else None, "until": until.isoformat() if until else None},
        "settings": settings.as_dict(),
        "counts": counts,
        "timestamps": _timestamps(timestamps, settings),
        "agreement": agreement,
        "judges": judges,
        "annotators": _detail(table, fits, settings),
        "annotator_summary": _annotator_summary(table, settings),
        "flagged_annotators": flagged["section"],
        "bias": report_bias,
        "store_health": {"dead_letters": dead, "messages": received + dead, "dead_letter_share": dead / (received + dead) if received + dead else None,
                         "note": "dead letters received in the window, among them and the window's events"},
        "expectations": expectations.report_section(results, skipped),
        "seconds": round(time.perf_counter() - started, 2),
    }
    report["gate"] = gate_for(report, "all", settings=settings).as_dict()
    report["verdicts"] = {kind: gate_for(report, kind, settings=settings).passed for kind in ("dpo", "kto")}
    return jsonable(report)


def _counts(raw: dict, kind: str) -> dict:
    out = {k: raw[k] for k in ("annotations", "items", "annotators", "unexpected_labels")}
    if raw["unexpected_labels"]:
        field = "rating" if kind == "thumbs" else "choice"
        out["note"] = (f"{raw['unexpected_labels']} {kind} rows with {field} outside the expected set "
                       f"({', '.join(map(str, raw['unexpected_values']))}) were left out of every statistic")
    return out


# --- agreement --------------------------------------------------------------------------


def agreement_summary(w: Window, kind: str, settings: Settings, where: str = "TRUE") -> dict:
    """Krippendorff's alpha (nominal) with a bootstrap CI, Fleiss' kappa, and Cohen's kappa when
    exactly two annotators labelled; ``reasons`` says why a figure is missing."""
    patterns = w.patterns(kind, where)
    k = len(LABELS[kind])
    matrix = patterns.select([f"c{v}" for v in range(k)]).to_numpy() if len(patterns) else np.zeros((0, k), dtype=np.int64)
    multiplicity = patterns.get_column("m").to_numpy() if len(patterns) else np.zeros(0)
    per_item = matrix.sum(1)
    annotators = [r[0] for r in w.rows(f"SELECT DISTINCT annotator_id FROM qa_{kind} WHERE label IS NOT NULL AND {where} ORDER BY 1 LIMIT 3")]
    n_annotators = w.rows(f"SELECT count(DISTINCT annotator_id) FROM qa_{kind} WHERE label IS NOT NULL AND {where}")[0][0]
    out: dict = {
        "level": "nominal",
        "labels": list(LABELS[kind]),
        "n": int((per_item * multiplicity).sum()),
        "n_items": int(multiplicity.sum()),
        "n_pairable_items": int(multiplicity[per_item >= 2].sum()),
        "n_annotators": n_annotators,
        "alpha": None,
        "alpha_ci": None,
        "fleiss_kappa": None,
        "cohen_kappa": None,
        "reasons": [],
    }
    if out["n"] == 0:
        out["reasons"].append(f"no {kind} feedback in the audited window")
        return out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AgreementWarning)
        figures = pattern_agreement(pattern_counts(matrix, np.arange(k)), multiplicity, n_boot=settings.bootstrap, seed=settings.seed)
        out["alpha"], out["fleiss_kappa"] = figures["alpha"], figures["fleiss_kappa"]
        out["alpha_ci"] = list(figures["alpha_ci"]) if all(math.isfinite(x) for x in figures["alpha_ci"]) else None
        if n_annotators == 2:
            out["cohen_kappa"] = _kappa(w.pair_confusion(kind, *annotators), k, tuple(annotators))
        elif n_annotators < 2:
            out["reasons"].append(f"only one annotator ({annotators[0]}) labelled {kind}: agreement needs two")
    out["reasons"] += list(dict.fromkeys(str(m.message) for m in caught if issubclass(m.category, AgreementWarning)))
    if n_annotators > 2:
        out["reasons"].append(f"Cohen's kappa is for two annotators; {n_annotators} labelled {kind} (see alpha and Fleiss' kappa)")
    return out


def _kappa(rows: list[tuple], k: int, names: tuple[str, str]) -> float:
    confusion = np.zeros((k, k))
    for a, b, n in rows:
        confusion[a, b] = n
    return pair_pattern_kappa(confusion, names)


def judges_summary(w: Window, settings: Settings, counts: dict) -> dict:
    """Human judges (annotator_kind user / expert) and model judges (annotator_kind model)
    apart, and how often a model judge's verdict matches the humans' on items both judged."""
    out: dict = {}
    for kind in KINDS:
        models = w.rows(f"SELECT count(label) FILTER (NOT human), count(label) FILTER (human) FROM qa_{kind}")[0]
        section: dict = {"model_labels": models[0], "human_labels": models[1]}
        if models[0] and models[1]:
            section["human"] = agreement_summary(w, kind, settings, "human")
            section["model"] = agreement_summary(w, kind, settings, "NOT human")
            section["human_vs_model"] = _human_vs_model(w.human_model_confusion(kind), len(LABELS[kind]))
        else:
            section["note"] = f"no model judges labelled {kind}" if not models[0] else f"only model judges labelled {kind}"
        out[kind] = section
    return out


def _human_vs_model(rows: list[tuple], k: int) -> dict:
    confusion = np.zeros((k, k))
    for a, b, n in rows:
        confusion[a, b] = n
    shared = int(confusion.sum())
    if not shared:
        return {"shared_items": 0, "agreement": None, "kappa": None, "reason": "no item has both a human and a model verdict"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AgreementWarning)
        kappa = pair_pattern_kappa(confusion, ("humans", "models"))
    return {"shared_items": shared, "agreement": float(np.trace(confusion) / shared), "kappa": kappa if math.isfinite(kappa) else None,
            "note": "per item, the humans' majority label against the model judges' (items where either side ties are left out)"}


# --- annotators -------------------------------------------------------------------------


def annotator_frame(w: Window, settings: Settings) -> tuple[pl.DataFrame, dict]:
    """One row per annotator (all of them; the report keeps a bounded part) and the Dawid-Skene
    fit per kind. Ties are no evidence of which response is better, so pairwise consensus and
    Dawid-Skene read decided labels only."""
    g = settings.gate
    frames, fits = [], {}
    for kind in KINDS:
        volume = w.volumes(kind)
        if volume.is_empty():
            fits[kind] = None
            continue
        long = w.overlap_patterns(kind, decided=kind == "pairwise")
        fit = reliability.dawid_skene(long) if len(long) else None
        fits[kind] = fit
        consensus = reliability.consensus_agreement(long) if len(long) else pl.DataFrame(schema={"annotator_id": pl.String})
        frame = volume.join(consensus.rename({"informedness": "consensus_informedness"}, strict=False), on="annotator_id", how="left")
        ds = pl.DataFrame({"annotator_id": fit.annotators, "informedness": fit.informedness()}) if fit else pl.DataFrame(schema={"annotator_id": pl.String, "informedness": pl.Float64})
        frame = frame.join(ds, on="annotator_id", how="left")
        for name in ("compared", "agreement", "kappa", "consensus_informedness", "informedness"):
            if name not in frame.columns:
                frame = frame.with_columns(pl.lit(None, pl.Float64).alias(name))
        judged = pl.col("informedness").is_not_null() & (pl.col("n_overlap") >= g.min_count)
        adversarial = judged & (pl.col("informedness") <= g.adversarial) & (pl.col("consensus_informedness") <= g.adversarial).fill_null(False)
        frame = frame.with_columns(adversarial.alias("adversarial"), (judged & ~adversarial & (pl.col("informedness") < g.low_agreement)).alias("low_agreement"))
        if kind == "pairwise":
            rates = reliability.position_rates(w.position_by_annotator(), min_count=g.min_count, margin=g.position_margin, significance=g.significance)
            names = {"n": "first_shown_n", "ci_low": "first_shown_ci_low", "ci_high": "first_shown_ci_high", "p_value": "position_p"}
        else:
            rates = reliability.label_skew(w.up_by_annotator(), min_count=g.min_count, margin=g.label_skew_margin, significance=g.significance)
            names = {"n": "up_n", "ci_low": "up_rate_ci_low", "ci_high": "up_rate_ci_high", "p_value": "label_skew_p"}
        if len(rates):
            frame = frame.join(rates.drop("first").rename(names), on="annotator_id", how="left")
        frames.append(frame.rename({c: f"{kind}.{c}" for c in frame.columns if c != "annotator_id"}))
    if not frames:
        return pl.DataFrame(schema={"annotator_id": pl.String, "total": pl.Int64, "reliability": pl.Float64, "flagged": pl.Boolean, "human": pl.Boolean}), fits
    table = frames[0]
    for frame in frames[1:]:
        table = table.join(frame, on="annotator_id", how="full", coalesce=True)
    for kind in KINDS:
        for name, dtype in (("n", pl.Int64), ("n_overlap", pl.Int64), ("informedness", pl.Float64), ("human", pl.Boolean),
                            ("adversarial", pl.Boolean), ("low_agreement", pl.Boolean)):
            if f"{kind}.{name}" not in table.columns:
                table = table.with_columns(pl.lit(None, dtype).alias(f"{kind}.{name}"))
    # Reliability: Dawid-Skene informedness clipped to [0, 1], averaged over kinds weighted by overlapping labels.
    weights = [pl.when(pl.col(f"{k}.informedness").is_not_null()).then(pl.col(f"{k}.n_overlap").fill_null(0)).otherwise(0) for k in KINDS]
    values = [pl.col(f"{k}.informedness").clip(0, 1).fill_null(0) for k in KINDS]
    total_weight = weights[0] + weights[1]
    table = table.with_columns(
        (pl.col("thumbs.n").fill_null(0) + pl.col("pairwise.n").fill_null(0)).alias("total"),
        pl.when(total_weight > 0).then((values[0] * weights[0] + values[1] * weights[1]) / total_weight).alias("reliability"),
        pl.coalesce("thumbs.human", "pairwise.human").alias("human"),
    )
    for kind in KINDS:
        table = table.with_columns((pl.col(f"{kind}.low_agreement") | pl.col(f"{kind}.adversarial")).fill_null(False).alias(f"{kind}.unreliable"))
    flag_columns = [c for c in table.columns if c.split(".")[-1] in ANNOTATOR_FLAGS]
    table = table.with_columns(pl.any_horizontal([pl.col(c).fill_null(False) for c in flag_columns]).alias("flagged"))
    return table.sort(["total", "annotator_id"], descending=[True, False]), fits


def _flags(row: dict) -> list[str]:
    return [f for f in ANNOTATOR_FLAGS if any(row.get(f"{k}.{f}") for k in KINDS)]


def _detail(table: pl.DataFrame, fits: dict, settings: Settings) -> list[dict]:
    """Flagged annotators (up to MAX_FLAGGED_DETAIL) and the top ``report_annotators`` by volume, in full."""
    if table.is_empty():
        return []
    chosen = pl.concat([table.filter(pl.col("flagged")).head(MAX_FLAGGED_DETAIL), table.head(settings.report_annotators)]).unique("annotator_id", keep="first", maintain_order=True)
    names = {kind: np.asarray(fit.annotators) for kind, fit in fits.items() if fit}  # sorted: Dawid-Skene codes annotators in order

    def confusion(kind: str, annotator: str):
        if kind not in names:
            return None
        i = int(np.searchsorted(names[kind], annotator))
        return fits[kind].confusion[i].tolist() if i < len(names[kind]) and names[kind][i] == annotator else None

    out = []
    for row in chosen.to_dicts():
        entry = {
            "annotator_id": row["annotator_id"],
            "judge": "human" if row["human"] is not False else "model",
            "flags": _flags(row),
            "volume": {k: int(row[f"{k}.n"] or 0) for k in KINDS} | {"total": int(row["total"])},
            "reliability": row["reliability"],
        }
        for kind in KINDS:
            if not row.get(f"{kind}.n"):
                continue
            figures = {name.split(".", 1)[1]: value for name, value in row.items() if name.startswith(f"{kind}.")}
            for drop in ("human", "unreliable", *ANNOTATOR_FLAGS):
                figures.pop(drop, None)
            figures["confusion"] = confusion(kind, row["annotator_id"])
            out_kind = {k: v for k, v in figures.items() if not k.endswith(("_ci_low", "_ci_high"))}
            for rate in ("first_shown", "up_rate"):
                if f"{rate}_ci_low" in figures and figures[f"{rate}_ci_low"] is not None:
                    out_kind[f"{rate}_ci"] = [figures[f"{rate}_ci_low"], figures[f"{rate}_ci_high"]]
            if "up_rate" in out_kind:
                out_kind["typical_up_rate"] = out_kind.pop("typical_rate", None)
            entry[kind] = out_kind
        out.append(entry)
    return out


def _annotator_summary(table: pl.DataFrame, settings: Settings) -> dict:
    if table.is_empty():
        return {"total": 0, "detailed": 0, "flagged": 0, "by_judge": {"human": 0, "model": 0}, "tail": None}
    detailed = pl.concat([table.filter(pl.col("flagged")).head(MAX_FLAGGED_DETAIL), table.head(settings.report_annotators)]).get_column("annotator_id").unique()
    tail = table.filter(~pl.col("annotator_id").is_in(detailed.implode()))
    reliability_values = tail.get_column("reliability").drop_nulls()
    return {
        "total": len(table),
        "detailed": len(detailed),
        "flagged": int(table.get_column("flagged").sum()),
        "by_judge": {"human": int(table.get_column("human").fill_null(True).sum()), "model": int((~table.get_column("human").fill_null(True)).sum())},
        "tail": {
            "annotators": len(tail),
            "labels": int(tail.get_column("total").sum()),
            "labels_per_annotator_median": float(tail.get_column("total").median()) if len(tail) else None,
            "flagged": int(tail.get_column("flagged").sum()),
            "reliability": {
                "estimated": len(reliability_values),
                **({f"p{q}": float(reliability_values.quantile(q / 100)) for q in (10, 50, 90)} if len(reliability_values) else {}),
            },
        } if len(tail) else None,
    }


def _flagged(table: pl.DataFrame) -> dict:
    """Annotators flagged low_agreement / adversarial: overall and per kind (a thumbs flag does not weigh on pairwise data)."""
    if table.is_empty():
        empty = {"annotators": [], "count": 0, "share": None}
        return {"all": [], "section": empty | {"by_kind": {k: dict(empty) for k in KINDS}}}
    unreliable = table.filter(pl.col("thumbs.unreliable") | pl.col("pairwise.unreliable"))
    total = table.get_column("total").sum()
    section = {
        "annotators": unreliable.get_column("annotator_id").head(MAX_FLAGGED_DETAIL).to_list(),
        "count": len(unreliable),
        "share": unreliable.get_column("total").sum() / total if total else None,
        "by_kind": {},
    }
    for kind in KINDS:
        mine = table.filter(pl.col(f"{kind}.unreliable"))
        labels = table.get_column(f"{kind}.n").fill_null(0).sum()
        section["by_kind"][kind] = {
            "annotators": mine.get_column("annotator_id").head(MAX_NAMES).to_list(),
            "count": len(mine),
            "share": mine.get_column(f"{kind}.n").fill_null(0).sum() / labels if labels else None,
        }
    return {"all": unreliable.get_column("annotator_id").to_list(), "section": section}


def _log_confusion(fit) -> pl.DataFrame | None:
    """log P(label | truth r1), log P(label | truth r2) per (annotator, label) of a pairwise fit."""
    if fit is None:
        return None
    log = np.log(fit.confusion)  # (annotator, truth, label)
    a, l = np.meshgrid(np.arange(len(fit.annotators)), np.arange(len(fit.classes)), indexing="ij")
    return pl.DataFrame({
        "annotator_id": np.asarray(fit.annotators, dtype=object)[a.ravel()].tolist(),
        "label": np.asarray(fit.classes)[l.ravel()].astype(np.int64),
        "e0": log[a.ravel(), 0, l.ravel()],
        "e1": log[a.ravel(), 1, l.ravel()],
    })


# --- hygiene ----------------------------------------------------------------------------


def _timestamps(per_kind: dict, settings: Settings) -> dict:
    total = sum(t["implausible"] for t in per_kind.values())
    return {
        "earliest": settings.earliest().isoformat(),
        "max_future_hours": settings.max_future_hours,
        "implausible": total,
        **{kind: per_kind[kind] for kind in KINDS},
        "note": (f"{total} event(s) stamped before {settings.earliest_ts} or more than {settings.max_future_hours:g} h after the store "
                 "received them were left out of the window (counted here, not a reason to refuse an export)") if total else None,
    }


def _repeats(repeats: dict, max_share: float) -> dict:
    current = sum(repeats[k]["current"] for k in KINDS)
    groups = sum(repeats[k]["contradictions"] for k in KINDS)
    share = groups / current if current else 0.0
    return {
        "duplicates": {
            "flagged": any(repeats[k]["content_duplicates"] for k in KINDS),
            **{k: {f: repeats[k][f] for f in ("events", "current", "content_duplicates", "retries")} for k in KINDS},
        },
        "contradictions": {
            "flagged": share > max_share,
            "groups": groups,
            "share": share,
            "share_by_kind": {k: repeats[k]["contradictions"] / repeats[k]["current"] if repeats[k]["current"] else None for k in KINDS},
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
