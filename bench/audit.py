"""Benchmark: `prefstream audit` wall time and peak memory at 1M, 10M and 30M events.

    .venv/bin/python bench/audit.py                          # 1M, 10M, 30M
    .venv/bin/python bench/audit.py --sizes 1000000 --memory-limit 400MB

Each store is built once under --cache, straight into the raw tables with DuckDB SQL
(prefstream.quality.synthetic: 11 annotators, 3 labels an item, half thumbs, half pairwise,
two planted annotators), and kept for the next run. Each audit runs in a fresh child
process that reports its own peak RSS (VmHWM: Python, polars, numpy, DuckDB and its
temp tables together), so sizes do not share a high-water mark. Baseline: v0.1's audit
(frames of every current row in polars, expectations through pandas), 21.7 s and 1,683 MiB
at 1M events (README, before this change).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from prefstream.quality.synthetic import Synthetic

V01_AT_1M = (21.7, 1683)  # seconds, MiB


def child(store: str, memory_limit: str, since: str | None) -> None:
    """Audit ``store`` (from ``since``) and print {"seconds", "peak_mib", ...} as one JSON line."""
    from prefstream.quality import audit
    from prefstream.store import open_store

    started = time.perf_counter()
    with open_store(store, create=False, memory_limit=memory_limit) as opened:
        report = audit(opened, since=since, save=False)
    seconds = time.perf_counter() - started
    hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({
        "seconds": seconds, "peak_mib": hwm / 1024, "events": sum(report["bias"]["duplicates"][k]["events"] for k in ("thumbs", "pairwise")),
        "gate": report["gate"]["passed"], "alpha": [report["agreement"][k]["alpha"] for k in ("thumbs", "pairwise")],
    }))


def build(path: Path, events: int) -> float:
    from prefstream.quality.synthetic import build as write
    from prefstream.store import open_store

    started = time.perf_counter()
    with open_store(path) as store:
        write(store, Synthetic(events))
    return time.perf_counter() - started


def audited(path: Path, memory_limit: str, since: str | None = None) -> dict:
    command = [sys.executable, __file__, "--child", str(path), "--memory-limit", memory_limit] + (["--since", since] if since else [])
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"audit of {path} failed: {result.stderr.strip().splitlines()[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000,30000000", help="comma-separated numbers of events")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/prefstream-bench"), help="where the stores are built once")
    parser.add_argument("--memory-limit", default="500MB", help="DuckDB's memory limit in the audit (it spills to disk beyond)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--since", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.memory_limit, args.since)
    print(f"prefstream audit, DuckDB memory_limit {args.memory_limit}; v0.1 baseline at 1M: {V01_AT_1M[0]} s, {V01_AT_1M[1]:,} MiB")
    print(f"{'events':>12} {'build s':>8} {'audit s':>8} {'peak RSS MiB':>13} {'µs/event':>9}  vs v0.1 at 1M")
    for events in (int(float(s)) for s in args.sizes.split(",") if s):
        path = args.cache / f"audit-{events}"
        built = build(path, events) if not path.exists() else 0.0
        r = audited(path, args.memory_limit)
        versus = f"{V01_AT_1M[0] / r['seconds']:.1f}x faster, {V01_AT_1M[1] / r['peak_mib']:.1f}x less memory" if events == 1_000_000 else ""
        print(f"{r['events']:>12,} {f'{built:.0f}' if built else 'cached':>8} {r['seconds']:>8.1f} {r['peak_mib']:>13,.0f} {r['seconds'] / r['events'] * 1e6:>9.2f}  {versus}", flush=True)
        # The last of the generator's 30 days: --since work follows the window, not the store.
        day = audited(path, args.memory_limit, since=(Synthetic.start + timedelta(days=Synthetic.days - 1)).isoformat())
        print(f"{'  last day:':>12} {day['events']:>8,} events {day['seconds']:>8.1f} s {day['peak_mib']:>7,.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
