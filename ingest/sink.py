"""The store sink: one batch of raw messages -> one DuckLake transaction.

A batch's valid rows, dead letters and the next offsets are written in ONE transaction;
it is the unit of durability (DESIGN.md, "Exactly-once landing"). Inside it, messages
below the stored next offset of their partition are dropped, so a redelivery after a
crash does not land again. Several processes may still write one batch twice (a zombie
consumer that lost its partitions, two groups replaying a topic): the raw tables keep
both copies, and the views users query show each event once.

File backfills use the same protocol: a file is a "partition" of the ``prefstream:files``
group, its line numbers the offsets, so running the same files again lands only new lines.

Landing has two steps: :meth:`StoreSink.prepare` validates every message (pydantic-core,
in Rust) and lays its fields out as columns without touching the store;
:meth:`StoreSink.write` runs the transaction, in which DuckDB adds the hashes, vectorised.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl

from prefstream.schemas import DEFAULT_MAX_BYTES, SCHEMA_VERSION, Rejected, parse_raw
from prefstream.store import Store
from prefstream.store.lake import retrying

FILES_GROUP = "prefstream:files"


@dataclass
class RawBatch:
    """Messages as received, column by column, with where each came from.

    Kafka batches give ``topics`` / ``partitions`` / ``offsets``; file batches also give
    ``sources`` (``path:line``), with the file as topic, partition 0 and the line as offset.
    """

    values: list[bytes | None]
    keys: list[bytes | None] | None = None
    topics: list[str] | None = None
    partitions: list[int] | None = None
    offsets: list[int] | None = None
    sources: list[str] | None = None

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class LandCounts:
    """What one or more batches did to the store."""

    thumbs: int = 0
    pairwise: int = 0
    dead_letters: int = 0
    duplicates: int = 0  # producer retries seen within a batch (the ``duplicates`` view has them all)
    replayed: int = 0  # already landed from the same source (a re-run or a redelivery)
    dead_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def landed(self) -> int:
        return self.thumbs + self.pairwise

    @property
    def seen(self) -> int:
        return self.landed + self.dead_letters + self.duplicates + self.replayed

    def add(self, other: "LandCounts") -> None:
        self.thumbs += other.thumbs
        self.pairwise += other.pairwise
        self.dead_letters += other.dead_letters
        self.duplicates += other.duplicates
        self.replayed += other.replayed
        for reason, n in other.dead_reasons.items():
            self.dead_reasons[reason] = self.dead_reasons.get(reason, 0) + n


@dataclass
class PreparedBatch:
    """A validated batch, ready for one transaction: one frame of columns per kind, and dead letters."""

    events: dict[str, pl.DataFrame]  # kind -> its table's columns, plus retry / topic / partition / offset / source
    dead: pl.DataFrame  # raw, reason, key, topic, partition, offset, source
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)


_WHERE = {"topic": pl.String, "partition": pl.Int32, "offset": pl.Int64, "source": pl.String}
_COMMON = {
    "event_id": pl.String, "ts": pl.Datetime("us", "UTC"), "prompt_json": pl.String, "annotator_id": pl.String,
    "annotator_kind": pl.String, "metadata": pl.String,
}
_FIELDS = {
    "thumbs": {"response": pl.String, "rating": pl.String, "model_id": pl.String},
    "pairwise": {
        "response_a": pl.String, "response_b": pl.String, "choice": pl.String,
        "shown_first": pl.String, "model_a": pl.String, "model_b": pl.String,
    },
}
_ROW_SCHEMAS = {kind: {**_COMMON, **fields} for kind, fields in _FIELDS.items()}
_DEAD_SCHEMA = {"raw": pl.Binary, "reason": pl.String, "key": pl.Binary, **_WHERE}

_WHERE_FROM = """coalesce(source, topic || '[' || "partition" || ']@' || "offset")"""
# File rows keep their position in ``source`` only; topic/partition/offset are Kafka's.
_KAFKA_WHERE = (
    'CASE WHEN source IS NULL THEN topic END AS topic, '
    'CASE WHEN source IS NULL THEN "partition" END AS "partition", '
    'CASE WHEN source IS NULL THEN "offset" END AS "offset"'
)
_ITEM_KEYS = {
    "thumbs": "md5(prompt_json || chr(31) || response) AS item_id",
    "pairwise": "md5(prompt_json || chr(31) || least(response_a, response_b) || chr(31) || greatest(response_a, response_b)) AS pair_id",
}


def _insert_sql(kind: str) -> str:
    # The columns come straight from the validated pydantic objects (no second JSON parse);
    # DuckDB adds the vectorised hashes and the source position.
    fields = ", ".join(_FIELDS[kind])
    return f"""
