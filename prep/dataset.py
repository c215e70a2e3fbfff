"""``_prep_export`` -> declared Arrow schemas -> a DatasetDict on disk (or parquet / jsonl), and the content hash.

Rows stream from DuckDB in Arrow record batches straight to files, so memory stays flat in
the number of rows; the Hugging Face format is built from a memory-mapped Arrow file with
``datasets`` itself (``save_to_disk``), not by hand.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa

from prefstream.prep.chat import Form

BATCH_ROWS = 65_536


def schema(family: str, form: Form) -> pa.Schema:
    """The export's columns and types: TRL's columns first, then the documented extras."""
    text = form.message_type() if form.conversational else pa.string()
    head = [("prompt", text), ("completion", text), ("label", pa.bool_())] if family == "kto" else [
        ("prompt", text), ("chosen", text), ("rejected", text)
    ]
    extras = [("weight", pa.float64()), ("agreement", pa.float64()), ("n_annotators", pa.int64()), ("source_event_ids", pa.list_(pa.string()))]
    if family != "kto":
        extras.append(("pair_id", pa.string()))
    return pa.schema(head + extras)


def _select(target: pa.Schema, split: str) -> str:
    columns = ", ".join(f'"{name}"' for name in target.names)
    return f"SELECT {columns} FROM _prep_export WHERE split = '{split}' ORDER BY row_order"


def split_digests(con, target: pa.Schema) -> dict[str, str]:
    """Per split: sha256 over the sorted md5s of its rows as canonical JSON (DuckDB's ``to_json``
    of the row, columns in export order), so the digest does not depend on row order or file
    format. md5 per row (half the cost of sha256 here) guards against accidents, not forgery;
    the digest over them is sha256."""
    row = "struct_pack(" + ", ".join(f'"{n}" := "{n}"' for n in target.names) + ")"
    found = dict(
        con.execute(
            f"""SELECT split, sha256(string_agg(h, chr(10) ORDER BY h))
                FROM (SELECT split, md5(to_json({row})) AS h FROM _prep_export) GROUP BY split"""
        ).fetchall()
    )
    return {split: found.get(split, hashlib.sha256(b"").hexdigest()) for split in ("train", "test")}


def content_hash(kind: str, prompt_format: str, settings: dict, digests: dict[str, str], rows: dict[str, int]) -> str:
    """sha256 of the settings and the splits' row digests (canonical JSON). Nothing time-varying."""
    body = {
        "kind": kind,
        "prompt_format": prompt_format,
        "settings": settings,
        "splits": {s: {"rows": rows[s], "sha256": digests[s]} for s in sorted(digests)},
    }
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_splits(con, target: pa.Schema, directory: Path, fmt: str, fingerprint: str, scratch: Path, progress=lambda message: None) -> dict[str, str]:
    """Write train and test into ``directory``; return ``{split: relative file or folder}``.

    ``scratch`` holds intermediate Arrow files (removed by the caller); ``progress`` hears
    the rows written so far, batch by batch.
    """
    if fmt == "jsonl":
        files = {}
        for split in ("train", "test"):
            progress(f"writing {split}.jsonl")
            path = directory / f"{split}.jsonl"
            quoted = str(path).replace("'", "''")
            con.execute(f"COPY ({_select(target, split)}) TO '{quoted}' (FORMAT json)")
            files[split] = path.name
        return files
    if fmt == "parquet":
        import pyarrow.parquet as pq

        files = {}
        for split in ("train", "test"):
            path = directory / f"{split}.parquet"
            with pq.ParquetWriter(path, target) as writer:
                for batch in _batches(con, target, split, progress):
                    writer.write_batch(batch)
            files[split] = path.name
        return files
    return _write_hf(con, target, directory, fingerprint, scratch, progress)


def _batches(con, target: pa.Schema, split: str, progress):
    """The split's rows as record batches of the declared types, reporting the count written."""
    written = 0
    for batch in con.sql(_select(target, split)).to_arrow_reader(BATCH_ROWS):
        yield batch.cast(target)
        written += batch.num_rows
        progress(f"writing {split}: {written:,} rows")


def _write_hf(con, target: pa.Schema, directory: Path, fingerprint: str, scratch: Path, progress) -> dict[str, str]:
    import datasets
    from datasets.table import MemoryMappedTable

    splits = {}
    for split in ("train", "test"):
        # Arrow IPC stream, the format datasets itself keeps on disk; memory-mapped back below.
        path = scratch / f"{split}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, target) as writer:
            for batch in _batches(con, target, split, progress):
                writer.write_batch(batch)
        # A fixed fingerprint (from the content) keeps state.json identical across runs.
        splits[split] = datasets.Dataset(MemoryMappedTable.from_file(str(path)), fingerprint=f"{fingerprint}-{split}")
    progress("saving the DatasetDict")
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        datasets.DatasetDict(splits).save_to_disk(str(directory))
    finally:
        if bars:
            datasets.enable_progress_bars()
    return {"train": "train", "test": "test"}
