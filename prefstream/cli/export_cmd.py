"""``prefstream export kto|dpo|ipo|simpo|orpo``: training sets in TRL's columns, with a lineage manifest."""

from __future__ import annotations

import time
from pathlib import Path

import click

from prefstream.cli.options import Progress, open_cli_store, quiet_option, snapshot_option, store_options
from prefstream.config import section


@click.command()
@click.argument("kind", type=click.Choice(["kto", "dpo", "ipo", "simpo", "orpo"]))
@store_options
@snapshot_option
@click.option("--out", required=True, type=click.Path(), help="Folder to create: a DatasetDict (or parquet / jsonl files) plus manifest.json.")
@click.option("--eval-fraction", type=float, default=0.1, show_default=True, help="Share of prompts in the test split (0 < F < 1).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and of any sampling.")
@click.option("--since", help="Only feedback with ts >= this RFC 3339 time.")
@click.option("--until", help="Only feedback with ts < this RFC 3339 time; judgements cast later never count.")
@click.option("--min-agreement", type=float, default=0.0, show_default=True, help="Drop items whose winning share of annotators is below this.")
@click.option("--weighting", type=click.Choice(["majority", "reliability"]), default="majority", show_default=True, help="Count each annotator once, or weight by the audit's reliability estimate.")
@click.option("--ties", type=click.Choice(["drop", "keep"]), default="drop", show_default=True, help="KTO: drop items whose up and down votes balance, or keep both labels at half weight.")
@click.option("--include-pairwise", is_flag=True, help="KTO: also rows from decided pairs (chosen True, rejected False).")
@click.option("--include-thumbs", is_flag=True, help="Pair kinds: also pairs of an up- and a down-rated response to the same prompt.")
@click.option("--max-pairs-per-prompt", type=click.IntRange(min=1), default=4, show_default=True, help="With --include-thumbs: at most this many thumbs pairs per prompt.")
@click.option("--balance-length", is_flag=True, help="Pair kinds: drop pairs so 'the longer response won' is 50%.")
@click.option("--format", "fmt", type=click.Choice(["hf", "parquet", "jsonl"]), default="hf", show_default=True, help="hf: datasets.DatasetDict.save_to_disk; or one file per split.")
@click.option("--report-id", help="Gate on this stored quality report (refused unless it covers the snapshot and window).")
@click.option("--force", is_flag=True, help="Export even if the quality gate fails (recorded in the manifest).")
@click.option("--force-reason", metavar="TEXT", help="Why --force was given (recorded in the manifest; needs --force).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it holds an earlier export.")
@click.option("--memory-limit", default="512MB", show_default=True, help="DuckDB memory while preparing; beyond it DuckDB spills to disk.")
@quiet_option
@click.pass_obj
def export(config, kind, store, data_path, snapshot, out, eval_fraction, seed, since, until, min_agreement, weighting, ties, include_pairwise,
           include_thumbs, max_pairs_per_prompt, balance_length, fmt, report_id, force, force_reason, overwrite, memory_limit, quiet):
    """Export landed feedback as a KTO, DPO, IPO, SimPO or ORPO training set in TRL's column names.

    The export reads one snapshot of the store (ingest may keep running; --snapshot N
    reproduces an earlier export byte for byte). The quality gate judges what this kind
    reads: pair kinds pairwise checks and the store's health, KTO thumbs checks (and
    pairwise ones with --include-pairwise). It reuses the newest stored report covering the
    snapshot and window, or audits and stores one; a failing gate refuses with exit code 1
    unless --force. Annotators are aggregated per item (majority, or weighted by
    reliability), ties dropped; splits are by prompt and stable for a seed; the same
    snapshot and options give the same bytes and content hash. Output goes to a temporary
    folder beside --out and is renamed into place only when complete.

    \b
    Columns:
      kto                    prompt, completion, label (bool)
      dpo/ipo/simpo/orpo     prompt, chosen, rejected (+ pair_id)
      all                    weight, agreement, n_annotators, source_event_ids
    Chat prompts stay message lists (then completions are one assistant message).

    \b
    Example:
      prefstream export dpo --store feedback --out sets/dpo --balance-length
      prefstream export kto --store feedback --out sets/kto --include-pairwise
      prefstream export ipo --store feedback --out sets/ipo --min-agreement 0.7 \\
          --since 2026-11-01T00:00:00Z --until 2026-11-08T00:00:00Z --format parquet
      prefstream export dpo --store feedback --out sets/dpo-again --snapshot 42
      prefstream export dpo --store feedback --out sets/dpo --force --force-reason "ablation"
    """
    from prefstream.prep import ExportSettings, Output, export as run_export

    # Every flag is checked before the store is opened or anything is read.
    settings = ExportSettings(
        kind=kind, eval_fraction=eval_fraction, seed=seed, since=since, until=until, min_agreement=min_agreement,
        weighting=weighting, ties=ties, include_pairwise=include_pairwise, include_thumbs=include_thumbs,
        max_pairs_per_prompt=max_pairs_per_prompt, balance_length=balance_length,
    )
    output = Output(
        out=Path(out), fmt=fmt, overwrite=overwrite, force=force, force_reason=force_reason, report_id=report_id,
        quality_config=section(config or {}, "quality"), memory_limit=memory_limit,
    )
    progress = Progress(not quiet)
    started = time.monotonic()

    def show(step: str) -> None:
        progress.show(f"export {kind}: {step} ... {time.monotonic() - started:.0f}s")

    with open_cli_store(config, store, data_path) as opened:
        try:
            manifest = run_export(opened, settings, output, snapshot=snapshot, progress=show)
        finally:
            progress.done()
    for line in summary_lines(manifest, out, time.monotonic() - started):
        click.echo(line)


def summary_lines(manifest: dict, out: str, seconds: float) -> list[str]:
    """What an export prints: rows per split, the snapshot, drops, the gate's verdict and notes, balance figures, the manifest."""
    rows, quality = manifest["rows"], manifest["quality"]
    lines = [
        f"exported {manifest['kind']} {manifest['export_id']}: train {rows['train']}, test {rows['test']} rows "
        f"({manifest['prompt_format']} prompts, {manifest['format']}) from snapshot {manifest['snapshot']} to {out} in {seconds:.1f}s"
    ]
    dropped = ", ".join(f"{k} {v}" for k, v in manifest["dropped"].items() if v) or "none"
    lines.append(f"dropped: {dropped}")
    implausible = {k: v for k, v in manifest["window"]["implausible_ts_excluded"].items() if v}
    if implausible:
        plausible = manifest["window"]["plausible_ts"]
        counts = ", ".join(f"{v} {k}" for k, v in implausible.items())
        lines.append(
            f"left out {counts} events with an implausible ts (before {plausible['earliest']}, "
            f"or over {plausible['max_future_hours']:g} h after the store received them)"
        )
    if not quality["checked"]:
        verdict = "not checked"
    elif quality["passed"]:
        verdict = f"passed (report {quality['report_id']}, {'reused: no re-audit' if quality['reused'] else 'audited now'})"
        if quality["force_reason"]:
            verdict += f"; --force was not needed, its reason is recorded: {quality['force_reason']}"
    else:
        reason = quality["force_reason"] or "(no --force-reason given)"
        verdict = f"FAILED, overridden with --force: {reason} (report {quality['report_id']}: {'; '.join(quality['failures'])})"
    lines.append(f"quality gate: {verdict}")
    lines += [f"note: {note}" for note in quality.get("notes", [])]
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
