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
in Rust) without touching the store; :meth:`StoreSink.write` runs the transaction, in
which DuckDB extracts the columns from the validated JSON itself, vectorised, instead of
Python building rows field by field.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import duckdb
import orjson
import polars as pl

from prefstream.schemas import DEFAULT_MAX_BYTES, SCHEMA_VERSION, Rejected, parse_raw
from prefstream.store import Store

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


def kafka_source(topic: str, partition: int, offset: int) -> str:
    return f"{topic}[{partition}]@{offset}"


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
    """A validated batch, ready for one transaction."""

    events: pl.DataFrame  # kind, value (validated JSON), prompt_json, ts, retry, topic, partition, offset, source
    dead: pl.DataFrame  # raw, reason, key, topic, partition, offset, source
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)


_WHERE = {"topic": pl.String, "partition": pl.Int32, "offset": pl.Int64, "source": pl.String}
_EVENTS_SCHEMA = {
    "kind": pl.String, "value": pl.Binary, "prompt_json": pl.String, "ts": pl.Datetime("us", "UTC"), "retry": pl.Boolean, **_WHERE,
}
_DEAD_SCHEMA = {"raw": pl.Binary, "reason": pl.String, "key": pl.Binary, **_WHERE}

_WHERE_FROM = """coalesce(source, topic || '[' || "partition" || ']@' || "offset")"""
# File rows keep their position in ``source`` only; topic/partition/offset are Kafka's.
_KAFKA_WHERE = """CASE WHEN source IS NULL THEN topic END AS topic,
       CASE WHEN source IS NULL THEN "partition" END AS "partition",
       CASE WHEN source IS NULL THEN "offset" END AS "offset\""""

# Every field but ts (parsed by pydantic) and the prompt (canonicalised in Python) is read
# back from the validated JSON by DuckDB; json_transform parses each document once into a
# struct (3x cheaper than one ->> per field).
_SHAPES = {
    "thumbs": {"response": "VARCHAR", "rating": "VARCHAR", "model_id": "VARCHAR"},
    "pairwise": {
        "response_a": "VARCHAR", "response_b": "VARCHAR", "choice": "VARCHAR",
        "shown_first": "VARCHAR", "model_a": "VARCHAR", "model_b": "VARCHAR",
    },
}
_COMMON_SHAPE = {"event_id": "VARCHAR", "annotator_id": "VARCHAR", "annotator_kind": "VARCHAR", "metadata": "JSON"}
_ITEM_KEYS = {
    "thumbs": "md5(prompt_json || chr(31) || response) AS item_id",
    "pairwise": "md5(prompt_json || chr(31) || least(response_a, response_b) || chr(31) || greatest(response_a, response_b)) AS pair_id",
}


def _insert_sql(kind: str) -> str:
    shape = orjson.dumps({**_COMMON_SHAPE, **_SHAPES[kind]}).decode()
    fields = ", ".join(f"e.{name}" for name in _SHAPES[kind])
    return f"""
INSERT INTO {kind}_raw BY NAME
SELECT * EXCLUDE (prompt_json), prompt_json::JSON AS prompt, md5(prompt_json) AS prompt_hash, {_ITEM_KEYS[kind]}
FROM (
    SELECT e.event_id, {SCHEMA_VERSION} AS schema_version, ts, prompt_json,
           e.annotator_id, coalesce(e.annotator_kind, 'user') AS annotator_kind,
           coalesce(e.metadata, '{{}}'::JSON) AS metadata, {fields},
           {_KAFKA_WHERE}, where_from AS source, current_timestamp AS ingested_at
    FROM (SELECT ts, prompt_json, topic, "partition", "offset", source, {_WHERE_FROM} AS where_from,
                 json_transform(decode(value), '{shape}') AS e
          FROM batch_events WHERE kind = '{kind}'))"""


_INSERT_SQL = {kind: _insert_sql(kind) for kind in _SHAPES}

_DEAD_SQL = f"""
INSERT INTO dead_letters_raw
SELECT {_WHERE_FROM}, raw, reason, key, {_KAFKA_WHERE}, current_timestamp FROM batch_dead"""

_STORED_OFFSETS_SQL = 'SELECT topic, "partition", next_offset FROM kafka_offsets WHERE group_id = ?'

_OFFSETS_SQL = """
INSERT INTO offsets_log
SELECT ?, ?, ?, ?, coalesce(max(epoch), 0), current_timestamp FROM offsets_log
WHERE group_id = ? AND topic = ? AND "partition" = ?"""

