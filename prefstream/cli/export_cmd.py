"""``prefstream export kto|dpo|ipo``: training sets in TRL's columns, with a lineage manifest."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from prefstream.config import section
from prefstream.errors import PrefstreamError


def _timestamp(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PrefstreamError(f"{value!r} is not an RFC 3339 time, e.g. 2026-11-01T00:00:00Z") from None
    if ts.tzinfo is None:
        raise PrefstreamError(f"{value!r} has no time zone; add Z or an offset, e.g. 2026-11-01T00:00:00Z")
    return ts


@click.command()
@click.argument("kind", type=click.Choice(["kto", "dpo", "ipo"]))
@click.option("--db", "db_path", required=True, type=click.Path(dir_okay=False), help="DuckDB file with landed feedback.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to create (a DatasetDict, or parquet / jsonl files) with manifest.json.")
@click.option("--eval-fraction", type=float, default=0.1, show_default=True, help="Share of prompts in the test split.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and of sampling.")
@click.option("--since", help="Only feedback with ts >= this RFC 3339 time.")
@click.option("--until", help="Only feedback with ts < this RFC 3339 time.")
@click.option("--min-agreement", type=float, default=0.0, show_default=True, help="Drop items whose winning share of the votes is below this.")
@click.option("--weighting", type=click.Choice(["majority", "reliability"]), default="majority", show_default=True, help="Count each annotator once, or weight by the audit's reliability estimate.")
@click.option("--include-pairwise", is_flag=True, help="KTO: also rows from decided pairs (chosen True, rejected False).")
@click.option("--include-thumbs", is_flag=True, help="DPO / IPO: also pairs of an up- and a down-rated response to the same prompt.")
@click.option("--max-pairs-per-prompt", type=click.IntRange(min=1), default=4, show_default=True, help="Cap on pairs built from thumbs per prompt.")
@click.option("--balance-length", is_flag=True, help="DPO / IPO: drop pairs so 'the longer response won' is near 50%.")
@click.option("--format", "fmt", type=click.Choice(["hf", "parquet", "jsonl"]), default="hf", show_default=True, help="hf: datasets.DatasetDict.save_to_disk; or one file per split.")
@click.option("--report-id", help="Cite this stored quality report instead of auditing now.")
@click.option("--force", is_flag=True, help="Export even if the quality gate fails (recorded in the manifest).")
@click.option("--force-reason", help="Why the gate is overridden (recorded in the manifest).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.pass_obj
def export(config, kind, db_path, out, eval_fraction, seed, since, until, min_agreement, weighting, include_pairwise,
           include_thumbs, max_pairs_per_prompt, balance_length, fmt, report_id, force, force_reason, overwrite):
    """Export current feedback as a KTO, DPO or IPO training set (TRL's column names).

    The quality gate runs first (`prefstream audit`, stored and cited in the manifest);
    a failing gate refuses the export (exit 1) unless --force. Annotators are aggregated
    per item (majority, or reliability-weighted), ties dropped; splits are by prompt and
    deterministic; the same database and options give the same content hash.

    \b
    Examples:
      prefstream export dpo --db feedback.duckdb --out sets/dpo --balance-length
      prefstream export kto --db feedback.duckdb --out sets/kto --include-pairwise
      prefstream export ipo --db feedback.duckdb --out sets/ipo --min-agreement 0.7 \\
          --since 2026-11-01T00:00:00Z --format parquet
    """
    from prefstream.prep import ExportSettings, Output, export as run_export
    from prefstream.store import open_store

    settings = ExportSettings(
        kind=kind, eval_fraction=eval_fraction, seed=seed, since=_timestamp(since), until=_timestamp(until),
        min_agreement=min_agreement, weighting=weighting, include_pairwise=include_pairwise,
        include_thumbs=include_thumbs, max_pairs_per_prompt=max_pairs_per_prompt, balance_length=balance_length,
    )
    if not Path(db_path).exists():
        raise PrefstreamError(f"database {db_path} does not exist; land feedback first with `prefstream ingest-file --db {db_path} FILE`")
    output = Output(
        out=Path(out), fmt=fmt, overwrite=overwrite, force=force, force_reason=force_reason, report_id=report_id,
        quality_config=section(config or {}, "quality"),
    )
    import datasets

    datasets.disable_progress_bars()
    con = open_store(db_path)
    try:
        manifest = run_export(con, settings, output, progress=lambda step: click.echo(f"... {step}", err=True))
    finally:
        con.close()
    quality = manifest["quality"]
    verdict = "passed" if quality["passed"] else f"FAILED, overridden ({quality['force_reason']})"
    dropped = ", ".join(f"{k} {v}" for k, v in manifest["dropped"].items() if v) or "none"
    click.echo(f"exported {kind} {manifest['export_id']}: train {manifest['rows']['train']}, test {manifest['rows']['test']} rows "
               f"({manifest['prompt_format']}) to {out}")
    click.echo(f"dropped: {dropped}; quality report {quality['report_id']}: {verdict}")
    if kind == "kto":
        w = manifest["kto_weights"]
        click.echo(f"class balance {w['desirable']}:{w['undesirable']}; recommended desirable_weight {w['desirable_weight']}, undesirable_weight {w['undesirable_weight']}")
    else:
        click.echo(f"longer response won: {_share(manifest['length']['longer_wins_before'])} before, {_share(manifest['length']['longer_wins'])} exported")
    click.echo(f"manifest: {Path(out) / 'manifest.json'} (content {manifest['content_hash']})")


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
