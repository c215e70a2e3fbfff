"""A broker restart during ingest: the consumer reconnects and nothing is lost or visible twice.

tansu keeps its log in S3 (a local moto_server) here, so the topic survives the restart.
"""

from __future__ import annotations

import re
import signal
import threading
import time

import orjson
import pytest
from kafka import KafkaProducer

from prefstream.ingest.broker import create_topic
from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.tests.kafka_helpers import start_cli_ingest
from prefstream.tests.store_helpers import query


class PausableProducer(threading.Thread):
    """Writes about 100 events/s; ``pause`` waits until everything sent is acknowledged."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.stream = simulate(SimConfig(n=10**6, seed=51, invalid_rate=0.02))
        self.valid: list[str] = []
        self.sent = 0
        self.stop = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.idle = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks=1)
            while not self.stop.is_set():
                if not self.running.is_set():
                    self.idle.set()
                    self.running.wait(0.1)
                    continue
                self.idle.clear()
                for message in (next(self.stream) for _ in range(10)):
                    if isinstance(message, dict):
                        self.valid.append(message["event_id"])
                    producer.send(self.topic, value=message if isinstance(message, bytes) else orjson.dumps(message), key=str(self.sent).encode())
                    self.sent += 1
                producer.flush()
                time.sleep(0.1)
            producer.close()
        except BaseException as exc:
            self.error = exc

    def pause(self) -> None:
        self.running.clear()
        assert self.idle.wait(30), "the producer did not flush"


@pytest.mark.slow
def test_ingest_reconnects_after_a_broker_restart_and_loses_nothing(s3_broker, group_id, store_path, tmp_path):
    broker = s3_broker
    topic = "feedback"
    create_topic(broker.bootstrap, topic, partitions=2)
    producer = PausableProducer(broker.bootstrap, topic)
    log = tmp_path / "ingest.log"
    with open(log, "wb") as out:
        child = start_cli_ingest(broker, [topic], group_id, store_path, stdout=out, stderr=out)
    producer.start()
    try:
        deadline = time.monotonic() + 60
        while "landed" not in log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "landed" in log.read_text(errors="replace"), log.read_text()
        time.sleep(3)
        producer.pause()
        landed_before = len(log.read_text().split(" landed ")) - 1
        broker.stop()
        time.sleep(3)  # the consumer's connections fail meanwhile
        assert child.poll() is None, log.read_text()
        broker.start()
        producer.running.set()
        time.sleep(15)
    finally:
        producer.stop.set()
        producer.join(timeout=30)
    assert producer.error is None, producer.error
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            total = query(store_path, "SELECT coalesce(sum(next_offset), 0) FROM kafka_offsets WHERE group_id = ?", [group_id])[0][0]
            if total == producer.sent or child.poll() is not None:
                break
            time.sleep(1)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    text = log.read_text(errors="replace")
    assert child.returncode == 0, text[-3000:]
    # With -v, kafka-python's own ERROR records (a socket reset while the broker was down) carry a
    # traceback; none may come from prefstream's code.
    assert not re.search(r'File "[^"]*/(ingest|prefstream|schemas)/[a-z_]+\.py"', text), text[-3000:]
    assert len(text.split(" landed ")) - 1 > landed_before  # it kept landing after the restart
    ids = [r[0] for r in query(store_path, "SELECT event_id FROM thumbs UNION ALL SELECT event_id FROM pairwise")]
    assert len(ids) == len(set(ids)) == len(producer.valid) and set(ids) == set(producer.valid)
    sources = query(store_path, "SELECT source FROM thumbs UNION ALL SELECT source FROM pairwise UNION ALL SELECT source FROM dead_letters")
    assert len(sources) == len(set(sources)) == producer.sent
    assert query(store_path, "SELECT sum(next_offset) FROM kafka_offsets WHERE group_id = ?", [group_id]) == [(producer.sent,)]
