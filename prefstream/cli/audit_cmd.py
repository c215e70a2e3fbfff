"""``prefstream audit``: agreement, annotator reliability, bias and expectations; the gate is the exit code."""

from __future__ import annotations

import json
from pathlib import Path

import click

from prefstream.config import section
from prefstream.errors import GateFailed, PrefstreamError


@click.command()
@click.option("--db", "db_path", required=True, type=click.Path(dir_okay=False), help="DuckDB file with landed feedback.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True), help="Write the report as JSON ('-' for stdout).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write a self-contained HTML report with plots.")
@click.option("--since", help="Only feedback with ts >= this RFC 3339 time.")
@click.option("--until", help="Only feedback with ts < this RFC 3339 time.")
@click.option("--no-store", is_flag=True, help="Do not save the report in the quality_reports table.")
@click.pass_context
def audit(ctx: click.Context, db_path: str, json_path: str | None, html_path: str | None, since: str | None, until: str | None, no_store: bool) -> None:
    """Audit landed feedback before training on it; exit 0 when the gate passes, 1 when it fails.

    The report covers agreement (Krippendorff's alpha with a bootstrap interval, Fleiss'
    and Cohen's kappa), every annotator (agreement with the others, Dawid-Skene estimate,
    flags low_agreement / adversarial / position_bias / label_skew), dataset biases
    (length, position, label imbalance with KTO weights, drift, duplicates, contradictions)
    and Great Expectations suites on the landed tables. It is stored in the
    ``quality_reports`` table under an id that exports cite. Thresholds: [quality.gate]
    in the config file.

    \b
    Example:
      prefstream audit --db feedback.duckdb --html audit.html --json audit.json
      prefstream audit --db feedback.duckdb --since 2026-11-01T00:00:00Z
    """
    from prefstream.quality import audit as run_audit
    from prefstream.quality.summary import summary_text
    from prefstream.store import open_store

    if not Path(db_path).exists():
        raise PrefstreamError(f"database {db_path} does not exist; land feedback first with `prefstream ingest-file --db {db_path} FILE`")
    con = open_store(db_path)
    try:
        report = run_audit(con, since=since, until=until, config=section(ctx.obj or {}, "quality"), store=not no_store)
    finally:
        con.close()
    if json_path:
        text = json.dumps(report, indent=2, sort_keys=True)
        if json_path == "-":
            click.echo(text)
        else:
            _write(json_path, text)
    if html_path:
        from prefstream.quality.html import render_html

        _write(html_path, render_html(report))
    click.echo(summary_text(report), err=json_path == "-")
    if not report["gate"]["passed"]:
        raise GateFailed(f"quality gate failed ({len(report['gate']['failures'])} failure(s)); see the report for figures")


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise PrefstreamError(f"cannot write {path}: {exc.strerror}") from None
