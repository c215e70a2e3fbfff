"""``prefstream audit``: agreement, annotator reliability, bias and expectations; the gate is the exit code."""

from __future__ import annotations

import json
from pathlib import Path

import click

from prefstream.cli.options import Progress, open_cli_store, quiet_option, snapshot_option, store_options
from prefstream.config import section
from prefstream.errors import GateFailed, PrefstreamError

EXPORT_KINDS = ("all", "dpo", "ipo", "simpo", "orpo", "kto")


@click.command()
@store_options
@snapshot_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True), help="Write the report as JSON ('-' for stdout).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write a self-contained HTML report with plots.")
@click.option("--since", help="Only feedback with ts >= this RFC 3339 time.")
@click.option("--until", help="Only feedback with ts < this RFC 3339 time.")
@click.option("--for", "export_kind", type=click.Choice(EXPORT_KINDS), default="all", show_default=True,
              help="Exit on the gate of this export kind (dpo/ipo/simpo/orpo: pairwise checks; kto: thumbs checks; all: every check).")
@click.option("--include-pairwise", is_flag=True, help="With --for kto: pairwise checks too (as `export kto --include-pairwise`).")
@click.option("--balance-length", is_flag=True, help="With a pair kind: length_skew is a note (as `export dpo --balance-length`).")
@click.option("--no-store", is_flag=True, help="Do not save the report in the quality_reports table.")
@quiet_option
@click.pass_obj
def audit(config, store, data_path, snapshot, json_path, html_path, since, until, export_kind, include_pairwise, balance_length, no_store, quiet) -> None:
    """Audit landed feedback before training on it; exit 0 when the gate passes, 1 when it fails.

    The report covers agreement (Krippendorff's alpha with a bootstrap interval, Fleiss'
    and Cohen's kappa; human and model judges apart, and how often they agree), every
    annotator (agreement with the others, Dawid-Skene estimate, flags low_agreement /
    adversarial / position_bias / label_skew), dataset biases (length_skew, length_taste,
    position, label imbalance with KTO weights, drift, duplicates, contradictions),
    implausible timestamps (counted and left out) and expectation suites. It records the
    snapshot it read (--snapshot N reproduces it) and is stored in the ``quality_reports``
    table under an id that exports cite. Thresholds: [quality.gate] in the config file.

    \b
    Example:
      prefstream audit --store feedback --html audit.html --json audit.json
      prefstream audit --store feedback --since 2026-11-01T00:00:00Z --for dpo
      prefstream audit --store feedback --snapshot 42 --no-store
    """
    from prefstream.quality import Settings, audit as run_audit, gate_for
    from prefstream.quality.summary import summary_text

    quality_config = section(config or {}, "quality")
    settings = Settings.from_config(quality_config)  # a malformed [quality] table fails before the store opens
    for path in (p for p in (json_path, html_path) if p and p != "-"):
        if not Path(path).resolve().parent.is_dir():
            raise PrefstreamError(f"cannot write {path}: its folder does not exist")
    progress = Progress(enabled=not quiet)
    with open_cli_store(config, store, data_path) as opened:
        report = run_audit(opened, since=since, until=until, snapshot=snapshot, config=quality_config, save=not no_store, progress=progress.show)
    progress.done()
    gate = gate_for(report, export_kind, include_pairwise=include_pairwise, balance_length=balance_length, settings=settings)
    if json_path:
        text = json.dumps(report, indent=2, sort_keys=True)
        if json_path == "-":
            click.echo(text)
        else:
            _write(json_path, text)
    if html_path:
        from prefstream.quality.html import render_html

        _write(html_path, render_html(report))
    click.echo(summary_text(report, gate), err=json_path == "-")
    if not gate.passed:
        raise GateFailed(f"quality gate failed for {export_kind} ({len(gate.failures)} failure(s) above, each with its remedy)")


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise PrefstreamError(f"cannot write {path}: {exc.strerror}") from None