# Errors that mean "this data", not "this store": worth isolating the row that caused them.
_DATA_ERRORS = (duckdb.ConversionException, duckdb.InvalidInputException, duckdb.ConstraintException)


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
        rows = self.store.transact(lambda con: con.execute(_STORED_OFFSETS_SQL, [group_id]).fetchall(), what="read offsets")
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
        """Validate every message; no store access."""
        keep: list[int] = []
        kinds: list[str] = []
        values: list[bytes] = []
        prompts: list[str] = []
        stamps: list[Any] = []
        retries: list[bool] = []
        dead: list[int] = []
        reasons: list[str] = []
        seen: set[str] = set()
        for i, raw in enumerate(batch.values):
            event, raw_is_current = parse_raw(raw, self.max_bytes)
            if type(event) is Rejected:
                dead.append(i)
                reasons.append(event.reason)
                continue
            retries.append(event.event_id in seen)
            seen.add(event.event_id)
            keep.append(i)
            kinds.append(event.kind)
            stamps.append(event.ts)
            prompts.append(canonical_prompt(event.prompt))
            # Upcast events, and ones whose unknown fields moved into metadata, are re-serialised.
            values.append(raw if raw_is_current else event.__pydantic_serializer__.to_json(event))
        events = pl.DataFrame(
            {"kind": kinds, "value": values, "prompt_json": prompts, "ts": stamps, "retry": retries, **_where(batch, keep)},
            schema=_EVENTS_SCHEMA,
        )
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

        A document that pydantic accepted but DuckDB cannot read would otherwise fail the
        same batch forever; such rows are found, moved to dead letters with DuckDB's
        reason, and the rest is written, still in one transaction.
        """
        try:
            return self.store.transact(lambda con: self._write(con, prepared, group_id), what="land batch")
        except _DATA_ERRORS:
            unreadable = self._rows_duckdb_rejects(prepared.events)
            if not unreadable:
                raise
            moved = _move_to_dead(prepared, unreadable)
            return self.store.transact(lambda con: self._write(con, moved, group_id), what="land batch")

    def _rows_duckdb_rejects(self, events: pl.DataFrame) -> dict[int, str]:
        """Try each event alone in a rolled-back transaction; return the ones that fail."""
        con = self.store.write()
        rejected = {}
        try:
            for i in range(events.height):
                row = events.slice(i, 1)
                with _registered(con, batch_events=row):
                    con.execute("BEGIN TRANSACTION")
                    try:
                        con.execute(_INSERT_SQL[row["kind"][0]]).fetchall()
                    except _DATA_ERRORS as exc:
                        rejected[i] = f"store rejected the event: {str(exc).splitlines()[0]}"
                    finally:
                        con.execute("ROLLBACK")
        finally:
            con.close()
        return rejected

    def _write(self, con, prepared: PreparedBatch, group_id: str) -> tuple[LandCounts, dict[tuple[str, int], int]]:
        counts = LandCounts()
        next_offsets = prepared.next_offsets
        events, dead = prepared.events, prepared.dead
        if next_offsets:
            stored = {(t, p): o for t, p, o in con.execute(_STORED_OFFSETS_SQL, [group_id]).fetchall()}
            if any(stored.get(tp, 0) > 0 for tp in next_offsets):
                events, dead, counts.replayed = _drop_landed(stored, events, dead)
                next_offsets = {tp: o for tp, o in next_offsets.items() if o > stored.get(tp, 0)}
        with _registered(con, batch_events=events, batch_dead=dead):
            for kind in _SHAPES:
                rows = events.filter(pl.col("kind") == kind)
                if rows.height:
                    con.execute(_INSERT_SQL[kind])
                    retries = int(rows["retry"].sum())
                    counts.duplicates += retries
                    setattr(counts, kind, rows.height - retries)
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


def _move_to_dead(prepared: PreparedBatch, rows: dict[int, str]) -> PreparedBatch:
    index = pl.Series("i", list(rows), dtype=pl.UInt32)
    moved = prepared.events[index].select(
        pl.col("value").alias("raw"), pl.Series("reason", list(rows.values())), pl.lit(None, pl.Binary).alias("key"), *_WHERE
    )
    kept = prepared.events.with_row_index("i").filter(~pl.col("i").is_in(index)).drop("i")
    return PreparedBatch(kept, pl.concat([prepared.dead, moved]), prepared.next_offsets)


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
