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
def db_path(tmp_path):
    return tmp_path / "feedback.duckdb"
