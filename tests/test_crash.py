"""Exactly-once under crashes: SIGKILL the ingesting child at random points while producing."""

from __future__ import annotations

import random
import threading
import time

import orjson
from kafka import KafkaProducer

from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.tests.kafka_helpers import ingest, start_cli_ingest, wait_for_line

KILLS = 4


def test_sigkill_at_random_points_loses_and_duplicates_nothing(broker, make_topic, group_id, db_path):
    topic = make_topic(partitions=2)
    stream = simulate(SimConfig(n=10**7, seed=11, invalid_rate=0.02))
    valid_ids: list[str] = []
    sent = 0
    stop = threading.Event()

    def keep_producing():
        nonlocal sent
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
        while not stop.is_set():
            for message in (next(stream) for _ in range(40)):
                if isinstance(message, bytes):
                    value = message
                else:
                    value = orjson.dumps(message)
                    if message.get("schema_version") == 1 and message.get("kind") in ("thumbs", "pairwise") and "annotator_id" in message:
                        valid_ids.append(message["event_id"])
                producer.send(topic, value=value, key=str(sent).encode())
                sent += 1
            producer.flush()
            time.sleep(0.01)
        producer.close()

    writer = threading.Thread(target=keep_producing)
    writer.start()
    rng = random.Random(20261124)
    try:
        for _ in range(KILLS):
            child = start_cli_ingest(broker, [topic], group_id, db_path)
            wait_for_line(child.stderr, "landed")  # it has joined and landed at least one batch
            time.sleep(rng.uniform(0.0, 1.5))
            child.kill()
            child.wait()
    finally:
        stop.set()
        writer.join()

    result, con = ingest(broker, [topic], group_id, db_path, until_idle=2.0)
    assert result.counts.duplicates == 0

    stored = [r[0] for r in con.execute("SELECT event_id FROM thumbs UNION ALL SELECT event_id FROM pairwise").fetchall()]
    assert len(stored) == len(set(stored)) == len(valid_ids)
    assert set(stored) == set(valid_ids)
    # Every offset landed exactly once, as an event or a dead letter, and the stored next
    # offsets account for every message produced.
    sources = con.execute("SELECT source FROM thumbs UNION ALL SELECT source FROM pairwise UNION ALL SELECT source FROM dead_letters").fetchall()
    assert len(sources) == len(set(sources)) == sent
    assert con.execute("SELECT sum(next_offset) FROM kafka_offsets WHERE group_id = ?", [group_id]).fetchall() == [(sent,)]
    assert con.execute("SELECT count(*) FROM duplicates").fetchall() == [(0,)]
