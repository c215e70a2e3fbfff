"""One export, start to finish: gate, aggregate, filter, split, write, manifest.

Nothing is half-written: the output is built in a temporary folder beside ``--out`` and
renamed into place only when complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import polars as pl

from prefstream import __version__
from prefstream.errors import GateFailed, PrefstreamError
from prefstream.prep import aggregate, dataset, lineage, pairs, splits
from prefstream.prep.kto_weights import recommended_weights

Kind = Literal["kto", "dpo", "ipo"]


@dataclass(frozen=True)
class ExportSettings:
    """Everything that decides an export's content (and, apart from paths, its hash)."""

    kind: Kind
    eval_fraction: float = 0.1
    seed: int = 0
    since: datetime | None = None
    until: datetime | None = None
    min_agreement: float = 0.0
    weighting: Literal["majority", "reliability"] = "majority"
    include_pairwise: bool = False  # KTO: also rows from decided pairs
    include_thumbs: bool = False  # DPO / IPO: also pairs built from thumbs on the same prompt
    max_pairs_per_prompt: int = 4
    balance_length: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.eval_fraction < 1:
            raise PrefstreamError(f"--eval-fraction must be between 0 and 1 (exclusive), got {self.eval_fraction}")
        if not 0 <= self.min_agreement <= 1:
            raise PrefstreamError(f"--min-agreement must be between 0 and 1, got {self.min_agreement}")

    @property
    def family(self) -> str:
        return "kto" if self.kind == "kto" else "dpo"

    def hashed(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Output:
    """Where and how to write, and what to do about the gate."""

    out: Path
    fmt: Literal["hf", "parquet", "jsonl"] = "hf"
    overwrite: bool = False
    force: bool = False
    force_reason: str | None = None
    report_id: str | None = None  # cite a stored report instead of auditing now
    quality_config: dict = field(default_factory=dict)


def export(con, settings: ExportSettings, output: Output, progress=lambda message: None) -> dict:
    """Run one export; return its manifest."""
    _check_out(output)
    window = aggregate.Window(settings.since, settings.until)
    if aggregate.count_in_window(con, window) == 0:
        raise PrefstreamError(f"no rows to export: no feedback between {_iso(settings.since) or 'the start'} and {_iso(settings.until) or 'now'}; check --since / --until")
    progress("quality gate")
    gate = _gate(con, settings, output)
    weights = gate.pop("_weights")

    progress("aggregating across annotators")
    rows, dropped = _rows(con, settings, window, weights)
    if settings.min_agreement > 0:
        before = rows.height
        rows = rows.filter(pl.col("agreement") >= settings.min_agreement)
        dropped["low_agreement"] = before - rows.height
    length = {}
    if settings.family == "dpo":
        length["longer_wins_before"] = pairs.longer_wins_share(rows)
        if settings.balance_length:
            rows, dropped["length_balance"] = pairs.balance_length(rows, settings.seed)
        length["longer_wins"] = pairs.longer_wins_share(rows)
    if rows.height == 0:
        raise PrefstreamError(f"no rows to export after filtering (dropped: {_describe(dropped)}); widen --since/--until or lower --min-agreement")

    progress(f"splitting {rows.height} rows by prompt")
    rows = splits.assign_split(rows, settings.eval_fraction, settings.seed)
    key = "item_id" if settings.family == "kto" else "pair_id"
    conversational = dataset.is_conversational(rows)
    tables = {}
    for name in ("train", "test"):
        part = rows.filter(pl.col("split") == name).sort("prompt_hash", key)
        if part.height == 0:
            raise PrefstreamError(
                f"the {name} split would be empty ({rows['prompt_hash'].n_unique()} distinct prompts); "
                "change --eval-fraction or export more feedback"
            )
        tables[name] = dataset.to_arrow(part, settings.family, conversational)

    progress("hashing and writing")
    digest = dataset.content_hash(tables, settings.hashed())
    manifest = {
        "export_id": "exp-" + digest.removeprefix("sha256:")[:12],
        "kind": settings.kind,
        "prompt_format": "conversational" if conversational else "plain",
        "content_hash": digest,
        "rows": {name: t.num_rows for name, t in tables.items()},
        "dropped": dropped,
        "window": {"since": _iso(settings.since), "until": _iso(settings.until)},
        "settings": settings.hashed(),
        "quality": gate,
        "source": lineage.sources(con, rows["source_event_ids"].explode()),
        "columns": tables["train"].column_names,
        "format": output.fmt,
        "prefstream_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(),  # not part of content_hash
    }
    if settings.family == "kto":
        labels = rows["label"]
        manifest["kto_weights"] = recommended_weights(int(labels.sum()), int((~labels).sum()))
    else:
        manifest["length"] = length
    _write(tables, manifest, output, digest.removeprefix("sha256:")[:16])
    return manifest


def _check_out(output: Output) -> None:
    out = output.out
    if out.is_symlink():
        raise PrefstreamError(f"--out {out} is a symbolic link; give a real folder path")
    if not out.parent.is_dir():
        raise PrefstreamError(f"cannot write {out}: folder {out.parent} does not exist")
    if out.exists() and not output.overwrite:
        raise PrefstreamError(f"output folder {out} exists; pass --overwrite or choose another --out")


def _gate(con, settings: ExportSettings, output: Output) -> dict:
    from prefstream.quality import audit, load_report

    if output.report_id:
        report = load_report(con, output.report_id)
    else:
        report = audit(con, since=settings.since, until=settings.until, config=output.quality_config, store=True)
    passed, failures = report["gate"]["passed"], list(report["gate"]["failures"])
    if not passed and not output.force:
        raise GateFailed(
            f"quality gate failed for report {report.get('report_id')}: {'; '.join(failures)} "
            "(fix the data, or pass --force --force-reason TEXT to export anyway)"
        )
    weights = None
    if settings.weighting == "reliability":
        weights = {a["annotator_id"]: a["reliability"] for a in report["annotators"] if a.get("reliability") is not None}
    return {
        "report_id": report.get("report_id"),
        "passed": passed,
        "failures": failures,
        "forced": bool(output.force and not passed),
        "force_reason": (output.force_reason or "--force") if output.force and not passed else None,
        "_weights": weights,
    }


def _rows(con, settings: ExportSettings, window, weights) -> tuple[pl.DataFrame, dict[str, int]]:
    dropped: dict[str, int] = {}

    def count(prefix: str, drops: dict[str, int]) -> None:
        for reason, n in drops.items():
            dropped[f"{prefix}_{reason}"] = n

    if settings.family == "kto":
        rows, drops = aggregate.decide_thumbs(aggregate.thumbs_items(con, window, weights))
        count("thumbs", drops)
        if settings.include_pairwise:
            decided, drops = aggregate.decide_pairs(aggregate.pairwise_items(con, window, weights))
            count("pairwise", drops)
            rows = pl.concat([rows.select(pairs.KTO_COLUMNS), pairs.pairs_to_kto(decided)])
        return rows.select(pairs.KTO_COLUMNS), dropped
    rows, drops = aggregate.decide_pairs(aggregate.pairwise_items(con, window, weights))
    count("pairwise", drops)
    if settings.include_thumbs:
        labelled, drops = aggregate.decide_thumbs(aggregate.thumbs_items(con, window, weights))
        count("thumbs", drops)
        rows = pl.concat([rows.select(pairs.PAIR_COLUMNS), pairs.pairs_from_thumbs(labelled, settings.max_pairs_per_prompt, settings.seed)])
    return rows.select(pairs.PAIR_COLUMNS), dropped


def _write(tables, manifest: dict, output: Output, fingerprint: str) -> None:
    out = output.out
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        dataset.write_tables(tables, staging, output.fmt, fingerprint)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _describe(dropped: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in dropped.items() if v) or "nothing"


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None
