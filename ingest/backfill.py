"""File backfill: JSONL files (one event a line) through the same validation and sink.

Each line's source is ``path:line``, so running the same files again lands nothing new.
Blank lines are skipped; every other line lands as an event or a dead letter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import duckdb

from prefstream.errors import PrefstreamError
from prefstream.ingest.sink import DuckDBSink, LandCounts, RawBatch
from prefstream.schemas import DEFAULT_MAX_BYTES


def ingest_files(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[str | Path],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    batch_size: int = 5000,
    on_batch: Callable[[LandCounts], None] | None = None,
) -> LandCounts:
    """Land every line of ``paths``; ``on_batch`` is called with the running totals."""
    sink = DuckDBSink(con, max_bytes=max_bytes)
    total = LandCounts()
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise PrefstreamError(f"no such file: {path}")
        name = str(path.resolve())
        batch = RawBatch(values=[], sources=[])
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                line = line.rstrip(b"\r\n")
                if not line.strip():
                    continue
                batch.values.append(line)
                batch.sources.append(f"{name}:{number}")
                if len(batch) >= batch_size:
                    total.add(sink.land(batch)[0])
                    batch = RawBatch(values=[], sources=[])
                    if on_batch:
                        on_batch(total)
        if len(batch):
            total.add(sink.land(batch)[0])
            if on_batch:
                on_batch(total)
    return total
