"""``prefstream ingest`` (Kafka) and ``prefstream ingest-file`` (JSONL backfill)."""

from __future__ import annotations

import logging
import signal
import sys
import time

import click

from prefstream.cli.options import Progress, dead_letter_lines, open_cli_store, quiet_option, store_options, summary_line
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
@click.option("--topic", "topics", required=True, multiple=True, help="Topic to consume (never created); repeat for several.")
@click.option("--group", "group_id", required=True, help="Consumer group id (offsets are stored per group, in the store).")
@store_options
@click.option("--until-idle", type=click.FloatRange(min=0), default=None, metavar="SECONDS", help="Stop after this many seconds without a new message.")
@click.option("--max-messages", type=click.IntRange(min=1), default=None, metavar="N", help="Stop after N messages.")
@click.option(
    "--reset-offsets",
    type=click.Choice(["earliest", "latest"]),
    default=None,
    help="First move this group's stored offsets to the log's start or end (after a topic was recreated or retention deleted events).",
)
@click.option("--consumer-option", "consumer_options", multiple=True, metavar="KEY=VALUE", help="Any kafka-python KafkaConsumer setting (repeatable), e.g. security_protocol=SASL_SSL.")
@max_bytes_option
@quiet_option
@click.option("--verbose", "-v", is_flag=True, help="Log partition assignments and each landed batch to stderr.")
@click.pass_obj
def ingest(config, bootstrap, topics, group_id, store, data_path, until_idle, max_messages, reset_offsets, consumer_options, max_bytes, quiet, verbose):
    """Consume feedback from Kafka into the store, exactly once; run one per machine.

    Each polled batch (valid rows, dead letters, next offsets) is one store transaction;
    offsets are committed to Kafka only after it. On (re)assignment the consumer seeks to
    the offsets stored in the store (a partition it has never seen: the start of the log),
    so a crash, restart or rebalance loses and repeats nothing. Any number of ingest
    processes in one group may share a store; audit, export and query read it meanwhile.
    Ctrl-C (or SIGTERM) finishes the current batch, commits and exits 0.

    \b
    Example:
      prefstream ingest --bootstrap 127.0.0.1:9092 --topic feedback --group prod \\
          --store feedback-store --until-idle 10
      prefstream ingest --bootstrap kafka:9092 --topic feedback --group prod \\
          --store 'ducklake:postgres:dbname=feedback host=db' --data-path /mnt/shared/feedback
    \b
    Joining the group takes up to the consumer's session timeout (kafka-python's default
    45 s on some brokers); `--consumer-option session_timeout_ms=10000` shortens it.
    Consumer settings also come from the config file's [ingest.consumer] table:
      [ingest.consumer]
      security_protocol = "SASL_SSL"
      sasl_mechanism = "PLAIN"
    """
    from prefstream.ingest.consumer import IngestSettings, KafkaIngestor

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
        for handler in logging.getLogger().handlers:
            handler.addFilter(_without_kafka_tracebacks)
    # kafka-python logs socket tracebacks (closing, a broker restart); they are noise to a user.
    logging.getLogger("kafka").setLevel(logging.WARNING if verbose else logging.CRITICAL)
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
        reset_offsets=reset_offsets,
    )
    opened = open_cli_store(config, store, data_path, create=True)
    progress = Progress(not quiet)
    ingestor = KafkaIngestor(
        opened,
        settings,
        on_progress=lambda c, s: progress.show(summary_line(c, s)),
        on_status=lambda text: _status(text, quiet),
    )
    handlers = {sig: signal.signal(sig, lambda signum, frame: ingestor.stop(f"signal {signum}")) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = ingestor.run()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        opened.close()
    progress.done()
    click.echo(f"{summary_line(result.counts, result.seconds)}; stopped: {result.stopped_because}")
    for line in dead_letter_lines(result.counts):
        click.echo(line)


def _without_kafka_tracebacks(record: logging.LogRecord) -> bool:
    """Keep kafka-python's warnings as one line each: its connection tracebacks are its own business."""
    if record.name.startswith("kafka"):
        record.exc_info = record.exc_text = None
    return True


def _status(text: str, quiet: bool) -> None:
    if not quiet:
        click.echo(text, err=True)


@click.command("ingest-file")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@store_options
@max_bytes_option
@quiet_option
@click.pass_obj
def ingest_file(config, paths, store, data_path, max_bytes, quiet):
    """Land JSONL files (one event a line) into the store.

    Same validation and dead letters as `prefstream ingest`; each file is checkpointed by
    line in the same transaction as its rows, so running the same files again lands only
    new lines. Ctrl-C finishes the batch in hand and exits 130. With no PATH the store is
    only created or migrated.

    \b
    Example:
      prefstream simulate --n 10000 --out feedback.jsonl
      prefstream ingest-file feedback.jsonl --store feedback-store
    """
    from prefstream.ingest.backfill import ingest_files, looks_like_json_array

    opened = open_cli_store(config, store, data_path, create=True)
    progress = Progress(not quiet)
    started = time.monotonic()
    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        counts = ingest_files(
            opened,
            paths,
            max_bytes=max_bytes or section(config, "ingest").get("max_bytes", DEFAULT_MAX_BYTES),
            on_batch=lambda c: progress.show(summary_line(c, time.monotonic() - started)),
            should_stop=lambda: bool(interrupted),
        )
    finally:
        signal.signal(signal.SIGINT, previous)
        opened.close()
    progress.done()
    click.echo(summary_line(counts, time.monotonic() - started))
    for line in dead_letter_lines(counts):
        click.echo(line)
    if counts.dead_letters and not counts.landed:
        arrays = [p for p in paths if looks_like_json_array(p)]
        if arrays:
            click.echo(f"{arrays[0]} looks like a JSON array, not JSONL: write one JSON object per line (e.g. `jq -c '.[]' FILE`)")
    if interrupted:
        click.echo("interrupted: the batches above are committed; run the same command again to land the rest", err=True)
        sys.exit(130)
