"""Export throughput: prefstream's SQL + polars aggregation vs a straightforward pandas group-by.

A DuckDB store with N pairwise and N thumbs events (5 annotators per item) is generated
in SQL (realistic shape, no Kafka needed: this measures prep). Then, each in its own
process so peak RSS is its own:
(a) baseline: read the current views into pandas and aggregate with groupby (same rules:
    majority per item, ties dropped, agreement = winning share);
(b) prefstream: the same aggregation (``prefstream.prep.aggregate``), and the whole
    ``export`` (aggregate, split, Arrow, content hash, save_to_disk, manifest).
Peak RSS of (b) at N/4 and N events shows how memory scales.

    python bench/export.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANNOTATORS_PER_ITEM = 5


def build(db: str, events: int) -> None:
    from prefstream.store import open_store

    con = open_store(db)
    items = events // ANNOTATORS_PER_ITEM
    common = f"""
        'e' || i AS event_id, 1 AS schema_version,
        TIMESTAMPTZ '2026-11-01 00:00:00+00' + to_seconds(i) AS ts,
        to_json('How do I do task ' || (i // {ANNOTATORS_PER_ITEM}) % {max(items // 4, 1)} || '?') AS prompt,
        'ann-' || (i % 40) AS annotator_id, 'user' AS annotator_kind, '{{}}'::JSON AS metadata,
        NULL AS topic, NULL AS "partition", NULL AS "offset", 'bench:' || i AS source, now() AS ingested_at"""
    con.execute(f"""
        INSERT INTO pairwise BY NAME
        SELECT *, md5(prompt::VARCHAR || chr(31) || least(response_a, response_b) || chr(31) || greatest(response_a, response_b)) AS pair_id,
               md5(prompt::VARCHAR) AS prompt_hash
        FROM (SELECT {common},
                     'Good answer ' || (i // {ANNOTATORS_PER_ITEM}) || repeat(' more', (hash(i // {ANNOTATORS_PER_ITEM}) % 20)::INT) AS response_a,
                     'Bad answer ' || (i // {ANNOTATORS_PER_ITEM}) || repeat(' words', (hash(i // {ANNOTATORS_PER_ITEM} + 7) % 20)::INT) AS response_b,
                     CASE WHEN hash(i) % 10 < 7 THEN 'a' WHEN hash(i) % 10 < 9 THEN 'b' ELSE 'tie' END AS choice,
                     CASE WHEN hash(i + 1) % 2 = 0 THEN 'a' ELSE 'b' END AS shown_first,
                     'm1' AS model_a, 'm2' AS model_b
              FROM range({events}) t(i))""")
    con.execute(f"""
        INSERT INTO thumbs BY NAME
        SELECT *, md5(prompt::VARCHAR || chr(31) || response) AS item_id, md5(prompt::VARCHAR) AS prompt_hash
        FROM (SELECT {common},
                     'Answer ' || (i // {ANNOTATORS_PER_ITEM}) || repeat(' text', (hash(i // {ANNOTATORS_PER_ITEM}) % 20)::INT) AS response,
                     CASE WHEN (hash(i // {ANNOTATORS_PER_ITEM}) % 3 = 0) = (hash(i) % 10 < 8) THEN 'up' ELSE 'down' END AS rating,
                     'm1' AS model_id
              FROM range({events}) t(i))""")
    con.close()


def pandas_aggregation(db: str) -> dict:
    import duckdb

    con = duckdb.connect(db, read_only=True)
    started = time.perf_counter()
    pairs = con.sql("SELECT pair_id, prompt::VARCHAR AS prompt, response_a, response_b, choice FROM pairwise_current").df()
    # Straightforward pandas: canonical order of the two responses, then count votes per pair.
    first = pairs[["response_a", "response_b"]].min(axis=1)
    chosen = pairs["response_a"].where(pairs["choice"] == "a", pairs["response_b"])
    pairs["vote1"] = ((pairs["choice"] != "tie") & (chosen == first)).astype(int)
    pairs["vote2"] = ((pairs["choice"] != "tie") & (chosen != first)).astype(int)
    pairs["r1"], pairs["r2"] = first, pairs[["response_a", "response_b"]].max(axis=1)
    grouped = pairs.groupby("pair_id").agg(prompt=("prompt", "first"), r1=("r1", "first"), r2=("r2", "first"), w1=("vote1", "sum"), w2=("vote2", "sum"), n=("choice", "size"))
    decided = grouped[grouped.w1 != grouped.w2].copy()
    decided["chosen"] = decided.r1.where(decided.w1 > decided.w2, decided.r2)
    decided["rejected"] = decided.r2.where(decided.w1 > decided.w2, decided.r1)
    decided["agreement"] = decided[["w1", "w2"]].max(axis=1) / decided.n
    thumbs = con.sql("SELECT item_id, prompt::VARCHAR AS prompt, response, rating FROM thumbs_current").df()
    thumbs["up"] = (thumbs.rating == "up").astype(int)
    items = thumbs.groupby("item_id").agg(prompt=("prompt", "first"), completion=("response", "first"), up=("up", "sum"), n=("rating", "size"))
    items["down"] = items.n - items.up
    kto = items[items.up != items.down].copy()
    kto["label"] = kto.up > kto.down
    return {"seconds": time.perf_counter() - started, "pairs": len(decided), "kto_rows": len(kto)}


def prefstream_aggregation(db: str) -> dict:
    from prefstream.prep.aggregate import Window, decide_pairs, decide_thumbs, pairwise_items, thumbs_items
    from prefstream.store import open_store

    con = open_store(db, read_only=True)
    started = time.perf_counter()
    pairs, _ = decide_pairs(pairwise_items(con, Window()))
    kto, _ = decide_thumbs(thumbs_items(con, Window()))
    return {"seconds": time.perf_counter() - started, "pairs": pairs.height, "kto_rows": kto.height}


def prefstream_export(db: str, kind: str, out: str) -> dict:
    import datasets

    from prefstream.prep import ExportSettings, Output, export
    from prefstream.store import open_store

    datasets.disable_progress_bars()
    con = open_store(db)
    started = time.perf_counter()
    manifest = export(con, ExportSettings(kind=kind), Output(out=Path(out), force=True))
    return {"seconds": time.perf_counter() - started, "rows": sum(manifest["rows"].values())}


def child(args) -> None:
    if args.role == "pandas":
        out = pandas_aggregation(args.db)
    elif args.role == "prefstream":
        out = prefstream_aggregation(args.db)
    else:
        out = prefstream_export(args.db, args.role.split("-")[1], args.out)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(role: str, db: str, out: str = "") -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", role, "--db", db, "--out", out], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="pairwise events, and as many thumbs")
    parser.add_argument("--child", dest="role")
    parser.add_argument("--db")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.role:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        dbs = {}
        for n in (args.events // 4, args.events):
            dbs[n] = f"{tmp}/bench-{n}.duckdb"
            started = time.perf_counter()
            build(dbs[n], n)
            print(f"built a store with {n:,} pairwise + {n:,} thumbs events in {time.perf_counter() - started:.1f}s")
        db = dbs[args.events]
        base = run_child("pandas", db)
        ours = run_child("prefstream", db)
        assert (base["pairs"], base["kto_rows"]) == (ours["pairs"], ours["kto_rows"]), (base, ours)
        print(f"aggregation of {args.events:,} + {args.events:,} events -> {ours['pairs']:,} DPO pairs, {ours['kto_rows']:,} KTO rows")
        print(f"  (a) pandas group-by:            {base['seconds']:6.2f}s  peak RSS {base['peak_rss_mb']:6.0f} MB")
        print(f"  (b) prefstream (DuckDB+polars): {ours['seconds']:6.2f}s  peak RSS {ours['peak_rss_mb']:6.0f} MB")
        print(f"  speed-up (a)/(b) = {base['seconds'] / ours['seconds']:.1f}x  (target >= 5x); memory (b)/(a) = {ours['peak_rss_mb'] / base['peak_rss_mb']:.2f}")
        for kind in ("dpo", "kto"):
            small = run_child(f"export-{kind}", dbs[args.events // 4], f"{tmp}/{kind}-small")
            full = run_child(f"export-{kind}", db, f"{tmp}/{kind}-full")
            print(f"full `export {kind}` (split, Arrow, content hash, save_to_disk, manifest): {full['seconds']:.1f}s for {full['rows']:,} rows, "
                  f"peak RSS {small['peak_rss_mb']:.0f} MB at {args.events // 4:,} events -> {full['peak_rss_mb']:.0f} MB at {args.events:,}")


if __name__ == "__main__":
    main()
