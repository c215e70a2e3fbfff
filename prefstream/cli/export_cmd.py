"""``prefstream export kto|dpo|ipo``: training sets in TRL's columns, with a lineage manifest."""

from __future__ import annotations

import time
from pathlib import Path

import click

from prefstream.cli.options import Progress, quiet_option
from prefstream.config import section
from prefstream.errors import PrefstreamError


@click.command()
@click.argument("kind", type=click.Choice(["kto", "dpo", "ipo"]))
@click.option("--db", "db_path", required=True, type=click.Path(dir_okay=False), help="DuckDB file with landed feedback.")
@click.option("--out", required=True, type=click.Path(), help="Folder to create: a DatasetDict (or parquet / jsonl files) plus manifest.json.")
@click.option("--eval-fraction", type=float, default=0.1, show_default=True, help="Share of prompts in the test split (0 < F < 1).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and of any sampling.")
@click.option("--since", help="Only feedback with ts >= this RFC 3339 time.")
@click.option("--until", help="Only feedback with ts < this RFC 3339 time.")
@click.option("--min-agreement", type=float, default=0.0, show_default=True, help="Drop items whose winning share of annotators is below this.")
@click.option("--weighting", type=click.Choice(["majority", "reliability"]), default="majority", show_default=True, help="Count each annotator once, or weight by the audit's reliability estimate.")
@click.option("--ties", type=click.Choice(["drop", "keep"]), default="drop", show_default=True, help="KTO: drop items whose up and down votes balance, or keep both labels at half weight.")
@click.option("--include-pairwise", is_flag=True, help="KTO: also rows from decided pairs (chosen True, rejected False).")
@click.option("--include-thumbs", is_flag=True, help="DPO / IPO: also pairs of an up- and a down-rated response to the same prompt.")
@click.option("--max-pairs-per-prompt", type=click.IntRange(min=1), default=4, show_default=True, help="With --include-thumbs: at most this many thumbs pairs per prompt.")
@click.option("--balance-length", is_flag=True, help="DPO / IPO: drop pairs so 'the longer response won' is 50%.")
@click.option("--format", "fmt", type=click.Choice(["hf", "parquet", "jsonl"]), default="hf", show_default=True, help="hf: datasets.DatasetDict.save_to_disk; or one file per split.")
@click.option("--report-id", help="Cite this stored quality report instead of auditing (refused if stale).")
@click.option("--reuse-report", is_flag=True, help="Use the latest stored quality report if fresh; audit otherwise.")
@click.option("--force", is_flag=True, help="Export even if the quality gate fails (recorded in the manifest).")
@click.option("--force-reason", metavar="TEXT", help="Why the gate is overridden (recorded in the manifest; needs --force).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it holds an earlier export.")
@click.option("--memory-limit", default="512MB", show_default=True, help="DuckDB memory while preparing; beyond it DuckDB spills to disk.")
@quiet_option
@click.pass_obj
def export(config, kind, db_path, out, eval_fraction, seed, since, until, min_agreement, weighting, ties, include_pairwise,
           include_thumbs, max_pairs_per_prompt, balance_length, fmt, report_id, reuse_report, force, force_reason, overwrite, memory_limit, quiet):
    """Export landed feedback as a KTO, DPO or IPO training set in TRL's column names.

    The quality gate runs first (the audit is stored and cited in the manifest, or a fresh
    stored report is reused); a failing gate refuses the export with exit code 1 unless
    --force. Annotators are aggregated per item (majority, or weighted by reliability),
    ties dropped; splits are by prompt and deterministic for a seed; the same database and
    options give the same content hash. Output goes to a temporary folder beside --out and
    is renamed into place only when complete.

    \b
    Columns:
      kto        prompt, completion, label (bool)
      dpo / ipo  prompt, chosen, rejected (+ pair_id)
      all        weight, agreement, n_annotators, source_event_ids
    Conversational prompts stay message lists (then completions are one assistant message).

    \b
    Example:
      prefstream export dpo --db feedback.duckdb --out sets/dpo --balance-length
      prefstream export kto --db feedback.duckdb --out sets/kto --include-pairwise
      prefstream export ipo --db feedback.duckdb --out sets/ipo --min-agreement 0.7 \\
          --since 2026-11-01T00:00:00Z --format parquet
      prefstream export dpo --db feedback.duckdb --out sets/dpo --force --force-reason "ablation"
    """
    from prefstream.prep import ExportSettings, Output, export as run_export
    from prefstream.store import open_store

    settings = ExportSettings(
        kind=kind, eval_fraction=eval_fraction, seed=seed, since=since, until=until, min_agreement=min_agreement,
        weighting=weighting, ties=ties, include_pairwise=include_pairwise, include_thumbs=include_thumbs,
        max_pairs_per_prompt=max_pairs_per_prompt, balance_length=balance_length,
    )
    output = Output(
        out=Path(out), fmt=fmt, overwrite=overwrite, force=force, force_reason=force_reason, report_id=report_id,
        reuse_report=reuse_report, quality_config=section(config or {}, "quality"), memory_limit=memory_limit,
    )
    if not Path(db_path).exists():
        raise PrefstreamError(f"database {db_path} does not exist; land feedback first with `prefstream ingest-file --db {db_path} FILE`")
    progress = Progress(not quiet)
    started = time.monotonic()
    con = open_store(db_path)
    try:
        manifest = run_export(con, settings, output, progress=lambda step: progress.show(f"export {kind}: {step} ...", force=True))
    finally:
        con.close()
        progress.done()
    for line in summary_lines(manifest, out, time.monotonic() - started):
        click.echo(line)


def summary_lines(manifest: dict, out: str, seconds: float) -> list[str]:
    """What an export prints: rows per split, drops, the gate's verdict, balance figures, the manifest."""
    rows, quality = manifest["rows"], manifest["quality"]
    lines = [
        f"exported {manifest['kind']} {manifest['export_id']}: train {rows['train']}, test {rows['test']} rows "
        f"({manifest['prompt_format']} prompts, {manifest['format']}) to {out} in {seconds:.1f}s"
    ]
    dropped = ", ".join(f"{k} {v}" for k, v in manifest["dropped"].items() if v) or "none"
    lines.append(f"dropped: {dropped}")
    if not quality["checked"]:
        verdict = "not checked"
    elif quality["passed"]:
        verdict = f"passed (report {quality['report_id']}{', reused' if quality['reused'] else ''})"
    else:
        verdict = f"FAILED, overridden with --force: {quality['force_reason']} (report {quality['report_id']}: {'; '.join(quality['failures'])})"
    lines.append(f"quality gate: {verdict}")
    if "kto_weights" in manifest:
        w = manifest["kto_weights"]
        lines.append(
            f"train class balance {w['desirable']} desirable : {w['undesirable']} undesirable; "
            f"recommended desirable_weight {w['desirable_weight']}, undesirable_weight {w['undesirable_weight']}"
        )
    if "length" in manifest:
        before, after = manifest["length"]["before_balancing"]["longer_wins"], manifest["length"]["exported"]["longer_wins"]
        lines.append(f"longer response won: {_share(before)} of unequal-length pairs before balancing, {_share(after)} exported")
    lines.append(f"manifest: {Path(out) / 'manifest.json'} (content {manifest['content_hash']})")
    return lines


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
