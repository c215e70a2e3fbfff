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


@pytest.fixture
def s3_broker(tmp_path):
    """A tansu broker whose log lives in S3 (a local moto_server), so it survives a restart.

    Yields the LocalBroker; ``broker.stop()`` then ``broker.start()`` restarts it on the same port.
    """
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    boto3 = pytest.importorskip("boto3")
    moto_server = Path(sys.executable).parent / "moto_server"
    if not moto_server.exists():
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    from prefstream.ingest.broker import LocalBroker, free_port

    port = free_port()
    moto = subprocess.Popen([str(moto_server), "-H", "127.0.0.1", "-p", str(port)], stdout=open(tmp_path / "moto.log", "wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or moto.poll() is not None:
                    raise RuntimeError(f"moto_server did not start: {(tmp_path / 'moto.log').read_text()[-500:]}") from None
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        env = {"AWS_ENDPOINT": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
        s3.create_bucket(Bucket="tansu")
        with LocalBroker(storage="s3://tansu/", env=env, log_path=tmp_path / "tansu-s3.log") as running:
            yield running
    finally:
        moto.terminate()
        moto.wait(timeout=10)
