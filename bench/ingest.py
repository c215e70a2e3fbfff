"""Ingest throughput: prefstream's exactly-once landing vs a bare kafka-python loop.

200k simulated events go to a local tansu broker once; then, each in its own process:
(a) baseline: a bare kafka-python consumer loop that only decodes JSON (``json.loads``);
(b) prefstream: the ingest loop (validation, one DuckLake transaction per batch, offsets,
    Kafka commit) into a fresh embedded store (SQLite catalog) and into a fresh store with
    a PostgreSQL catalog (skipped when no PostgreSQL answers at 127.0.0.1:5432);
(c) two ingest processes in one group sharing one PostgreSQL-catalog store: aggregate rate
    against one process;
(d) peak RSS of (b) with 0, 1M and 5M events already in the store (rows written with SQL).
Rates are counted from the first message received to the last one handled, so the
consumer-group join (a broker-side wait) is excluded.

    python bench/ingest.py [--events 200000] [--partitions 4] [--prefill 1000000,5000000]
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


def location(store: str, data_path: str):
    from prefstream.store import StoreLocation

    return StoreLocation(store, data_path or None)


def prefstream_ingest(bootstrap: str, topic: str, total: int, store: str, data_path: str, group: str) -> dict:
    from prefstream.ingest.consumer import IngestSettings, KafkaIngestor
    from prefstream.store import open_store

    opened = open_store(location(store, data_path))
    # until_idle: with two processes in the group, neither knows how many events are its share.
    settings = IngestSettings(bootstrap=bootstrap, topics=(topic,), group_id=group, until_idle=4.0, max_messages=total, consumer_options=SESSION)
    result = KafkaIngestor(opened, settings).run()
    opened.close()
    return {"events": result.counts.seen, "seconds": result.seconds, "ended_at": time.time() - 4.0 * (result.stopped_because.startswith("idle"))}


def prefill(store: str, data_path: str, n: int) -> None:
    """Write ``n`` synthetic thumbs rows straight into the raw table, in 1M-row transactions."""
    from prefstream.store import open_store

    opened = open_store(location(store, data_path))
    for start in range(0, n, 1_000_000):
        count = min(1_000_000, n - start)
        opened.transact(lambda con: con.execute(f"""
            INSERT INTO thumbs_raw SELECT 'pre-' || i, 1, TIMESTAMPTZ '2026-01-01' + to_seconds(i), '"prompt ' || (i % 50000) || '"',
                md5('p' || (i % 50000)), 'ann-' || (i % 1000), 'user', '{{}}', md5('i' || (i % 200000)), 'response ' || i,
                CASE WHEN i % 3 = 0 THEN 'down' ELSE 'up' END, NULL, NULL, NULL, NULL, 'prefill:' || i, now()
            FROM range({start}, {start + count}) t(i)"""))
    opened.close()


def landed(store: str, data_path: str) -> int:
    from prefstream.store import open_store

    with open_store(location(store, data_path), create=False) as opened:
        con = opened.read()
        n = con.execute("SELECT (SELECT count(*) FROM thumbs) + (SELECT count(*) FROM pairwise)").fetchall()[0][0]
        con.close()
    return n


def child(args) -> None:
    if args.role == "baseline":
        out = baseline(args.bootstrap, args.topic, args.total)
    else:
        out = prefstream_ingest(args.bootstrap, args.topic, args.total, args.store, args.data_path, args.group)
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


def peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: a child's ru_maxrss can carry its parent's size over the exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_command(role: str, bootstrap: str, topic: str, total: int, store: str = "", data_path: str = "", group: str = "") -> list[str]:
    return [sys.executable, __file__, "--child", role, "--bootstrap", bootstrap, "--topic", topic, "--total", str(total),
            "--store", store, "--data-path", data_path, "--group", group or f"bench-{uuid.uuid4().hex[:8]}"]


def run_child(*args, **kwargs) -> dict:
    done = subprocess.run(child_command(*args, **kwargs), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_children(commands: list[list[str]]) -> list[dict]:
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    outs = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode:
            raise SystemExit(err)
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def postgres_catalog() -> str | None:
    """A fresh PostgreSQL database for a catalog, or None when no server answers."""
    name = f"prefstream_bench_{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", f"CREATE DATABASE {name}"], capture_output=True)
    return f"ducklake:postgres:dbname={name} host=127.0.0.1 user=postgres" if made.returncode == 0 else None


def drop_catalog(url: str) -> None:
    name = url.split("dbname=")[1].split()[0]
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


def rate(result: dict) -> float:
    return result["events"] / result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--prefill", default="1000000,5000000", help="Comma-separated event counts already in the store for (d).")
    parser.add_argument("--child", dest="role")
    parser.add_argument("--bootstrap")
    parser.add_argument("--topic")
    parser.add_argument("--total", type=int)
    parser.add_argument("--store", default="")
    parser.add_argument("--data-path", default="")
    parser.add_argument("--group", default="")
    args = parser.parse_args()
    if args.role:
        return child(args)

    from prefstream.ingest.broker import LocalBroker, create_topic
    from prefstream.ingest.produce import produce
    from prefstream.ingest.simulator import SimConfig, simulate

    catalogs = []
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        topic = "bench"
        create_topic(broker.bootstrap, topic, args.partitions)
        started = time.perf_counter()
        produce(broker.bootstrap, topic, simulate(SimConfig(n=args.events, seed=1)))
        print(f"produced {args.events} simulated events to {args.partitions} partitions in {time.perf_counter() - started:.1f}s")

        base = run_child("baseline", broker.bootstrap, topic, args.events)
        embedded = run_child("prefstream", broker.bootstrap, topic, args.events, os.path.join(tmp, "embedded"))
        assert landed(os.path.join(tmp, "embedded"), "") == args.events
        print(f"(a) bare kafka-python loop, json.loads only      : {rate(base):>9,.0f} events/s  peak RSS {base['peak_rss_mb']:.0f} MB")
        print(f"(b) prefstream ingest -> embedded store (SQLite) : {rate(embedded):>9,.0f} events/s  peak RSS {embedded['peak_rss_mb']:.0f} MB"
              f"   ratio (b)/(a) = {rate(embedded) / rate(base):.2f}  (target >= 0.8)")
        pg = postgres_catalog()
        if pg is None:
            print("(b) PostgreSQL catalog: skipped (no PostgreSQL at 127.0.0.1:5432)")
        else:
            catalogs.append(pg)
            one = run_child("prefstream", broker.bootstrap, topic, args.events, pg, os.path.join(tmp, "pg-one"))
            print(f"(b) prefstream ingest -> PostgreSQL catalog     : {rate(one):>9,.0f} events/s  peak RSS {one['peak_rss_mb']:.0f} MB"
                  f"   ratio (b)/(a) = {rate(one) / rate(base):.2f}")
            two_pg = postgres_catalog()
            catalogs.append(two_pg)
            group = f"bench-{uuid.uuid4().hex[:8]}"
            pair = run_children([child_command("prefstream", broker.bootstrap, topic, args.events, two_pg, os.path.join(tmp, "pg-two"), group)] * 2)
            first = min(p["ended_at"] - p["seconds"] for p in pair)
            last = max(p["ended_at"] for p in pair)
            total = sum(p["events"] for p in pair)
            assert landed(two_pg, os.path.join(tmp, "pg-two")) == args.events
            print(f"(c) two ingest processes, one group, one store   : {total / (last - first):>9,.0f} events/s aggregate "
                  f"({', '.join(str(p['events']) for p in pair)} events each); x{total / (last - first) / rate(one):.2f} one process")
        rss = [("0", embedded["peak_rss_mb"])]
        for n in [int(x) for x in args.prefill.split(",") if x]:
            store = os.path.join(tmp, f"prefilled-{n}")
            started = time.perf_counter()
            prefill(store, "", n)
            filled = run_child("prefstream", broker.bootstrap, topic, args.events, store)
            rss.append((f"{n:,}", filled["peak_rss_mb"]))
            print(f"    (prefilled {n:,} rows in {time.perf_counter() - started - filled['seconds']:.0f}s; ingest {rate(filled):,.0f} events/s)")
        print("(d) peak RSS of (b) with events already in the store: " + ", ".join(f"{n}: {mb:.0f} MB" for n, mb in rss) + "  (target: flat)")
    for url in catalogs:
        drop_catalog(url)


if __name__ == "__main__":
    main()
