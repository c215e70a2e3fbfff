"""Drills: several ingest processes on one store while a producer writes, readers audit and export,
and consumers are killed, restarted and frozen. Nothing may be lost, nothing visible twice, no read may fail.

Each drill runs real processes: the tansu broker, `prefstream ingest` children, `prefstream audit` and
`prefstream export` children, and in-process snapshot reads.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.store import open_store
from prefstream.tests.kafka_helpers import start_cli_ingest, store_args

PRODUCE_S = 40  # how long the producer writes
RATE = 100  # events per second, about
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _key(message) -> tuple:
    """The item a judgement is about, as the store's views define it (annotator + item)."""
    prompt = orjson.dumps(message["prompt"], option=orjson.OPT_SORT_KEYS)
    if message["kind"] == "thumbs":
        return ("thumbs", message["annotator_id"], prompt, message["response"])
    return ("pairwise", message["annotator_id"], prompt, frozenset((message["response_a"], message["response_b"])))


def expected_current(events: list[dict]) -> set[str]:
    """The event_ids ``thumbs_current`` + ``pairwise_current`` must show: the latest per annotator and item."""
    latest: dict[tuple, dict] = {}
    for e in events:
        k = _key(e)
        if k not in latest or (e["ts"], e["event_id"]) > (latest[k]["ts"], latest[k]["event_id"]):
            latest[k] = e
    return {e["event_id"] for e in latest.values()}


