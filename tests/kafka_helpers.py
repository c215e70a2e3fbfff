"""Helpers for tests that talk to the real broker and land into a real store."""

from __future__ import annotations

import os
import subprocess
import sys

from prefstream.ingest.consumer import IngestSettings, KafkaIngestor
from prefstream.store import StoreLocation, open_store
from prefstream.tests.conftest import FAST_CONSUMER


def store_args(store) -> list[str]:
    """``--store`` (and ``--data-path`` for a catalog) naming ``store``: a path or a StoreLocation."""
    if isinstance(store, StoreLocation):
        return ["--store", store.store] + (["--data-path", store.data_path] if store.data_path else [])
    return ["--store", str(store)]


def ingest(broker, topics, group_id, store, **settings):
    """Run the library ingest loop until idle; return (result, the open Store)."""
    settings.setdefault("until_idle", 1.5)
    opened = open_store(store)
    try:
        result = KafkaIngestor(
            opened,
            IngestSettings(bootstrap=broker.bootstrap, topics=tuple(topics), group_id=group_id, consumer_options=FAST_CONSUMER, **settings),
        ).run()
    except BaseException:
        opened.close()
        raise
    return result, opened


def cli_ingest_command(broker, topics, group_id, store, *extra) -> list[str]:
    command = [sys.executable, "-m", "prefstream.cli", "ingest", "--bootstrap", broker.bootstrap, "--group", group_id, *store_args(store), "--quiet"]
    for topic in topics:
        command += ["--topic", topic]
    for key, value in FAST_CONSUMER.items():
        command += ["--consumer-option", f"{key}={value}"]
    return command + list(extra)


def start_cli_ingest(broker, topics, group_id, store, *extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        cli_ingest_command(broker, topics, group_id, store, "--verbose", *extra),
        stdout=stdout,
        stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_line(stream, needle: str, limit: int = 2000) -> str:
    """Read lines from ``stream`` until one contains ``needle``; return it."""
    for _ in range(limit):
        line = stream.readline().decode(errors="replace")
        if not line:
            raise AssertionError(f"stream ended before {needle!r}")
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} not seen in {limit} lines")


def committed(broker, group_id, topic, partition=0):
    """Kafka's committed offset for ``group_id`` (None when nothing was committed)."""
    from kafka import KafkaConsumer, TopicPartition

    probe = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group_id, enable_auto_commit=False)
    try:
        return probe.committed(TopicPartition(topic, partition))
    finally:
        probe.close()


def is_valid(message) -> bool:
    """Whether the simulator meant ``message`` to be a valid event (its invalid ones are bytes or broken dicts)."""
    return (
        isinstance(message, dict)
        and message.get("schema_version") == 1
        and message.get("kind") in ("thumbs", "pairwise")
        and "annotator_id" in message
    )
