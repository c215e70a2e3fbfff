"""``prefstream status``, ``prefstream query`` and ``prefstream store compact``: looking after the store."""

from __future__ import annotations

import csv
import json
import sys
from datetime import timedelta

import click

from prefstream.cli.options import open_cli_store, snapshot_option, store_options
from prefstream.config import section
from prefstream.errors import PrefstreamError


@click.command()
@store_options
@snapshot_option
@click.option("--bootstrap", metavar="HOST:PORT", default=None, help="Also ask this Kafka for high watermarks and show each partition's lag.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_obj
def status(config, store, data_path, snapshot, bootstrap, as_json):
    """What the store holds and how far each consumer group is behind Kafka.

    Per group, topic and partition: the stored next offset (and with --bootstrap the high
    watermark and the lag); rows landed, dead letters by reason, duplicates, the newest
    ts and the current snapshot. Safe while ingest runs.

    \b
    Example:
      prefstream status --store feedback-store --bootstrap 127.0.0.1:9092
      prefstream status --store feedback-store --json
    """
    from prefstream.ingest.status import add_lag, store_status

    opened = open_cli_store(config, store, data_path)
    report = store_status(opened, snapshot)
    if bootstrap:
        add_lag(report, bootstrap, dict(section(config, "ingest.consumer")))
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    rows = report["rows"]
    click.echo(f"store {report['store']}  snapshot {report['snapshot']}  newest ts {report['newest_ts'] or '-'}")
    click.echo(
        f"thumbs {rows['thumbs']:,} ({rows['thumbs_current']:,} current)  pairwise {rows['pairwise']:,} ({rows['pairwise_current']:,} current)  "
        f"dead letters {report['dead_letters_total']:,}  duplicates {report['duplicates']:,}"
    )
    for reason, n in report["dead_letters"].items():
        click.echo(f"  dead letter x{n}: {reason}")
    for g in report["groups"]:
        lag = f"  high watermark {g['high_watermark']}  lag {g['lag']}" if "lag" in g else ""
        click.echo(f"group {g['group']}  {g['topic']}[{g['partition']}]  next offset {g['next_offset']}{lag}")
    for f in report["files"]:
        click.echo(f"file {f['file']}  next line {f['next_line']}")


@click.command()
@click.argument("sql")
@store_options
@snapshot_option
@click.option("--json", "fmt", flag_value="json", help="One JSON object a row.")
@click.option("--csv", "fmt", flag_value="csv", help="CSV with a header.")
@click.pass_obj
def query(config, sql, store, data_path, snapshot, fmt):
    """Run read-only SQL over the store's tables and views, on one snapshot.

    Tables: thumbs, pairwise, thumbs_current, pairwise_current, dead_letters, duplicates,
    kafka_offsets, quality_reports, exports (and the raw tables behind them).

    \b
    Example:
      prefstream query --store feedback-store "SELECT annotator_id, avg((rating = 'up')::INT) FROM thumbs_current GROUP BY 1"
      prefstream query --store feedback-store --csv --snapshot 42 "SELECT * FROM pairwise_current"
    """
    import duckdb

    opened = open_cli_store(config, store, data_path)
    con = opened.read(snapshot)
    try:
        try:
            cursor = con.execute(sql)
        except duckdb.Error as exc:
            raise PrefstreamError(f"query failed: {str(exc).strip().splitlines()[0]}") from None
        if cursor.description is None:
            return
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    finally:
        con.close()
    if fmt == "json":
        for row in rows:
            click.echo(json.dumps(dict(zip(names, row)), default=_jsonable))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows(rows)
    else:
        click.echo("\t".join(names))
        for row in rows:
            click.echo("\t".join("" if v is None else str(v) for v in row))


def _jsonable(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@click.group()
def store():
    """Look after the store (compaction, snapshot expiry).

    \b
    Example:
      prefstream store compact --store feedback-store --retention-days 7
    """


@store.command()
@store_options
@click.option("--retention-days", type=click.FloatRange(min=0), default=None, help="Expire snapshots older than this (default 30, or [store] retention_days); cited ones are kept.")
@click.pass_obj
def compact(config, store, data_path, retention_days):
    """Merge small files, flush inlined rows and expire old snapshots, safely while ingest runs.

    Snapshots that a stored quality report or export cites are never expired: they stay
    readable with --snapshot N.

    \b
    Example:
      prefstream store compact --store feedback-store
      prefstream store compact --store feedback-store --retention-days 7
    """
    from prefstream.store.upkeep import compact as run_compact

    days = retention_days if retention_days is not None else section(config, "store").get("retention_days", 30)
    opened = open_cli_store(config, store, data_path)
    result = run_compact(opened, retention=timedelta(days=float(days)))
    click.echo(
        f"data files {result.files_before} -> {result.files_after}; expired {len(result.expired)} snapshots; "
        f"kept {len(result.kept_cited)} cited by reports or exports; current snapshot {result.snapshot}"
    )
