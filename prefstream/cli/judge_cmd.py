"""``prefstream judge``: a judge command answers comparison requests with ``pairwise`` events."""

from __future__ import annotations

from pathlib import Path

import click

from prefstream.errors import PrefstreamError


@click.command()
@click.option("--requests", "requests_path", type=click.Path(dir_okay=False), help="Comparison requests (JSONL, from `prefstream generate --out`).")
@click.option("--requests-topic", help="Or: every request on this Kafka topic (from `prefstream generate --topic`; with --bootstrap).")
@click.option("--judge-cmd", required=True, help="Program reading request lines on stdin, writing {\"request_id\", \"choice\"} lines on stdout.")
@click.option("--judge-id", help="Annotator id of its events [default: judge:<the command>].")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=600, show_default=True, help="Seconds the judge may run.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the pairwise events to this JSONL file (created; must not exist).")
@click.option("--topic", help="Produce the pairwise events to this Kafka topic (with --bootstrap).")
@click.option("--bootstrap", default="127.0.0.1:9092", show_default=True, help="Kafka bootstrap servers for --topic / --requests-topic.")
@click.option("--store", "store", help="Land the events in this store (as `ingest-file` does; the JSONL goes to --out or beside --requests).")
@click.option("--data-path", help="With a ducklake: catalog URL as --store: where its data files live.")
@click.option("--dead-letters", type=click.Path(dir_okay=False), help="Where bad judge output is appended [default: beside the output, *.dead-letters.jsonl].")
@click.pass_context
def judge(ctx, requests_path, requests_topic, judge_cmd, judge_id, timeout_s, out, topic, bootstrap, store, data_path, dead_letters) -> None:
    """Answer comparison requests with a judge command; emit ordinary pairwise events.

    The events say annotator_kind "model", name the judge as annotator_id, carry the request's
    models as model_a / model_b and metadata.request_id. A judge that crashes, times out,
    writes lines that are not answers, or skips a request records nothing: its bad lines go
    to the dead-letter file with the reason, and the command exits 2 with one line.

    \b
    Example:
      prefstream judge --requests requests.jsonl --judge-cmd "python judge.py" --out judged.jsonl
      prefstream judge --requests requests.jsonl --judge-cmd "python judge.py" --store lake
      prefstream judge --requests-topic requests --judge-cmd "python judge.py" --topic feedback
    """
    from prefstream.judge import Judge, judge_requests, read_requests, read_requests_topic, send

    if sum(bool(t) for t in (out and not store, topic, store)) != 1:
        raise PrefstreamError("give one destination: --out FILE, --topic TOPIC or --store STORE (with --store, --out names the JSONL kept)")
    if bool(requests_path) == bool(requests_topic):
        raise PrefstreamError("give the requests as --requests FILE or --requests-topic TOPIC (one of them)")
    requests = read_requests(requests_path) if requests_path else read_requests_topic(bootstrap, requests_topic)
    if not requests:
        raise PrefstreamError(f"{requests_path or requests_topic} holds no requests")
    written = Path(out) if out else Path(requests_path).with_suffix(".judged.jsonl") if requests_path else Path(f"{requests_topic}.judged.jsonl")
    if (out or store) and written.exists():  # refused before the judge runs, not after
        raise PrefstreamError(f"{written} exists; choose another --out")
    dead = Path(dead_letters) if dead_letters else written.with_suffix(".dead-letters.jsonl")
    opened = None
    if store:
        from prefstream.cli.options import open_cli_store

        opened = open_cli_store(ctx.obj, store, data_path, create=True)
    try:
        events = judge_requests(Judge(judge_cmd, judge_id, timeout_s), requests, dead)
        where = send(events, out=written if out or store else None, topic=topic, bootstrap=bootstrap)
        if opened is not None:
            from prefstream.ingest.backfill import ingest_files

            counts = ingest_files(opened, [written])
            where += f"; landed {counts.landed} in {opened.location.redacted()}" + (f" ({counts.dead_letters} dead letters)" if counts.dead_letters else "")
    finally:
        if opened is not None:
            opened.close()
    click.echo(f"judged {len(events)} requests with {events[0]['annotator_id']}: {where}")
