"""Helpers for tests that talk to the real broker."""

from __future__ import annotations

import os
import subprocess
import sys

from prefstream.ingest.consumer import IngestSettings, KafkaIngestor
from prefstream.store import open_store
from prefstream.tests.conftest import FAST_CONSUMER


def ingest(broker, topics, group_id, db_path, **settings):
    """Run the library ingest loop until idle; return (result, open connection)."""
    settings.setdefault("until_idle", 1.5)
    con = open_store(db_path)
    result = KafkaIngestor(
        con,
        IngestSettings(bootstrap=broker.bootstrap, topics=tuple(topics), group_id=group_id, consumer_options=FAST_CONSUMER, **settings),
    ).run()
    return result, con


def cli_ingest_command(broker, topics, group_id, db_path, *extra) -> list[str]:
    command = [sys.executable, "-m", "prefstream.cli", "ingest", "--bootstrap", broker.bootstrap, "--group", group_id, "--db", str(db_path), "--quiet"]
    for topic in topics:
        command += ["--topic", topic]
    for key, value in FAST_CONSUMER.items():
        command += ["--consumer-option", f"{key}={value}"]
    return command + list(extra)


def start_cli_ingest(broker, topics, group_id, db_path, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        cli_ingest_command(broker, topics, group_id, db_path, "--verbose", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
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
