"""Export throughput: `prefstream export` (DuckDB SQL, Arrow streaming) vs a straightforward pandas group-by.

A store (the embedded DuckLake default) with N pairwise and N thumbs events (5 annotators
per item, a few items per prompt, ties and disagreements) is generated in SQL: this
measures prep, not ingest. Then,
each in its own process so that peak RSS is its own, both build the same DPO and KTO sets
end to end, from the store's current views to a ``DatasetDict`` saved on disk:

(a) baseline: read the current events into pandas, aggregate with ``groupby`` (majority per
    item, ties dropped, agreement, weight, n_annotators, source_event_ids), split by the
    same sha256 of the prompt, ``Dataset.from_pandas`` and ``save_to_disk``;
(b) prefstream: ``prefstream.prep.export`` on the gate-free path (the audit is the quality
    stage's cost, measured by bench/agreement.py), which also hashes the content and
    writes the manifest.

Both are run at N/4 and N events to show how time and peak RSS scale; each measurement is
the best of ``--repeat`` fresh processes (the highest peak RSS of them is shown). Peak RSS is
the process's VmHWM, which also counts pages of memory-mapped files (datasets reads the
Arrow file it copies through a memory map). (b) bounds DuckDB's share with its memory_limit
(512MB, the CLI's default); the rest grows with the number of output rows.

Last, the gate with a reusable report (what every export after an audit pays): on the
N-event store, audited once, a fresh process times the import of the quality stage and
then ``run_gate`` finding and judging the stored report (best of ``--repeat``).

    python bench/export.py [--events 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PER_ITEM = 5  # annotators per item
ITEMS_PER_PROMPT = 4


def build(path: str, events: int) -> None:
    """N pairwise + N thumbs events straight into the store's raw tables (the columns the sink writes), in one transaction."""
    from prefstream.store import open_store

    prompts = max(events // (PER_ITEM * ITEMS_PER_PROMPT), 1)
    common = f"""
        md5('e' || i || '{{kind}}') AS event_id, 1 AS schema_version,
        TIMESTAMPTZ '2026-11-01 00:00:00+00' + to_seconds(i) AS ts,
        to_json('How do I do task ' || (i // {PER_ITEM}) % {prompts} || ' well, step by step?') AS prompt,
        'ann-' || (hash(i // {PER_ITEM}) + i % {PER_ITEM}) % 40 AS annotator_id, 'user' AS annotator_kind, '{{{{}}}}'::JSON AS metadata,
        NULL AS topic, NULL AS "partition", NULL AS "offset", 'bench.jsonl:' || i AS source, now() AS ingested_at"""
    filler = "repeat(' This sentence pads the answer.', ({seed} % 12)::INT)"

    def fill(con) -> None:
        con.execute(f"""
            INSERT INTO pairwise_raw BY NAME
            SELECT *, md5(prompt::VARCHAR || chr(31) || least(response_a, response_b) || chr(31) || greatest(response_a, response_b)) AS pair_id,
                   md5(prompt::VARCHAR) AS prompt_hash
            FROM (SELECT {common.format(kind='p')},
                         'Sure! Here is how to do task ' || (i // {PER_ITEM}) || '.' || {filler.format(seed=f'hash(i // {PER_ITEM})')} AS response_a,
                         'Sorry, I cannot help with task ' || (i // {PER_ITEM}) || '.' || {filler.format(seed=f'hash(i // {PER_ITEM} + 7)')} AS response_b,
                         CASE WHEN hash(i) % 10 < 7 THEN 'a' WHEN hash(i) % 10 < 9 THEN 'b' ELSE 'tie' END AS choice,
                         CASE WHEN hash(i + 1) % 2 = 0 THEN 'a' ELSE 'b' END AS shown_first,
                         'm1' AS model_a, 'm2' AS model_b
                  FROM range({events}) t(i))""")
        con.execute(f"""
            INSERT INTO thumbs_raw BY NAME
            SELECT *, md5(prompt::VARCHAR || chr(31) || response) AS item_id, md5(prompt::VARCHAR) AS prompt_hash
            FROM (SELECT {common.format(kind='t')},
                         'Answer ' || (i // {PER_ITEM}) || '.' || {filler.format(seed=f'hash(i // {PER_ITEM})')} AS response,
                         CASE WHEN (hash(i // {PER_ITEM}) % 3 = 0) = (hash(i) % 10 < 8) THEN 'up' ELSE 'down' END AS rating,
                         'm1' AS model_id
                  FROM range({events}) t(i))""")

    with open_store(path) as store:
        store.transact(fill, what="build the benchmark store")


# ---- (a) the pandas baseline -------------------------------------------------------------------


def pandas_export(path: str, kind: str, out: str, eval_fraction: float = 0.1, seed: int = 0) -> dict:
    import hashlib

    import numpy as np
    import pandas as pd
    from datasets import Dataset, DatasetDict, disable_progress_bars

    from prefstream.store import open_store

    disable_progress_bars()
    with open_store(path, create=False) as store:
        con = store.read()
    if kind == "dpo":
        df = con.sql("SELECT event_id, pair_id AS item, prompt::VARCHAR AS prompt, response_a, response_b, choice, chosen FROM pairwise_current").df()
        df["r1"] = np.where(df.response_a <= df.response_b, df.response_a, df.response_b)
        df["r2"] = np.where(df.response_a <= df.response_b, df.response_b, df.response_a)
        df["v1"] = (df.choice != "tie") & (df.chosen == df.r1)
        df["v2"] = (df.choice != "tie") & (df.chosen != df.r1)
        g = df.sort_values("event_id").groupby("item", sort=True).agg(
            prompt=("prompt", "first"), r1=("r1", "first"), r2=("r2", "first"), v1=("v1", "sum"), v2=("v2", "sum"),
            n_annotators=("event_id", "size"), source_event_ids=("event_id", list),
        )
        g = g[(g.r1 != g.r2) & (g.v1 + g.v2 > 0) & (g.v1 != g.v2)]
        first = g.v1 > g.v2
        rows = pd.DataFrame({
            "prompt": g.prompt, "chosen": np.where(first, g.r1, g.r2), "rejected": np.where(first, g.r2, g.r1),
            "weight": np.maximum(g.v1, g.v2) / g.n_annotators, "n_annotators": g.n_annotators,
            "source_event_ids": g.source_event_ids, "pair_id": g.index,
        })
    else:
        df = con.sql("SELECT event_id, item_id AS item, prompt::VARCHAR AS prompt, response, rating FROM thumbs_current").df()
        df["up"] = df.rating == "up"
        g = df.sort_values("event_id").groupby("item", sort=True).agg(
            prompt=("prompt", "first"), completion=("response", "first"), up=("up", "sum"),
            n_annotators=("event_id", "size"), source_event_ids=("event_id", list),
        )
        g["down"] = g.n_annotators - g.up
        g = g[g.up != g.down]
        rows = pd.DataFrame({
            "prompt": g.prompt, "completion": g.completion, "label": g.up > g.down,
            "weight": np.maximum(g.up, g.down) / g.n_annotators, "n_annotators": g.n_annotators,
            "source_event_ids": g.source_event_ids,
        })
    rows["agreement"] = rows["weight"]
    rows["prompt"] = rows["prompt"].map(json.loads)  # plain prompts: the JSON string's text
    con.close()
    buckets = {p: int.from_bytes(hashlib.sha256(f"{seed}:{p}".encode()).digest()[:8], "big") % 1_000_000 for p in rows["prompt"].unique()}
    test = rows["prompt"].map(buckets) < round(eval_fraction * 1_000_000)
    DatasetDict({
        "train": Dataset.from_pandas(rows[~test], preserve_index=False),
        "test": Dataset.from_pandas(rows[test], preserve_index=False),
    }).save_to_disk(out)
    return {"rows": int(len(rows)), "test": int(test.sum())}


# ---- (b) prefstream ----------------------------------------------------------------------------


def prefstream_export(path: str, kind: str, out: str) -> dict:
    from prefstream.prep import ExportSettings, Output, export
    from prefstream.store import open_store

    with open_store(path, create=False) as store:
        manifest = export(store, ExportSettings(kind=kind), Output(out=Path(out), skip_gate=True, memory_limit="512MB"))  # the CLI's default
    return {"rows": sum(manifest["rows"].values()), "test": manifest["rows"]["test"]}


def gate_timing(path: str, repeat: int) -> dict:
    """In a fresh process: the quality stage's import, then ``run_gate`` with a reusable report (best of ``repeat``)."""
    from prefstream.prep import ExportSettings, Output
    from prefstream.prep.gate import run_gate
    from prefstream.store import open_store, snapshot_of

    started = time.perf_counter()
    import prefstream.quality  # noqa: F401  (what the first gate of a process pays)

    imported = time.perf_counter() - started
    times = []
    with open_store(path, create=False) as store:
        con = store.read()
        for _ in range(repeat):
            started = time.perf_counter()
            quality, _ = run_gate(store, con, snapshot_of(con), ExportSettings(kind="dpo"), Output(out=Path("unused"), force=True))
            times.append(time.perf_counter() - started)
            assert quality["reused"], quality
        con.close()
    return {"import_s": imported, "gate_s": min(times)}


def audit_once(path: str) -> float:
    from prefstream.quality import audit
    from prefstream.store import open_store

    started = time.perf_counter()
    with open_store(path, create=False) as store:
        audit(store, save=True)
    return time.perf_counter() - started


def child(role: str, kind: str, path: str, out: str, repeat: int) -> None:
    if role == "gate":
        return print(json.dumps(gate_timing(path, repeat)))
    import datasets  # noqa: F401  (imported before the clock starts, by both)
    import duckdb  # noqa: F401
    import pandas  # noqa: F401

    import prefstream.prep  # noqa: F401
    import prefstream.quality  # noqa: F401  (the export reads the audit's plausibility rule: a fixed import, timed by the gate line)

    started = time.perf_counter()
    result = (pandas_export if role == "pandas" else prefstream_export)(path, kind, out)
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM). Not ru_maxrss: a forked child inherits the
    parent's figure, here the parent's size after building the stores."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(role: str, kind: str, path: str, out: str, repeat: int) -> dict:
    """Best wall time of ``repeat`` fresh processes (the machine is shared), and the highest peak RSS."""
    runs = []
    for i in range(repeat):
        target = f"{out}-{i}"
        done = subprocess.run([sys.executable, __file__, "--child", role, "--kind", kind, "--store", path, "--out", target], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{role} {kind} failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        shutil.rmtree(target, ignore_errors=True)
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="pairwise events, and as many thumbs")
    parser.add_argument("--repeat", type=int, default=3, help="processes per measurement; the best time is kept")
    parser.add_argument("--child")
    parser.add_argument("--kind")
    parser.add_argument("--store")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.kind, args.store, args.out, args.repeat)

    with tempfile.TemporaryDirectory() as tmp:
        sizes = (args.events // 4, args.events)
        stores = {}
        for n in sizes:
            stores[n] = f"{tmp}/bench-{n}"
            started = time.perf_counter()
            build(stores[n], n)
            print(f"built a store with {n:,} pairwise + {n:,} thumbs events in {time.perf_counter() - started:.1f}s")
        results = {}
        for kind in ("dpo", "kto"):
            for n in sizes:
                for role in ("pandas", "prefstream"):
                    results[kind, n, role] = run_child(role, kind, stores[n], f"{tmp}/{role}-{kind}-{n}", args.repeat)
                a, b = results[kind, n, "pandas"], results[kind, n, "prefstream"]
                assert a["rows"] == b["rows"], (kind, n, a, b)  # the same aggregation: the same rows
        print()
        for kind in ("dpo", "kto"):
            unit = "pairwise" if kind == "dpo" else "thumbs"
            for n in sizes:
                a, b = results[kind, n, "pandas"], results[kind, n, "prefstream"]
                print(f"{kind} from {n:>9,} {unit} events -> {b['rows']:,} rows (test {b['test']:,}):")
                print(f"  (a) pandas group-by + Dataset.from_pandas : {a['seconds']:6.2f}s  peak RSS {a['peak_rss_mb']:6.0f} MB")
                print(f"  (b) prefstream export (gate-free path)    : {b['seconds']:6.2f}s  peak RSS {b['peak_rss_mb']:6.0f} MB")
                print(f"  speed-up (a)/(b) = {a['seconds'] / b['seconds']:.1f}x (target >= 5x); peak RSS (b)/(a) = {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}")
            small, big = results[kind, sizes[0], "prefstream"], results[kind, sizes[1], "prefstream"]
            base_small, base_big = results[kind, sizes[0], "pandas"], results[kind, sizes[1], "pandas"]
            print(f"  peak RSS for x4 events: (b) {small['peak_rss_mb']:.0f} -> {big['peak_rss_mb']:.0f} MB (x{big['peak_rss_mb'] / small['peak_rss_mb']:.2f}), "
                  f"(a) {base_small['peak_rss_mb']:.0f} -> {base_big['peak_rss_mb']:.0f} MB (x{base_big['peak_rss_mb'] / base_small['peak_rss_mb']:.2f})")


        audited = audit_once(stores[sizes[1]])
        done = subprocess.run([sys.executable, __file__, "--child", "gate", "--store", stores[sizes[1]], "--repeat", str(args.repeat)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"gate timing failed:\n{done.stderr[-3000:]}")
        gate = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"gate of a dpo export on the {sizes[1]:,}-event store with a reusable report (the audit before it took {audited:.1f}s):")
        print(f"  finding and judging the stored report: {gate['gate_s']:.2f}s (target < 1s); importing the quality stage first: {gate['import_s']:.2f}s")


if __name__ == "__main__":
    main()
