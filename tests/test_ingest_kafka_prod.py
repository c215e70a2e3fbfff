"""Kafka as it is in production: compressed topics, recreated topics, misspelled topics, wrong stores."""

from __future__ import annotations

import subprocess

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from prefstream.ingest.produce import produce
from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.tests.kafka_helpers import cli_ingest_command, committed, ingest
from prefstream.tests.store_helpers import query

EVENTS = "SELECT (SELECT count(*) FROM thumbs) + (SELECT count(*) FROM pairwise)"
IDS = "SELECT event_id FROM thumbs UNION ALL SELECT event_id FROM pairwise"


def run_cli(command, timeout=120):
    done = subprocess.run(command, capture_output=True, timeout=timeout)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_each_compression_codec_is_consumed(broker, make_topic, group_id, store_path, codec):
    import kafka.codec

    # kafka-python finds snappy through python-snappy (a thin wrapper over cramjam), lz4 and zstd
    # through their packages: a missing one fails the consumer on the first compressed batch.
    available = {"gzip": True, "snappy": kafka.codec.has_snappy(), "lz4": kafka.codec.has_lz4(), "zstd": kafka.codec.has_zstd()}
    assert available[codec], f"kafka-python cannot decode {codec}: its codec library is missing from prefstream's dependencies"
    topic = make_topic()
    events = list(simulate(SimConfig(n=200, seed=21, invalid_rate=0.05)))
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec, linger_ms=20)
    for message in events:
        producer.send(topic, value=message if isinstance(message, bytes) else orjson.dumps(message))
    producer.flush()
    producer.close()
    result, store = ingest(broker, [topic], group_id, store_path)
    store.close()
    valid = {m["event_id"] for m in events if isinstance(m, dict)}
    assert result.counts.landed == len(valid) and result.counts.dead_letters == len(events) - len(valid)
    assert {r[0] for r in query(store_path, IDS)} == valid
    assert query(store_path, "SELECT next_offset FROM kafka_offsets WHERE group_id = ?", [group_id]) == [(len(events),)]


def _recreate(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
        admin.create_topics([NewTopic(name=topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()


def test_a_recreated_topic_stops_ingest_until_offsets_are_reset(broker, make_topic, group_id, store_path):
    topic = make_topic()
    events = list(simulate(SimConfig(n=30, seed=22)))
    produce(broker.bootstrap, topic, events)
    first = run_cli(cli_ingest_command(broker, [topic], group_id, store_path, "--until-idle", "1"))
    assert first[0] == 0, first
    assert query(store_path, "SELECT next_offset FROM kafka_offsets WHERE group_id = ?", [group_id]) == [(30,)]

    # The topic is deleted and recreated holding fewer messages: the first 10 again, then 3 new ones.
    _recreate(broker.bootstrap, topic)
    newer = list(simulate(SimConfig(n=3, seed=23)))
    produce(broker.bootstrap, topic, events[:10] + newer)

    code, out, err = run_cli(cli_ingest_command(broker, [topic], group_id, store_path, "--until-idle", "2"))
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{topic}[0]" in err and "--reset-offsets earliest" in err and group_id in err
    assert query(store_path, EVENTS) == [(30,)]  # nothing skipped, nothing re-read
    assert query(store_path, "SELECT next_offset FROM kafka_offsets WHERE group_id = ?", [group_id]) == [(30,)]

    code, out, err = run_cli(cli_ingest_command(broker, [topic], group_id, store_path, "--until-idle", "2", "--reset-offsets", "earliest"))
    assert code == 0, (out, err)
    assert "landed 13 " in out
    ids = [r[0] for r in query(store_path, IDS)]
    assert len(ids) == len(set(ids)) == 33
    assert set(ids) == {e["event_id"] for e in events + newer}
    assert query(store_path, "SELECT count(*) FROM thumbs_raw")[0][0] + query(store_path, "SELECT count(*) FROM pairwise_raw")[0][0] == 43
    assert query(store_path, "SELECT next_offset FROM kafka_offsets WHERE group_id = ?", [group_id]) == [(13,)]
    assert committed(broker, group_id, topic) == 13


def test_reset_offsets_latest_skips_to_new_events(broker, make_topic, group_id, store_path):
    topic = make_topic()
    produce(broker.bootstrap, topic, simulate(SimConfig(n=20, seed=24)))
    code, out, err = run_cli(cli_ingest_command(broker, [topic], group_id, store_path, "--until-idle", "1", "--reset-offsets", "latest"))
    assert code == 0, (out, err)
    assert "landed 0 " in out
    assert query(store_path, "SELECT next_offset FROM kafka_offsets WHERE group_id = ?", [group_id]) == [(20,)]
    later = list(simulate(SimConfig(n=5, seed=25)))
    produce(broker.bootstrap, topic, later)
    code, out, err = run_cli(cli_ingest_command(broker, [topic], group_id, store_path, "--until-idle", "1"))
    assert code == 0, (out, err)
    assert {r[0] for r in query(store_path, IDS)} == {e["event_id"] for e in later}


def test_a_misspelled_topic_is_an_error_listing_topics_and_is_not_created(broker, make_topic, group_id, store_path):
    real = make_topic()
    code, out, err = run_cli(cli_ingest_command(broker, [real + "-typo"], group_id, store_path, "--until-idle", "1"))
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1
    assert f"no such topic: {real}-typo" in err and real in err.split("topics on", 1)[1]
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        assert real + "-typo" not in admin.list_topics()
    finally:
        admin.close()


@pytest.mark.parametrize("wrong", ["jsonl-file", "folder-of-things", "v01-duckdb"])
def test_a_store_that_is_not_a_store_is_refused_before_anything_is_consumed(broker, make_topic, group_id, tmp_path, wrong):
    import duckdb

    topic = make_topic()
    produce(broker.bootstrap, topic, simulate(SimConfig(n=20, seed=26)))
    if wrong == "jsonl-file":
        target = tmp_path / "events.jsonl"
        target.write_bytes(b'{"a": 1}\n')
    elif wrong == "folder-of-things":
        target = tmp_path / "folder"
        target.mkdir()
        (target / "notes.md").write_text("hi")
    else:
        target = tmp_path / "feedback.duckdb"
        duckdb.connect(str(target)).close()
    before = {p: p.read_bytes() for p in ([target] if target.is_file() else target.iterdir())}
    code, out, err = run_cli(cli_ingest_command(broker, [topic], group_id, target, "--until-idle", "1"))
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "landed" not in out
    assert {p: p.read_bytes() for p in before} == before
    if wrong == "v01-duckdb":
        assert "v0.1 DuckDB file" in err
    assert committed(broker, group_id, topic) is None  # Kafka's offsets for the group did not move


def test_a_new_store_with_an_existing_group_starts_from_the_beginning_and_says_so(broker, make_topic, group_id, tmp_path):
    topic = make_topic()
    events = list(simulate(SimConfig(n=25, seed=27)))
    produce(broker.bootstrap, topic, events)
    first = run_cli(cli_ingest_command(broker, [topic], group_id, tmp_path / "a", "--until-idle", "1"))
    assert first[0] == 0, first
    assert committed(broker, group_id, topic) == 25
    command = cli_ingest_command(broker, [topic], group_id, tmp_path / "b", "--until-idle", "1")
    command.remove("--quiet")
    code, out, err = run_cli(command)
    assert code == 0, (out, err)
    assert "landed 25 " in out
    assert f"new to this store: {topic}[0]; reading from the beginning of the log" in err
    assert {r[0] for r in query(tmp_path / "b", IDS)} == {e["event_id"] for e in events}