INSERT INTO {kind}_raw BY NAME
SELECT event_id, {SCHEMA_VERSION} AS schema_version, ts, prompt_json::JSON AS prompt, md5(prompt_json) AS prompt_hash,
       annotator_id, annotator_kind, metadata::JSON AS metadata, {fields}, {_ITEM_KEYS[kind]},
       {_KAFKA_WHERE}, {_WHERE_FROM} AS source, current_timestamp AS ingested_at
FROM batch_{kind}"""


_INSERT_SQL = {kind: _insert_sql(kind) for kind in _FIELDS}

_DEAD_SQL = f"""
INSERT INTO dead_letters_raw
SELECT {_WHERE_FROM}, raw, reason, key, {_KAFKA_WHERE}, current_timestamp FROM batch_dead"""

_STORED_OFFSETS_SQL = 'SELECT topic, "partition", next_offset FROM kafka_offsets WHERE group_id = ?'

_OFFSETS_SQL = """
INSERT INTO offsets_log
SELECT ?, ?, ?, ?, coalesce(max(epoch), 0), current_timestamp FROM offsets_log
WHERE group_id = ? AND topic = ? AND "partition" = ?"""



def _row(event) -> tuple:
    """The event's column values in ``_ROW_SCHEMAS`` order."""
    return (
        event.event_id, event.ts, canonical_prompt(event.prompt), event.annotator_id, event.annotator_kind,
        orjson.dumps(event.metadata).decode(), *(getattr(event, name) for name in _FIELDS[event.kind]),
    )


def canonical_prompt(prompt: Any) -> str:
    """The prompt as canonical JSON (sorted keys, no nulls): equal prompts hash equally
    whatever the producer's spacing, escaping or key order."""
    if isinstance(prompt, str):
        return orjson.dumps(prompt).decode()
    return orjson.dumps([m.model_dump(exclude_none=True) for m in prompt], option=orjson.OPT_SORT_KEYS).decode()


