"""Ingest throughput: prefstream's exactly-once landing vs a bare kafka-python loop.

200k simulated events go to a local tansu broker once; then, each in its own process:
(a) baseline: a bare kafka-python consumer loop that only decodes JSON (``json.loads``);
(b) prefstream: the ingest loop (validation, DuckDB transaction per batch, offsets,
    Kafka commit) into a fresh DuckDB file.
Rates are counted from the first message received to the last one handled, so the
consumer-group join (a broker-side wait) is excluded from both. Peak RSS of (b) is
measured at two event counts to show it does not grow with the stream.

    python bench/ingest.py [--events 200000] [--partitions 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid

SESSION = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def baseline(bootstrap: str, topic: str, total: int) -> dict:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"bench-{uuid.uuid4().hex[:8]}", enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=5000, **SESSION,
    )
    seen, first = 0, None
    while seen < total:
        for records in consumer.poll(timeout_ms=500).values():
            first = first or time.perf_counter()
            for record in records:
                json.loads(record.value)
                seen += 1
    seconds = time.perf_counter() - first
    consumer.close(autocommit=False)
    return {"events": seen, "seconds": seconds}


def prefstream_ingest(bootstrap: str, topic: str, total: int, db: str) -> dict:
    from prefstream.ingest.consumer import IngestSettings, KafkaIngestor
    from prefstream.store import open_store

    con = open_store(db)
    settings = IngestSettings(bootstrap=bootstrap, topics=(topic,), group_id=f"bench-{uuid.uuid4().hex[:8]}", max_messages=total, consumer_options=SESSION)
    result = KafkaIngestor(con, settings).run()
    landed = con.execute("SELECT (SELECT count(*) FROM thumbs) + (SELECT count(*) FROM pairwise)").fetchall()[0][0]
    con.close()
    return {"events": result.counts.seen, "landed": landed, "seconds": result.seconds}


def child(args) -> None:
    if args.role == "baseline":
        out = baseline(args.bootstrap, args.topic, args.total)
    else:
        out = prefstream_ingest(args.bootstrap, args.topic, args.total, args.db)
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


def peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: a child's ru_maxrss can carry its parent's size over the exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(role: str, bootstrap: str, topic: str, total: int, db: str = "") -> dict:
    command = [sys.executable, __file__, "--child", role, "--bootstrap", bootstrap, "--topic", topic, "--total", str(total), "--db", db]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--child", dest="role")
    parser.add_argument("--bootstrap")
    parser.add_argument("--topic")
    parser.add_argument("--total", type=int)
    parser.add_argument("--db")
    args = parser.parse_args()
    if args.role:
        return child(args)

    from prefstream.ingest.broker import LocalBroker, create_topic
    from prefstream.ingest.produce import produce
    from prefstream.ingest.simulator import SimConfig, simulate

    with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        topic = "bench"
        create_topic(broker.bootstrap, topic, args.partitions)
        started = time.perf_counter()
        produce(broker.bootstrap, topic, simulate(SimConfig(n=args.events, seed=1)))
        print(f"produced {args.events} simulated events to {args.partitions} partitions in {time.perf_counter() - started:.1f}s")

        base = run_child("baseline", broker.bootstrap, topic, args.events)
        ours = run_child("prefstream", broker.bootstrap, topic, args.events, os.path.join(tmp, "a.duckdb"))
        small = run_child("prefstream", broker.bootstrap, topic, args.events // 4, os.path.join(tmp, "b.duckdb"))
        assert ours["landed"] == args.events, ours

        rate_a = base["events"] / base["seconds"]
        rate_b = ours["events"] / ours["seconds"]
        print(f"(a) bare kafka-python loop, json.loads only : {rate_a:>9,.0f} events/s  peak RSS {base['peak_rss_mb']:.0f} MB")
        print(f"(b) prefstream ingest -> DuckDB, exactly-once: {rate_b:>9,.0f} events/s  peak RSS {ours['peak_rss_mb']:.0f} MB")
        print(f"ratio (b)/(a) = {rate_b / rate_a:.2f}  (target >= 0.8)")
        print(f"peak RSS of (b): {small['peak_rss_mb']:.0f} MB at {args.events // 4} events, {ours['peak_rss_mb']:.0f} MB at {args.events} events "
              f"(x{ours['peak_rss_mb'] / small['peak_rss_mb']:.2f} for x4 events)")


if __name__ == "__main__":
    main()
