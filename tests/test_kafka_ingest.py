"""Kafka -> the store through a real tansu broker: round trips, dead letters, restarts, partitions."""

from __future__ import annotations

import signal
import subprocess

import orjson
import pytest

from prefstream.ingest.produce import produce
from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.ingest.sink import StoreSink
from prefstream.tests.kafka_helpers import cli_ingest_command, committed, ingest, start_cli_ingest, wait_for_line
from prefstream.tests.store_helpers import query

VALID = {
    "schema_version": 1, "kind": "thumbs", "event_id": "ok-1", "ts": "2026-11-01T10:00:00Z",
    "prompt": "p", "annotator_id": "u", "response": "r", "rating": "up",
}
EVENTS = "SELECT (SELECT count(*) FROM thumbs) + (SELECT count(*) FROM pairwise)"
RAW = "SELECT (SELECT count(*) FROM thumbs_raw) + (SELECT count(*) FROM pairwise_raw)"


def test_round_trip_both_kinds(broker, make_topic, group_id, store_path):
    topic = make_topic()
    events = [m for m in simulate(SimConfig(n=300, seed=1, chat_share=0.5))]
    produce(broker.bootstrap, topic, events)
    result, store = ingest(broker, [topic], group_id, store_path)
    store.close()
    assert result.counts.landed == 300 and result.counts.dead_letters == 0

    thumbs = {r[0]: r[1:] for r in query(store_path, 'SELECT event_id, rating, response, prompt::VARCHAR, source, "offset" FROM thumbs')}
    pairs = {r[0]: r[1:] for r in query(store_path, "SELECT event_id, choice, response_a, response_b, shown_first FROM pairwise")}
    for offset, e in enumerate(events):
        if e["kind"] == "thumbs":
            rating, response, prompt, source, stored_offset = thumbs[e["event_id"]]
            assert (rating, response, orjson.loads(prompt)) == (e["rating"], e["response"], e["prompt"])
            assert (source, stored_offset) == (f"{topic}[0]@{offset}", offset)
        else:
            assert pairs[e["event_id"]] == (e["choice"], e["response_a"], e["response_b"], e["shown_first"])
    assert len(thumbs) + len(pairs) == 300 and thumbs and pairs
    assert query(store_path, "SELECT next_offset FROM kafka_offsets WHERE group_id = ?", [group_id]) == [(300,)]


def test_every_bad_input_class_lands_in_dead_letters_and_the_consumer_keeps_going(broker, make_topic, group_id, store_path):
    topic = make_topic()
    bad = [
        b"{broken",
        b"[1, 2, 3]",
        orjson.dumps({**VALID, "kind": "stars"}),
        orjson.dumps({**VALID, "schema_version": 3}),
        orjson.dumps({k: v for k, v in VALID.items() if k != "annotator_id"}),
        orjson.dumps({**VALID, "rating": 5}),
        orjson.dumps({**VALID, "response": ""}),
        orjson.dumps({**VALID, "response": "x" * 3000}),
        b'{"schema_version": 1, "prompt": "\xc3\x28"}',
        orjson.dumps(VALID)[:-1] + b', "z": "a\x00b"}',
        orjson.dumps({**VALID, "prompt": "a\u0000b"}),
    ]
    reasons = ["invalid JSON", "not a JSON object", "unknown kind", "unknown schema_version", "missing required field 'annotator_id'",
               "field 'rating'", "field 'response'", "oversize message", "invalid UTF-8", "NUL", "NUL"]
    messages = bad + [orjson.dumps({**VALID, "event_id": f"ok-{i}"}) for i in range(5)]
    produce(broker.bootstrap, topic, messages)
    result, store = ingest(broker, [topic], group_id, store_path, max_bytes=2048)
    store.close()
    assert result.counts.dead_letters == len(bad) and result.counts.thumbs == 5
    rows = query(store_path, 'SELECT "offset", raw, reason, topic, "partition", source FROM dead_letters ORDER BY "offset"')
    for (offset, raw, reason, t, p, source), message, expected in zip(rows, bad, reasons, strict=True):
        assert raw == message and expected in reason
        assert (t, p, source) == (topic, 0, f"{topic}[0]@{offset}")
    assert [r[0] for r in rows] == list(range(len(bad)))