class StoreSink:
    """Lands batches into an open store."""

    def __init__(self, store: Store, *, max_bytes: int = DEFAULT_MAX_BYTES):
        self.store = store
        self.max_bytes = max_bytes

    def stored_offsets(self, group_id: str) -> dict[tuple[str, int], int]:
        """``(topic, partition) -> next offset`` recorded for ``group_id`` at the latest snapshot."""
        # Its own connection: the store's writer may be busy landing a batch on another thread.
        con = self.store.write()
        try:
            rows = retrying(lambda: con.execute(_STORED_OFFSETS_SQL, [group_id]).fetchall(), what="read offsets")
        finally:
            con.close()
        return {(t, p): o for t, p, o in rows}

    def reset_offsets(self, group_id: str, offsets: dict[tuple[str, int], int]) -> None:
        """Move ``group_id``'s stored offsets (backwards too): a new epoch for each partition."""

        def reset(con) -> None:
            epoch = con.execute("SELECT coalesce(max(epoch), 0) + 1 FROM offsets_log WHERE group_id = ?", [group_id]).fetchall()[0][0]
            for (topic, partition), offset in offsets.items():
                con.execute("INSERT INTO offsets_log VALUES (?, ?, ?, ?, ?, current_timestamp)", [group_id, topic, partition, offset, epoch])

        self.store.transact(reset, what="reset offsets")

    def land(self, batch: RawBatch, *, group_id: str) -> tuple[LandCounts, dict[tuple[str, int], int]]:
        """Validate and write ``batch`` in one transaction (see :meth:`write`)."""
        return self.write(self.prepare(batch), group_id=group_id)

    def prepare(self, batch: RawBatch) -> PreparedBatch:
        """Validate every message and lay out its columns; no store access."""
        tuples: dict[str, list[tuple]] = {kind: [] for kind in _FIELDS}
        retries: dict[str, list[bool]] = {kind: [] for kind in _FIELDS}
        rows: dict[str, list[int]] = {kind: [] for kind in _FIELDS}
        dead: list[int] = []
        reasons: list[str] = []
        seen: set[str] = set()
        for i, raw in enumerate(batch.values):
            event, _ = parse_raw(raw, self.max_bytes)
            if type(event) is Rejected:
                dead.append(i)
                reasons.append(event.reason)
                continue
            try:
                row = _row(event)
            except (TypeError, ValueError) as exc:  # e.g. metadata holding an integer beyond 64 bits
                dead.append(i)
                reasons.append(f"cannot store the event: {exc}")
                continue
            tuples[event.kind].append(row)
            rows[event.kind].append(i)
            retries[event.kind].append(event.event_id in seen)
            seen.add(event.event_id)
        events = {
            kind: pl.DataFrame(tuples[kind], schema=_ROW_SCHEMAS[kind], orient="row").with_columns(
                pl.Series("retry", retries[kind], pl.Boolean), *(pl.Series(k, v, _WHERE[k]) for k, v in _where(batch, rows[kind]).items())
            )
            for kind in _FIELDS
        }
        dead_frame = pl.DataFrame(
            {"raw": [batch.values[i] for i in dead], "reason": reasons, "key": _pick(batch.keys, dead), **_where(batch, dead)},
            schema=_DEAD_SCHEMA,
        )
        next_offsets: dict[tuple[str, int], int] = {}
        for topic, partition, offset in zip(batch.topics or (), batch.partitions or (), batch.offsets or ()):
            if offset >= next_offsets.get((topic, partition), 0):
                next_offsets[(topic, partition)] = offset + 1
        return PreparedBatch(events, dead_frame, next_offsets)

    def write(self, prepared: PreparedBatch, *, group_id: str) -> tuple[LandCounts, dict[tuple[str, int], int]]:
        """Write a prepared batch in ONE transaction, retried on contention.

        Rows below the stored next offset of their partition are dropped and the new next
        offsets stored. Returns the counts and the next offsets written, which the caller
        then commits to Kafka.
        """
        return self.store.transact(lambda con: self._write(con, prepared, group_id), what="land batch")

    def _write(self, con, prepared: PreparedBatch, group_id: str) -> tuple[LandCounts, dict[tuple[str, int], int]]:
        counts = LandCounts()
        next_offsets = prepared.next_offsets
        events, dead = prepared.events, prepared.dead
        if next_offsets:
            stored = {(t, p): o for t, p, o in con.execute(_STORED_OFFSETS_SQL, [group_id]).fetchall()}
            if any(stored.get(tp, 0) > 0 for tp in next_offsets):
                kinds = list(events)
                *kept, counts.replayed = _drop_landed(stored, *events.values(), dead)
                events, dead = dict(zip(kinds, kept[:-1])), kept[-1]
                next_offsets = {tp: o for tp, o in next_offsets.items() if o > stored.get(tp, 0)}
        with _registered(con, batch_dead=dead, **{f"batch_{kind}": frame for kind, frame in events.items()}):
            for kind, frame in events.items():
                if frame.height:
                    con.execute(_INSERT_SQL[kind])
                    retries = int(frame["retry"].sum())
                    counts.duplicates += retries
                    setattr(counts, kind, frame.height - retries)
            if dead.height:
                con.execute(_DEAD_SQL)
                counts.dead_letters = dead.height
                for reason, n in dead.group_by("reason").len().iter_rows():
                    counts.dead_reasons[reason] = n
            for (topic, partition), offset in next_offsets.items():
                con.execute(_OFFSETS_SQL, [group_id, topic, partition, offset, group_id, topic, partition])
        return counts, next_offsets


@contextlib.contextmanager
def _registered(con, **frames: pl.DataFrame):
    for name, frame in frames.items():
        con.register(name, frame)
    try:
        yield
    finally:
        for name in frames:
            con.unregister(name)


def _pick(column: list | None, rows: list[int]) -> list:
    return [column[i] for i in rows] if column is not None else [None] * len(rows)


def _where(batch: RawBatch, rows: list[int]) -> dict[str, list]:
    return {
        "topic": _pick(batch.topics, rows),
        "partition": _pick(batch.partitions, rows),
        "offset": _pick(batch.offsets, rows),
        "source": _pick(batch.sources, rows),
    }


def _drop_landed(stored: dict[tuple[str, int], int], *frames: pl.DataFrame):
    """Drop rows whose offset is below the stored next offset of their partition.

    Returns the filtered frames followed by the number of rows dropped.
    """
    floor = pl.DataFrame(
        {"topic": [t for t, _ in stored], "partition": [p for _, p in stored], "floor": list(stored.values())},
        schema={"topic": pl.String, "partition": pl.Int32, "floor": pl.Int64},
    )
    kept = [
        f.join(floor, on=["topic", "partition"], how="left").filter(pl.col("offset") >= pl.col("floor").fill_null(0)).drop("floor")
        for f in frames
    ]
    return (*kept, sum(f.height for f in frames) - sum(k.height for k in kept))
