"""Reading while ingest writes: audit and export wall time with ingest idle and with ingest running.

A store is filled with N simulated events (default 1M) by `prefstream ingest-file`. Then
`prefstream audit` and `prefstream export dpo` run against it twice, each as its own
process: (a) with nothing else touching the store, (b) while a `prefstream ingest` process
lands a stream of new events into the same store. Prints each wall time and the ratio
(b)/(a): the price a reader pays for not stopping the stream (it never waits on a lock;
it shares 2 cores with the writer).

    python bench/concurrent_reads.py [--events 1000000] [--stream 300000]

(Not bench/concurrent.py: that name would shadow the standard library's ``concurrent``
package for every script run from bench/.)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time


def prefstream(*args) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "prefstream.cli", *map(str, args)], capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"prefstream {' '.join(map(str, args[:2]))} failed: {done.stderr.strip()[-400:]}")
    return time.perf_counter() - started


def readers(store: str, out: str, tag: str) -> dict[str, float]:
    return {
        "audit": prefstream("audit", "--store", store, "--no-store", "--json", os.devnull),
        "export dpo": prefstream("export", "dpo", "--store", store, "--out", os.path.join(out, f"dpo-{tag}"), "--force", "--force-reason", "bench"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--stream", type=int, default=300_000, help="Events streamed through ingest during (b).")
    args = parser.parse_args()

    from prefstream.ingest.broker import LocalBroker, create_topic
    from prefstream.ingest.produce import encode, produce
    from prefstream.ingest.simulator import SimConfig, simulate

    with tempfile.TemporaryDirectory() as tmp:
        store, jsonl = os.path.join(tmp, "store"), os.path.join(tmp, "events.jsonl")
        started = time.perf_counter()
        with open(jsonl, "wb") as f:
            for event in simulate(SimConfig(n=args.events, seed=3)):
                f.write(encode(event) + b"\n")
        prefstream("ingest-file", jsonl, "--store", store, "--quiet")
        print(f"built a store with {args.events:,} events in {time.perf_counter() - started:.0f}s")

        idle = readers(store, tmp, "idle")
        with LocalBroker() as broker:
            create_topic(broker.bootstrap, "stream", 4)
            producer = threading.Thread(target=produce, args=(broker.bootstrap, "stream", simulate(SimConfig(n=args.stream, seed=4))), daemon=True)
            producer.start()
            ingest = subprocess.Popen(
                [sys.executable, "-m", "prefstream.cli", "ingest", "--bootstrap", broker.bootstrap, "--topic", "stream", "--group", "bench",
                 "--store", store, "--quiet", "--until-idle", "5", "--consumer-option", "session_timeout_ms=6000"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            time.sleep(8)  # past the group join: ingest is landing batches
            running = readers(store, tmp, "running")
            still_running = ingest.poll() is None
            out, _ = ingest.communicate()
        print(f"ingest during (b): {out.strip()}" + ("" if still_running else "  [note: ingest finished before the readers did]"))
        for name in idle:
            print(f"{name:<11} (a) ingest idle {idle[name]:6.1f}s   (b) ingest running {running[name]:6.1f}s   ratio (b)/(a) = {running[name] / idle[name]:.2f}")


if __name__ == "__main__":
    main()
