"""Kafka -> DuckDB through a real tansu broker: round trips, dead letters, restarts, partitions."""

from __future__ import annotations

import signal
import subprocess

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from prefstream.ingest.produce import produce
from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.tests.kafka_helpers import cli_ingest_command, ingest, start_cli_ingest, wait_for_line

VALID = {
    "schema_version": 1, "kind": "thumbs", "event_id": "ok-1", "ts": "2026-11-01T10:00:00Z",
    "prompt": "p", "annotator_id": "u", "response": "r", "rating": "up",
}


def test_round_trip_both_kinds(broker, make_topic, group_id, db_path):
    topic = make_topic()
    events = [m for m in simulate(SimConfig(n=300, seed=1, chat_share=0.5))]
    produce(broker.bootstrap, topic, events)
    result, con = ingest(broker, [topic], group_id, db_path)
    assert result.counts.landed == 300 and result.counts.dead_letters == 0

    thumbs = {r[0]: r[1:] for r in con.execute('SELECT event_id, rating, response, prompt::VARCHAR, source, "offset" FROM thumbs').fetchall()}
    pairs = {r[0]: r[1:] for r in con.execute("SELECT event_id, choice, response_a, response_b, shown_first FROM pairwise").fetchall()}
    for offset, e in enumerate(events):
        if e["kind"] == "thumbs":
            rating, response, prompt, source, stored_offset = thumbs[e["event_id"]]
            assert (rating, response, orjson.loads(prompt)) == (e["rating"], e["response"], e["prompt"])
            assert (source, stored_offset) == (f"{topic}[0]@{offset}", offset)
        else:
            assert pairs[e["event_id"]] == (e["choice"], e["response_a"], e["response_b"], e["shown_first"])
    assert len(thumbs) + len(pairs) == 300 and thumbs and pairs
    assert con.execute("SELECT next_offset FROM kafka_offsets WHERE group_id = ?", [group_id]).fetchall() == [(300,)]


def test_every_bad_input_class_lands_in_dead_letters_and_the_consumer_keeps_going(broker, make_topic, group_id, db_path):
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
    result, con = ingest(broker, [topic], group_id, db_path, max_bytes=2048)
    assert result.counts.dead_letters == len(bad) and result.counts.thumbs == 5
    rows = con.execute('SELECT "offset", raw, reason, topic, "partition", source FROM dead_letters ORDER BY "offset"').fetchall()
    for (offset, raw, reason, t, p, source), message, expected in zip(rows, bad, reasons, strict=True):
        assert raw == message and expected in reason
        assert (t, p, source) == (topic, 0, f"{topic}[0]@{offset}")
    assert [r[0] for r in rows] == list(range(len(bad)))


def test_restart_resumes_from_the_stored_offsets(broker, make_topic, group_id, db_path):
    topic = make_topic()
    produce(broker.bootstrap, topic, simulate(SimConfig(n=500, seed=2)))
    first, con = ingest(broker, [topic], group_id, db_path, max_messages=200)
    assert first.counts.seen == 200 and "max-messages" in first.stopped_because
    con.close()
    second, con = ingest(broker, [topic], group_id, db_path)
    assert second.counts.seen == 300 and second.counts.replayed == 0
    assert con.execute("SELECT count(*) FROM thumbs").fetchall()[0][0] + con.execute("SELECT count(*) FROM pairwise").fetchall()[0][0] == 500
    # Kafka saw the commits too (for lag tools), after DuckDB had them.
    probe = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group_id, enable_auto_commit=False)
    assert probe.committed(TopicPartition(topic, 0)) == 500
    probe.close()


def test_duckdb_offsets_win_over_kafkas(broker, make_topic, group_id, db_path):
    """If DuckDB's offsets are behind Kafka's commit, the consumer re-reads from DuckDB's."""
    topic = make_topic()
    produce(broker.bootstrap, topic, simulate(SimConfig(n=300, seed=4)))
    _, con = ingest(broker, [topic], group_id, db_path)
    con.execute('DELETE FROM thumbs WHERE "offset" >= 100')
    con.execute('DELETE FROM pairwise WHERE "offset" >= 100')
    con.execute("UPDATE kafka_offsets SET next_offset = 100")
    con.close()
    again, con = ingest(broker, [topic], group_id, db_path)
    assert again.counts.landed == 200
    total = con.execute("SELECT (SELECT count(*) FROM thumbs) + (SELECT count(*) FROM pairwise)").fetchall()[0][0]
    assert total == 300


