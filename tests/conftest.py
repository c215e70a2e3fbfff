"""Shared fixtures: a real tansu broker for the session, unique topics and groups per test."""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# DESIGN.md: tansu's JoinGroup waits session_timeout_ms / 2, so keep it short in tests.
FAST_CONSUMER = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """A tansu broker on 127.0.0.1 with memory storage, shared by the session."""
    from prefstream.ingest.broker import LocalBroker

    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with LocalBroker(log_path=log) as running:
        yield running


@pytest.fixture
def make_topic(broker):
    """``make_topic(partitions=1) -> name``: a fresh topic for this test."""
    from prefstream.ingest.broker import create_topic

    def make(partitions: int = 1) -> str:
        name = f"t-{uuid.uuid4().hex[:10]}"
        create_topic(broker.bootstrap, name, partitions)
        return name

    return make


@pytest.fixture
def group_id() -> str:
    """A unique consumer group (tansu can leave a group stuck if a member dies mid-join)."""
    return f"g-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store_path(tmp_path):
    """A directory for an embedded store (created on first use)."""
    return tmp_path / "store"


def _postgres_answers() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


def _psql(sql: str) -> None:
    import subprocess

    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-q", "-c", sql], check=True, capture_output=True)


@pytest.fixture
def pg_database():
    """``make(name=None) -> dbname``: fresh PostgreSQL databases, dropped after the test.

    Skips with a reason when no server answers at 127.0.0.1:5432, except under CI, where
    its absence fails the run.
    """
    if not _postgres_answers():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not answering at 127.0.0.1:5432 (CI needs it for the catalog tests)")
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    made = []

    def make() -> str:
        name = f"prefstream_test_{uuid.uuid4().hex[:10]}"
        _psql(f"CREATE DATABASE {name}")
        made.append(name)
        return name

    yield make
    for name in made:
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_store(pg_database, tmp_path):
    """A StoreLocation on a fresh PostgreSQL catalog with a local data path."""
    from prefstream.store import StoreLocation

    name = pg_database()
    return StoreLocation(f"ducklake:postgres:dbname={name} host=127.0.0.1 user=postgres", str(tmp_path / "lake-data"))
