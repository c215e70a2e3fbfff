"""Exactly-once under crashes: SIGKILL the ingesting child at random points while producing."""

from __future__ import annotations

import random
import threading
import time

import orjson
from kafka import KafkaProducer

from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.tests.kafka_helpers import ingest, is_valid, start_cli_ingest, wait_for_line
from prefstream.tests.store_helpers import query

KILLS = 4


def test_sigkill_at_random_points_loses_and_duplicates_nothing(broker, make_topic, group_id, store_path):
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
                if is_valid(message):
                    valid_ids.append(message["event_id"])
                producer.send(topic, value=message if isinstance(message, bytes) else orjson.dumps(message), key=str(sent).encode())
                sent += 1
            producer.flush()
            time.sleep(0.01)
        producer.close()

    writer = threading.Thread(target=keep_producing)
    writer.start()
    rng = random.Random(20261124)
    try:
        for _ in range(KILLS):
            child = start_cli_ingest(broker, [topic], group_id, store_path)
            wait_for_line(child.stderr, "landed")  # it has joined and landed at least one batch
            time.sleep(rng.uniform(0.0, 1.5))
            child.kill()
            child.wait()
    finally:
        stop.set()
        writer.join()

    result, store = ingest(broker, [topic], group_id, store_path, until_idle=2.0)
    store.close()
    assert result.counts.duplicates == 0

    stored = [r[0] for r in query(store_path, "SELECT event_id FROM thumbs UNION ALL SELECT event_id FROM pairwise")]
    assert len(stored) == len(set(stored)) == len(valid_ids)
    assert set(stored) == set(valid_ids)
    current = query(store_path, "SELECT (SELECT count(*) FROM thumbs_current) + (SELECT count(*) FROM pairwise_current)")[0][0]
    assert 0 < current <= len(valid_ids)
    # Every offset landed exactly once, as an event or a dead letter, and the stored next
    # offsets account for every message produced.
    sources = query(store_path, "SELECT source FROM thumbs UNION ALL SELECT source FROM pairwise UNION ALL SELECT source FROM dead_letters")
    assert len(sources) == len(set(sources)) == sent
    assert query(store_path, "SELECT sum(next_offset) FROM kafka_offsets WHERE group_id = ?", [group_id]) == [(sent,)]
    assert query(store_path, "SELECT count(*) FROM duplicates") == [(0,)]