class Producer(threading.Thread):
    """Writes simulated feedback (2% invalid) at about ``RATE`` events/s until stopped."""

    def __init__(self, bootstrap: str, topic: str, seed: int):
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.stream = simulate(SimConfig(n=10**7, seed=seed, invalid_rate=0.02, update_rate=0.05))
        self.valid: list[dict] = []
        self.sent = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks=1)
            while not self.stop.is_set():
                for message in (next(self.stream) for _ in range(RATE // 10)):
                    if isinstance(message, dict):
                        self.valid.append(message)
                        value, key = orjson.dumps(message), message["event_id"].encode()
                    else:
                        value, key = message, str(self.sent).encode()
                    producer.send(self.topic, value=value, key=key)
                    self.sent += 1
                producer.flush()
                time.sleep(0.1)
            producer.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


class Consumer:
    """One `prefstream ingest` child, its output in a log file (read for "assigned" lines)."""

    def __init__(self, name: str, broker, topic: str, group_id: str, store, logs: Path):
        self.name, self.broker, self.topic, self.group_id, self.store = name, broker, topic, group_id, store
        self.log = logs / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "ab") as out:
            out.write(f"=== start {self.starts}\n".encode())
            out.flush()
            self.process = start_cli_ingest(self.broker, [self.topic], self.group_id, self.store, stdout=out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def since_start(self) -> str:
        return self.text().rsplit(f"=== start {self.starts}\n", 1)[-1]

    def assigned_count(self) -> int:
        return self.text().count(" assigned ")

    def has_joined(self) -> bool:
        return " assigned " in self.since_start()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


class Readers(threading.Thread):
    """audit, export and snapshot reads in a loop against the store, recording every failure."""

    def __init__(self, store, out: Path, use_cli: bool = True):
        super().__init__(daemon=True)
        self.store, self.out, self.use_cli = store, out, use_cli
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.runs = {"audit": 0, "export": 0, "read": 0}
        self.snapshots: list[int] = []

    def _cli(self, what: str, *args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "prefstream.cli", *args], capture_output=True, timeout=180, env=ENV)
        ok_codes = (0, 1) if what == "audit" else (0,)  # audit: 1 means the gate failed, a verdict, not an error
        if done.returncode not in ok_codes or b"Traceback" in done.stderr:
            self.failures.append(f"{what} exit {done.returncode}: {done.stderr.decode(errors='replace')[-600:]}")
        self.runs[what] += 1

    def _read(self) -> None:
        with open_store(self.store, create=False) as store:
            con = store.read()
            try:
                from prefstream.store import snapshot_of

                self.snapshots.append(snapshot_of(con))
                for view in ("thumbs", "pairwise", "thumbs_current", "pairwise_current"):
                    n, distinct = con.execute(f"SELECT count(*), count(DISTINCT event_id) FROM {view}").fetchall()[0]
                    if n != distinct:
                        self.failures.append(f"{view}: {n} rows but {distinct} event_ids at snapshot {self.snapshots[-1]}")
                n, distinct = con.execute("SELECT count(*), count(DISTINCT source) FROM dead_letters").fetchall()[0]
                if n != distinct:
                    self.failures.append(f"dead_letters: {n} rows but {distinct} sources")
            finally:
                con.close()
        self.runs["read"] += 1

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                if not self.use_cli:
                    self._read()
                else:
                    self._cli("audit", "audit", *store_args(self.store), "--json", "-", "--no-store", "--quiet")
                    self._cli("export", "export", "dpo", *store_args(self.store), "--out", str(self.out / f"dpo-{i}"), "--force", "--quiet")
            except Exception as exc:
                self.failures.append(f"read {type(exc).__name__}: {exc}")
            self.stop.wait(0.5 if self.use_cli else 0.2)


def _views(store) -> dict[str, list]:
    with open_store(store, create=False) as opened:
        con = opened.read()
        try:
            q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
            return {
                "events": [r[0] for r in q("SELECT event_id FROM thumbs UNION ALL SELECT event_id FROM pairwise")],
                "current": [r[0] for r in q("SELECT event_id FROM thumbs_current UNION ALL SELECT event_id FROM pairwise_current")],
                "sources": [r[0] for r in q("SELECT source FROM thumbs UNION ALL SELECT source FROM pairwise UNION ALL SELECT source FROM dead_letters")],
                "offsets": q("SELECT sum(next_offset) FROM kafka_offsets WHERE group_id NOT LIKE 'prefstream:%'"),
                "raw": q("SELECT (SELECT count(*) FROM thumbs_raw) + (SELECT count(*) FROM pairwise_raw)"),
            }
        finally:
            con.close()


def _stored_total(store) -> int:
    try:
        return _views(store)["offsets"][0][0] or 0
    except Exception:
        return -1


def run_drill(broker, make_topic, group_id, store, tmp_path, *, consumers: int, partitions: int, seed: int, freeze: bool):
    open_store(store).close()  # created up front; the consumers open it concurrently from then on
    topic = make_topic(partitions=partitions)
    logs = tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(seed)
    producer = Producer(broker.bootstrap, topic, seed)
    members = [Consumer(f"c{i}", broker, topic, group_id, store, logs) for i in range(consumers)]
    readers = Readers(store, tmp_path / "exports", use_cli=True)
    sql_readers = Readers(store, tmp_path / "exports", use_cli=False)
    notes: list[str] = []

    def logs_text() -> str:
        return "\n".join(f"--- {m.name}\n{m.text()[-3000:]}" for m in members)

    for m in members:
        m.start()
    producer.start()
    try:
        deadline = time.monotonic() + 60
        while _stored_total(store) <= 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _stored_total(store) > 0, f"nothing landed within 60 s\n{logs_text()}"
        readers.start()
        sql_readers.start()
        ends = time.monotonic() + PRODUCE_S
        frozen_done = not freeze
        while time.monotonic() < ends:
            time.sleep(rng.uniform(4, 8))
            # Kill only a member that has joined: tansu can leave a group stuck when a member dies mid-join.
            ready = [m for m in members if m.has_joined()]
            if not frozen_done and len(ready) >= 2:
                victim = rng.choice(ready)
                others_before = sum(m.assigned_count() for m in members if m is not victim)
                victim.process.send_signal(signal.SIGSTOP)
                stopped = time.monotonic()
                # Past the session timeout (6 s) the group rebalances without it.
                while time.monotonic() - stopped < 40 and sum(m.assigned_count() for m in members if m is not victim) == others_before:
                    time.sleep(0.5)
                rebalanced = sum(m.assigned_count() for m in members if m is not victim) > others_before
                notes.append(f"froze {victim.name} for {time.monotonic() - stopped:.0f}s; others rebalanced: {rebalanced}")
                victim.process.send_signal(signal.SIGCONT)
                frozen_done = True
                continue
            if ready:
                victim = rng.choice(ready)
                victim.kill()
                notes.append(f"killed {victim.name}")
                victim.start()
    finally:
        producer.stop.set()
        producer.join(timeout=30)
    assert producer.error is None, producer.error

    try:
        deadline = time.monotonic() + 120
        while _stored_total(store) != producer.sent and time.monotonic() < deadline:
            for m in members:
                if m.process.poll() is not None:
                    notes.append(f"{m.name} had exited ({m.process.returncode}); restarted")
                    m.start()
            time.sleep(1)
        readers.stop.set()
        sql_readers.stop.set()
        readers.join(timeout=240)
        sql_readers.join(timeout=60)
    finally:
        for m in members:
            if m.process.poll() is None:
                m.process.send_signal(signal.SIGTERM)
        for m in members:
            try:
                m.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                m.kill()
    assert _stored_total(store) == producer.sent, f"{notes}\n{logs_text()}"
    for m in members:
        assert m.process.returncode == 0, f"{m.name} exited {m.process.returncode}\n{logs_text()}"
    assert "Traceback" not in logs_text(), logs_text()

    views = _views(store)
    valid_ids = [e["event_id"] for e in producer.valid]
    assert len(views["events"]) == len(set(views["events"])) == len(set(valid_ids)) == len(valid_ids)
    assert set(views["events"]) == set(valid_ids)
    assert len(views["current"]) == len(set(views["current"]))
    assert set(views["current"]) == expected_current(producer.valid)
    assert len(views["sources"]) == len(set(views["sources"])) == producer.sent
    assert readers.failures == [] and sql_readers.failures == [], readers.failures + sql_readers.failures
    assert readers.runs["export"] >= 1 and readers.runs["audit"] >= 1 and sql_readers.runs["read"] >= 3, (readers.runs, sql_readers.runs)
    # Snapshots only move forward, and the readers saw the store grow while ingest ran.
    assert sql_readers.snapshots == sorted(sql_readers.snapshots) and len(set(sql_readers.snapshots)) > 1
    readers.runs["read"] = sql_readers.runs["read"]
    return notes, views, readers


@pytest.mark.slow
def test_three_consumers_on_a_postgres_catalog_survive_kills_a_freeze_and_readers(broker, make_topic, group_id, pg_store, tmp_path):
    notes, views, readers = run_drill(broker, make_topic, group_id, pg_store, tmp_path, consumers=3, partitions=6, seed=31, freeze=True)
    assert any(n.startswith("killed") for n in notes) and any(n.startswith("froze") for n in notes), notes
    print(f"drill: {notes}; raw rows {views['raw'][0][0]} for {len(views['events'])} events; reader runs {readers.runs}")


@pytest.mark.slow
def test_one_consumer_on_the_embedded_store_survives_kills_and_readers(broker, make_topic, group_id, store_path, tmp_path):
    notes, views, readers = run_drill(broker, make_topic, group_id, store_path, tmp_path, consumers=1, partitions=2, seed=32, freeze=False)
    assert any(n.startswith("killed") for n in notes), notes
    print(f"drill: {notes}; raw rows {views['raw'][0][0]} for {len(views['events'])} events; reader runs {readers.runs}")
