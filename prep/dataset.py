"""Rows -> Arrow tables in TRL's columns -> a DatasetDict on disk (or parquet / jsonl).

Plain exports keep string prompts and completions. If any prompt is a chat message list,
the export is conversational (TRL's format): every prompt becomes a message list (a plain
one becomes a single user message) and each completion a one-message assistant list.
One Arrow type per column is why an export cannot mix the two.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
TEXT_COLUMNS = {"kto": ["completion"], "dpo": ["chosen", "rejected"]}
EXTRA_COLUMNS = [
    ("agreement", pa.float64()),
    ("n_annotators", pa.int32()),
    ("source_event_ids", pa.list_(pa.string())),
]


def is_conversational(rows: pl.DataFrame) -> bool:
    return bool(rows.select(pl.col("prompt").str.starts_with("[").any()).item())


def to_arrow(rows: pl.DataFrame, family: str, conversational: bool) -> pa.Table:
    """The split's rows as an Arrow table with exactly the export's columns and types."""
    prompts = [orjson.loads(p) for p in rows["prompt"].to_list()]
    if conversational:
        prompt = pa.array([p if isinstance(p, list) else [{"role": "user", "content": p}] for p in prompts], MESSAGES)
    else:
        prompt = pa.array(prompts, pa.string())
    columns: dict[str, pa.Array] = {"prompt": prompt}
    for name in TEXT_COLUMNS[family]:
        texts = rows[name].to_list()
        columns[name] = pa.array([[{"role": "assistant", "content": t}] for t in texts], MESSAGES) if conversational else pa.array(texts, pa.string())
    if family == "kto":
        columns["label"] = pa.array(rows["label"].to_list(), pa.bool_())
    for name, arrow_type in EXTRA_COLUMNS:
        columns[name] = pa.array(rows[name].to_list(), arrow_type)
    key = "item_id" if family == "kto" else "pair_id"
    columns[key] = pa.array(rows[key].to_list(), pa.string())
    return pa.table(columns)


def content_hash(tables: dict[str, pa.Table], settings: dict) -> str:
    """sha256 over the settings and every row, canonical JSON, split by split."""
    digest = hashlib.sha256(orjson.dumps(settings, option=orjson.OPT_SORT_KEYS))
    for split in sorted(tables):
        digest.update(f"\n[{split}]\n".encode())
        for batch in tables[split].to_batches(max_chunksize=50_000):
            for row in batch.to_pylist():
                digest.update(orjson.dumps(row, option=orjson.OPT_SORT_KEYS) + b"\n")
    return "sha256:" + digest.hexdigest()


def write_tables(tables: dict[str, pa.Table], directory: Path, fmt: str, fingerprint: str) -> None:
    """Write the splits into ``directory`` (which exists and is empty)."""
    if fmt == "hf":
        from datasets import Dataset, DatasetDict
        from datasets.table import InMemoryTable

        # A fixed fingerprint (from the content hash) keeps state.json identical across runs.
        splits = {name: Dataset(InMemoryTable(t), fingerprint=f"{fingerprint}-{name}") for name, t in tables.items()}
        DatasetDict(splits).save_to_disk(str(directory))
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        for name, table in tables.items():
            pq.write_table(table, directory / f"{name}.parquet")
    elif fmt == "jsonl":
        for name, table in tables.items():
            with open(directory / f"{name}.jsonl", "wb") as f:
                for batch in table.to_batches(max_chunksize=50_000):
                    f.writelines(orjson.dumps(row) + b"\n" for row in batch.to_pylist())
    else:
        raise ValueError(f"unknown format {fmt!r}")
