"""``prefstream ingest`` (Kafka) and ``prefstream ingest-file`` (JSONL backfill)."""

from __future__ import annotations

import logging
import signal
import sys
import time

import click

from prefstream.cli.options import Progress, db_option, quiet_option, summary_line
from prefstream.config import section
from prefstream.errors import PrefstreamError
from prefstream.schemas import DEFAULT_MAX_BYTES

max_bytes_option = click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    default=None,
    help=f"Messages larger than this go to dead letters (default {DEFAULT_MAX_BYTES}, or [ingest] max_bytes).",
)


def _parse_option(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise PrefstreamError(f"--consumer-option {text!r} must look like key=value, e.g. session_timeout_ms=6000")
    for convert in (int, float):
        try:
            return key, convert(raw)
        except ValueError:
            pass
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    return key, raw


@click.command()
@click.option("--bootstrap", required=True, metavar="HOST:PORT", help="Kafka bootstrap server(s), comma-separated.")
@click.option("--topic", "topics", required=True, multiple=True, help="Topic to consume; repeat for several.")
@click.option("--group", "group_id", required=True, help="Consumer group id (offsets are stored per group).")
@db_option
@click.option("--until-idle", type=click.FloatRange(min=0), default=None, metavar="SECONDS", help="Stop after this many seconds without a new message.")
@click.option("--max-messages", type=click.IntRange(min=1), default=None, metavar="N", help="Stop after N messages.")
@click.option("--consumer-option", "consumer_options", multiple=True, metavar="KEY=VALUE", help="Any kafka-python KafkaConsumer setting (repeatable), e.g. security_protocol=SASL_SSL.")
@max_bytes_option
@quiet_option
@click.option("--verbose", "-v", is_flag=True, help="Log partition assignments and each landed batch to stderr.")
@click.pass_obj
def ingest(config, bootstrap, topics, group_id, db_path, until_idle, max_messages, consumer_options, max_bytes, quiet, verbose):
    """Consume feedback from Kafka into a DuckDB file, exactly once.

    Each polled batch (valid rows, dead letters, next offsets) is one DuckDB transaction;
    offsets are committed to Kafka only after it. On (re)assignment the consumer seeks to
    the offsets stored in the database, so a crash or restart loses and repeats nothing.
    Ctrl-C (or SIGTERM) finishes the current batch, commits and exits 0.

    \b
    Example:
      prefstream ingest --bootstrap 127.0.0.1:9092 --topic feedback --group prod \\
          --db feedback.duckdb --until-idle 10
    \b
    Consumer settings also come from the config file's [ingest.consumer] table:
      [ingest.consumer]
      security_protocol = "SASL_SSL"
      sasl_mechanism = "PLAIN"
    """
    from prefstream.ingest.consumer import IngestSettings, KafkaIngestor
    from prefstream.store import open_store

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
        logging.getLogger("kafka").setLevel(logging.WARNING)
    options = dict(section(config, "ingest.consumer"))
    options.update(_parse_option(o) for o in consumer_options)
    settings = IngestSettings(
        bootstrap=bootstrap,
        topics=tuple(topics),
        group_id=group_id,
        until_idle=until_idle,
        max_messages=max_messages,
        max_bytes=max_bytes or section(config, "ingest").get("max_bytes", DEFAULT_MAX_BYTES),
        consumer_options=options,
    )
    con = open_store(db_path)
    progress = Progress(not quiet)
    ingestor = KafkaIngestor(con, settings, on_progress=lambda c, s: progress.show(summary_line(c, s)))
    handlers = {sig: signal.signal(sig, lambda signum, frame: ingestor.stop(f"signal {signum}")) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = ingestor.run()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        con.close()
    progress.done()
    click.echo(f"{summary_line(result.counts, result.seconds)}; stopped: {result.stopped_because}")


@click.command("ingest-file")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@db_option
@max_bytes_option
@quiet_option
@click.pass_obj
def ingest_file(config, paths, db_path, max_bytes, quiet):
    """Land JSONL files (one event a line) into a DuckDB file.

    Same validation and dead letters as `prefstream ingest`; each line is keyed by
    `path:line`, so running the same files again lands nothing new. With no PATH the
    database is only created or migrated.

    \b
    Example:
      prefstream simulate --n 10000 --out feedback.jsonl
      prefstream ingest-file feedback.jsonl --db feedback.duckdb
    """
    from prefstream.ingest.backfill import ingest_files
    from prefstream.store import open_store

    con = open_store(db_path)
    progress = Progress(not quiet)
    started = time.monotonic()
    try:
        counts = ingest_files(
            con,
            paths,
            max_bytes=max_bytes or section(config, "ingest").get("max_bytes", DEFAULT_MAX_BYTES),
            on_batch=lambda c: progress.show(summary_line(c, time.monotonic() - started)),
        )
    finally:
        con.close()
    progress.done()
    click.echo(summary_line(counts, time.monotonic() - started))