def test_restart_resumes_from_the_stored_offsets(broker, make_topic, group_id, store_path):
    topic = make_topic()
    produce(broker.bootstrap, topic, simulate(SimConfig(n=500, seed=2)))
    first, store = ingest(broker, [topic], group_id, store_path, max_messages=200)
    store.close()
    assert first.counts.seen == 200 and "max-messages" in first.stopped_because
    second, store = ingest(broker, [topic], group_id, store_path)
    store.close()
    assert second.counts.seen == 300 and second.counts.replayed == 0
    assert query(store_path, EVENTS) == [(500,)]
    assert query(store_path, RAW) == [(500,)]  # nothing was even physically written twice
    # Kafka saw the commits too (for lag tools), after the store had them.
    assert committed(broker, group_id, topic) == 500


def test_the_stores_offsets_win_over_kafkas(broker, make_topic, group_id, store_path):
    """If the store's offsets are behind Kafka's commit, the consumer re-reads from the store's;
    what lands twice physically is still visible once."""
    topic = make_topic()
    produce(broker.bootstrap, topic, simulate(SimConfig(n=300, seed=4)))
    _, store = ingest(broker, [topic], group_id, store_path)
    StoreSink(store).reset_offsets(group_id, {(topic, 0): 100})
    store.close()
    assert committed(broker, group_id, topic) == 300
    again, store = ingest(broker, [topic], group_id, store_path)
    store.close()
    assert again.counts.landed == 200
    assert query(store_path, RAW) == [(500,)]
    assert query(store_path, EVENTS) == [(300,)]
    assert query(store_path, "SELECT count(DISTINCT source), count(*) FROM (SELECT source FROM thumbs UNION ALL SELECT source FROM pairwise)") == [(300, 300)]
    assert query(store_path, "SELECT count(*) FROM duplicates") == [(0,)]
    assert query(store_path, "SELECT next_offset FROM kafka_offsets WHERE group_id = ?", [group_id]) == [(300,)]


def test_two_topics_in_one_run(broker, make_topic, group_id, store_path):
    topics = [make_topic(), make_topic()]
    produce(broker.bootstrap, topics[0], simulate(SimConfig(n=120, seed=5)))
    produce(broker.bootstrap, topics[1], simulate(SimConfig(n=80, seed=6)))
    result, store = ingest(broker, topics, group_id, store_path)
    store.close()
    assert result.counts.landed == 200
    per_topic = dict(query(store_path, "SELECT topic, next_offset FROM kafka_offsets ORDER BY topic"))
    assert per_topic == {topics[0]: 120, topics[1]: 80}


def test_four_partitions(broker, make_topic, group_id, store_path):
    topic = make_topic(partitions=4)
    events = list(simulate(SimConfig(n=400, seed=7)))
    produce(broker.bootstrap, topic, events, key=lambda e: e["event_id"].encode())
    result, store = ingest(broker, [topic], group_id, store_path)
    store.close()
    assert result.counts.landed == 400
    offsets = query(store_path, 'SELECT "partition", next_offset FROM kafka_offsets ORDER BY 1')
    assert [p for p, _ in offsets] == [0, 1, 2, 3] and sum(o for _, o in offsets) == 400
    landed = query(store_path, 'SELECT "partition", count(*) FROM (SELECT "partition" FROM thumbs UNION ALL SELECT "partition" FROM pairwise) GROUP BY 1 ORDER BY 1')
    assert landed == offsets


