"""`prefstream broker` on a busy port, and `simulate` to a topic that does not exist yet."""

from __future__ import annotations

import subprocess
import sys
import uuid

from prefstream.ingest.produce import topic_exists


def test_broker_on_a_busy_port_is_a_one_line_error(broker):
    port = broker.bootstrap.rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, "-m", "prefstream.cli", "broker", "--port", port], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "already in use" in done.stderr and done.stderr.count("\n") == 1
    assert "listening" not in done.stdout


def test_simulate_to_a_missing_topic_says_it_creates_it(broker):
    topic = f"new-{uuid.uuid4().hex[:8]}"
    assert not topic_exists(broker.bootstrap, topic)
    done = subprocess.run(
        [sys.executable, "-m", "prefstream.cli", "simulate", "--n", "20", "--bootstrap", broker.bootstrap, "--topic", topic],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"topic {topic} does not exist" in done.stderr and "creating it" in done.stderr
    assert topic_exists(broker.bootstrap, topic)