def test_two_topics_in_one_run(broker, make_topic, group_id, db_path):
    topics = [make_topic(), make_topic()]
    produce(broker.bootstrap, topics[0], simulate(SimConfig(n=120, seed=5)))
    produce(broker.bootstrap, topics[1], simulate(SimConfig(n=80, seed=6)))
    result, con = ingest(broker, topics, group_id, db_path)
    assert result.counts.landed == 200
    per_topic = dict(con.execute("SELECT topic, next_offset FROM kafka_offsets ORDER BY topic").fetchall())
    assert per_topic == {topics[0]: 120, topics[1]: 80}


def test_four_partitions(broker, make_topic, group_id, db_path):
    topic = make_topic(partitions=4)
    events = list(simulate(SimConfig(n=400, seed=7)))
    produce(broker.bootstrap, topic, events, key=lambda e: e["event_id"].encode())
    result, con = ingest(broker, [topic], group_id, db_path)
    assert result.counts.landed == 400
    offsets = con.execute('SELECT "partition", next_offset FROM kafka_offsets ORDER BY 1').fetchall()
    assert [p for p, _ in offsets] == [0, 1, 2, 3] and sum(o for _, o in offsets) == 400
    landed = con.execute('SELECT "partition", count(*) FROM (SELECT "partition" FROM thumbs UNION ALL SELECT "partition" FROM pairwise) GROUP BY 1 ORDER BY 1').fetchall()
    assert landed == offsets


def test_duplicate_event_id_is_landed_once_and_counted(broker, make_topic, group_id, db_path):
    topic = make_topic()
    retry = orjson.dumps(VALID)
    produce(broker.bootstrap, topic, [retry, orjson.dumps({**VALID, "event_id": "other"}), retry])
    first, con = ingest(broker, [topic], group_id, db_path)
    produce(broker.bootstrap, topic, [retry])  # a late retry, in a later batch
    con.close()
    second, con = ingest(broker, [topic], group_id, db_path)
    assert (first.counts.thumbs, first.counts.duplicates, second.counts.duplicates) == (2, 1, 1)
    assert con.execute("SELECT count(*) FROM thumbs WHERE event_id = 'ok-1'").fetchall() == [(1,)]
    dups = con.execute("SELECT source, first_source FROM duplicates ORDER BY source").fetchall()
    assert dups == [(f"{topic}[0]@2", f"{topic}[0]@0"), (f"{topic}[0]@3", f"{topic}[0]@0")]


def test_sigterm_finishes_the_batch_commits_and_exits_zero(broker, make_topic, group_id, db_path):
    topic = make_topic()
    produce(broker.bootstrap, topic, simulate(SimConfig(n=200, seed=8)))
    child = start_cli_ingest(broker, [topic], group_id, db_path)
    wait_for_line(child.stderr, "landed 200 messages")
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert b"landed 200 " in out and b"stopped: signal" in out


def test_unreachable_broker_is_a_one_line_error(tmp_path, group_id):
    from prefstream.ingest.broker import free_port

    class Nowhere:
        bootstrap = f"127.0.0.1:{free_port()}"

    command = cli_ingest_command(Nowhere, ["t"], group_id, tmp_path / "x.duckdb", "--consumer-option", "bootstrap_timeout_ms=3000")
    done = subprocess.run(command, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.decode().startswith("prefstream: error: cannot reach Kafka at")
    assert len(done.stderr.decode().strip().splitlines()) == 1


@pytest.mark.parametrize("option", ["enable_auto_commit=true", "group_id=x", "nonsense"])
def test_managed_or_malformed_consumer_options_are_refused(broker, tmp_path, group_id, option):
    done = subprocess.run(cli_ingest_command(broker, ["t"], group_id, tmp_path / "x.duckdb", "--consumer-option", option), capture_output=True, timeout=60)
    assert done.returncode == 2 and b"Traceback" not in done.stderr


def test_config_file_consumer_options_reach_kafka_python(broker, tmp_path, group_id):
    config = tmp_path / "prefstream.toml"
    config.write_text('[ingest.consumer]\nno_such_setting = 3\n')
    command = cli_ingest_command(broker, ["t"], group_id, tmp_path / "x.duckdb")
    command[3:3] = ["--config", str(config)]  # a group option, before the subcommand
    done = subprocess.run(command, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert "invalid consumer option" in done.stderr.decode() and "no_such_setting" in done.stderr.decode()


def test_broker_command_serves_kafka_and_stops_on_sigterm(tmp_path):
    import sys

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
