"""File backfill: JSONL files (one event a line) through the same validation and sink.

Each line's source is ``path:line``. A file is checkpointed like a Kafka partition (the
``prefstream:files`` group, the line number as offset) in the same transaction as its
rows, so running the same files again lands only lines not landed before, and an
interrupted backfill resumes where its last batch committed. Blank lines are skipped;
every other line lands as an event or a dead letter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from prefstream.errors import PrefstreamError
from prefstream.ingest.sink import FILES_GROUP, LandCounts, RawBatch, StoreSink
from prefstream.schemas import DEFAULT_MAX_BYTES
from prefstream.store import Store


def ingest_files(
    store: Store,
    paths: Iterable[str | Path],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    batch_size: int = 5000,
    on_batch: Callable[[LandCounts], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> LandCounts:
    """Land every line of ``paths``; ``on_batch`` is called with the running totals.

    ``should_stop`` is checked between batches: a stop request ends after the batch in hand
    is committed (or before it started), never in the middle of a transaction.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise PrefstreamError(f"no such file: {path}")
    sink = StoreSink(store, max_bytes=max_bytes)
    total = LandCounts()

    def flush(batch: RawBatch) -> None:
        total.add(sink.land(batch, group_id=FILES_GROUP)[0])
        if on_batch:
            on_batch(total)

    for path in paths:
        name = str(path.resolve())
        batch = _new_batch()
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                line = line.rstrip(b"\r\n")
                if not line.strip():
                    continue
                batch.values.append(line)
                batch.sources.append(f"{name}:{number}")
                batch.topics.append(name)
                batch.partitions.append(0)
                batch.offsets.append(number)
                if len(batch) >= batch_size:
                    flush(batch)
                    batch = _new_batch()
                    if should_stop():
                        return total
        if len(batch):
            flush(batch)
        if should_stop():
            break
    return total


def looks_like_json_array(path: str | Path) -> bool:
    """True when a file starts with ``[``: a JSON array (or pretty-printed JSON), not JSONL."""
    with open(path, "rb") as f:
        return f.read(4096).lstrip().startswith(b"[")


def _new_batch() -> RawBatch:
    return RawBatch(values=[], sources=[], topics=[], partitions=[], offsets=[])