def test_a_producer_retry_is_visible_once_and_listed_in_duplicates(broker, make_topic, group_id, store_path):
    topic = make_topic()
    retry = orjson.dumps(VALID)
    produce(broker.bootstrap, topic, [retry, orjson.dumps({**VALID, "event_id": "other"}), retry])
    first, store = ingest(broker, [topic], group_id, store_path)
    store.close()
    produce(broker.bootstrap, topic, [retry])  # a late retry, in a later batch
    second, store = ingest(broker, [topic], group_id, store_path)
    store.close()
    # A retry within a batch is counted there; one in a later batch only shows in the view.
    assert (first.counts.thumbs, first.counts.duplicates) == (2, 1)
    assert second.counts.seen == 1 and second.counts.duplicates == 0
    assert query(store_path, "SELECT count(*), min(source) FROM thumbs WHERE event_id = 'ok-1'") == [(1, f"{topic}[0]@0")]
    dups = query(store_path, "SELECT source, first_source FROM duplicates ORDER BY source")
    assert dups == [(f"{topic}[0]@2", f"{topic}[0]@0"), (f"{topic}[0]@3", f"{topic}[0]@0")]


def test_sigterm_finishes_the_batch_commits_and_exits_zero(broker, make_topic, group_id, store_path):
    topic = make_topic()
    produce(broker.bootstrap, topic, simulate(SimConfig(n=200, seed=8)))
    child = start_cli_ingest(broker, [topic], group_id, store_path)
    wait_for_line(child.stderr, "landed 200 messages")
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert b"landed 200 " in out and b"stopped: signal" in out
    assert query(store_path, EVENTS) == [(200,)]


def test_joining_group_is_said_on_stderr(broker, make_topic, group_id, store_path):
    topic = make_topic()
    produce(broker.bootstrap, topic, simulate(SimConfig(n=10, seed=9)))
    command = cli_ingest_command(broker, [topic], group_id, store_path, "--until-idle", "1")
    command.remove("--quiet")
    done = subprocess.run(command, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"joining group {group_id}" in done.stderr.decode()
    assert b"landed 10 " in done.stdout and b"Traceback" not in done.stderr


def test_unreachable_broker_is_a_one_line_error(tmp_path, group_id):
    from prefstream.ingest.broker import free_port

    class Nowhere:
        bootstrap = f"127.0.0.1:{free_port()}"

    command = cli_ingest_command(Nowhere, ["t"], group_id, tmp_path / "store", "--consumer-option", "bootstrap_timeout_ms=3000")
    done = subprocess.run(command, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.decode().startswith("prefstream: error: cannot reach Kafka at")
    assert len(done.stderr.decode().strip().splitlines()) == 1


@pytest.mark.parametrize("option", ["enable_auto_commit=true", "group_id=x", "nonsense"])
def test_managed_or_malformed_consumer_options_are_refused(broker, tmp_path, group_id, option):
    done = subprocess.run(cli_ingest_command(broker, ["t"], group_id, tmp_path / "store", "--consumer-option", option), capture_output=True, timeout=60)
    assert done.returncode == 2 and b"Traceback" not in done.stderr


def test_config_file_consumer_options_reach_kafka_python(broker, make_topic, tmp_path, group_id):
    config = tmp_path / "prefstream.toml"
    config.write_text('[ingest.consumer]\nno_such_setting = 3\n')
    command = cli_ingest_command(broker, [make_topic()], group_id, tmp_path / "store")
    command[3:3] = ["--config", str(config)]  # a group option, before the subcommand
    done = subprocess.run(command, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert "invalid consumer option" in done.stderr.decode() and "no_such_setting" in done.stderr.decode()


def test_broker_command_serves_kafka_and_stops_on_sigterm(tmp_path):
    import sys

    from kafka import KafkaConsumer

    from prefstream.ingest.broker import free_port

    port = free_port()
    child = subprocess.Popen([sys.executable, "-m", "prefstream.cli", "broker", "--port", str(port), "--topic", "feedback:3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert f"listening on 127.0.0.1:{port}" in child.stdout.readline().decode()
        probe = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}")
        assert probe.partitions_for_topic("feedback") == {0, 1, 2}
        probe.close()
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    assert child.returncode == 0
