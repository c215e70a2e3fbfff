"""The DuckDB sink: one batch of raw messages -> one transaction.

A batch's valid rows, dead letters, duplicate records and the next Kafka offsets are
written in ONE DuckDB transaction; it is the unit of durability (DESIGN.md, "Exactly-once
landing"). Messages below the stored next offset of their partition are dropped inside
that transaction, so a redelivery after a crash can never land twice, whatever the
consumer's position was.

Landing has two steps: :meth:`DuckDBSink.prepare` validates every message (pydantic-core,
in Rust) without touching the database; :meth:`DuckDBSink.write` runs the transaction, in
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


@dataclass
class RawBatch:
    """Messages as received, column by column, with where each came from.

    Kafka batches give ``topics`` / ``partitions`` / ``offsets`` and leave ``sources``
    empty (DuckDB writes ``topic[partition]@offset``); file batches give ``sources``
    (``path:line``) only.
    """

    values: list[bytes | None]
    keys: list[bytes | None] | None = None
    topics: list[str] | None = None
    partitions: list[int] | None = None
    offsets: list[int] | None = None
    sources: list[str] | None = None

    def __len__(self) -> int:
        return len(self.values)

    def source(self, i: int) -> str:
        if self.sources is not None:
            return self.sources[i]
        return kafka_source(self.topics[i], self.partitions[i], self.offsets[i])


def kafka_source(topic: str, partition: int, offset: int) -> str:
    return f"{topic}[{partition}]@{offset}"


@dataclass
class LandCounts:
    """What one or more batches did to the store."""

    thumbs: int = 0
    pairwise: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    replayed: int = 0  # already landed from the same source (a re-run or a redelivery)

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


@dataclass
class PreparedBatch:
    """A validated batch, ready for one transaction."""

    events: pl.DataFrame  # kind, value (validated JSON), ts, topic, partition, offset, source
    dead: pl.DataFrame  # raw, reason, key, topic, partition, offset, source
    duplicates: pl.DataFrame  # source, event_id, kind, first_source, topic, partition, offset
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # Kafka batches only


_WHERE = {"topic": pl.String, "partition": pl.Int32, "offset": pl.Int64, "source": pl.String}
_EVENTS_SCHEMA = {"kind": pl.String, "value": pl.Binary, "ts": pl.Datetime("us", "UTC"), **_WHERE}
_DEAD_SCHEMA = {"raw": pl.Binary, "reason": pl.String, "key": pl.Binary, **_WHERE}
_DUPLICATES_SCHEMA = {"event_id": pl.String, "kind": pl.String, "first_source": pl.String, **_WHERE}

_WHERE_FROM = """coalesce(source, topic || '[' || "partition" || ']@' || "offset")"""

# ``batch_events`` columns: kind, value, ts, topic, partition, offset, source. Every field but
# ts (already parsed by pydantic) is read back from the validated JSON by DuckDB;
# json_transform parses each document once into a struct (3x cheaper than one ->> per field).
_SHAPES = {
    "thumbs": {"response": "VARCHAR", "rating": "VARCHAR", "model_id": "VARCHAR"},
    "pairwise": {
        "response_a": "VARCHAR", "response_b": "VARCHAR", "choice": "VARCHAR",
        "shown_first": "VARCHAR", "model_a": "VARCHAR", "model_b": "VARCHAR",
    },
}
_COMMON_SHAPE = {"event_id": "VARCHAR", "prompt": "JSON", "annotator_id": "VARCHAR", "annotator_kind": "VARCHAR", "metadata": "JSON"}

_EXTRACT = """
SELECT ts, topic, "partition", "offset",
       {where_from} AS where_from,
       json_transform(decode(value), '{shape}') AS e
FROM batch_events WHERE kind = '{kind}'"""


def _extract(kind: str) -> str:
    shape = orjson.dumps({**_COMMON_SHAPE, **_SHAPES[kind]}).decode()
    return _EXTRACT.format(kind=kind, shape=shape, where_from=_WHERE_FROM)


def _insert_sql(kind: str, item_key: str) -> str:
    # Prompts are re-serialised by DuckDB so that equal prompts hash equally whatever the
    # producer's spacing, escaping or key order.
    fields = ", ".join(f"e.{name}" for name in _SHAPES[kind])
    return f"""
INSERT OR IGNORE INTO {kind} BY NAME
SELECT * EXCLUDE (prompt_json), prompt_json::JSON AS prompt, md5(prompt_json) AS prompt_hash, {item_key}
FROM (
    SELECT e.event_id, {SCHEMA_VERSION} AS schema_version, ts,
           CASE WHEN json_type(e.prompt) = 'VARCHAR' THEN to_json(e.prompt->>'$')
                ELSE to_json(CAST(e.prompt AS STRUCT(role VARCHAR, content VARCHAR)[])) END AS prompt_json,
           e.annotator_id, coalesce(e.annotator_kind, 'user') AS annotator_kind,
           coalesce(e.metadata, '{{}}'::JSON) AS metadata, {fields},
           topic, "partition", "offset", where_from AS source, current_timestamp AS ingested_at
    FROM ({_extract(kind)}))"""


_THUMBS_SQL = _insert_sql("thumbs", "md5(prompt_json || chr(31) || response) AS item_id")
_PAIRWISE_SQL = _insert_sql(
    "pairwise",
    "md5(prompt_json || chr(31) || least(response_a, response_b) || chr(31) || greatest(response_a, response_b)) AS pair_id",
)

_DUPLICATES_SQL = """
INSERT OR IGNORE INTO duplicates
SELECT b.where_from, b.e.event_id, '{kind}', t.source, current_timestamp
FROM ({extract}) b JOIN {kind} t ON t.event_id = b.e.event_id
WHERE t.source <> b.where_from"""

_DEAD_SQL = f"""
INSERT OR IGNORE INTO dead_letters
SELECT {_WHERE_FROM}, raw, reason, key, topic, "partition", "offset", current_timestamp FROM batch_dead"""

_BATCH_DUPLICATES_SQL = f"""
INSERT OR IGNORE INTO duplicates
SELECT {_WHERE_FROM}, event_id, kind, first_source, current_timestamp FROM batch_duplicates"""

# Errors that mean "this data", not "this database": worth isolating the row that caused them.
_DATA_ERRORS = (duckdb.ConversionException, duckdb.InvalidInputException, duckdb.ConstraintException)

_OFFSETS_SQL = """
INSERT INTO kafka_offsets VALUES (?, ?, ?, ?, current_timestamp)
ON CONFLICT DO UPDATE SET next_offset = greatest(kafka_offsets.next_offset, excluded.next_offset),
                          updated_at = excluded.updated_at"""


class DuckDBSink:
    """Lands batches into an open, migrated store connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, *, max_bytes: int = DEFAULT_MAX_BYTES):
        self.con = con
        self.max_bytes = max_bytes

    def stored_offsets(self, group_id: str) -> dict[tuple[str, int], int]:
        """``(topic, partition) -> next offset`` recorded for ``group_id``."""
        rows = self.con.execute(
            'SELECT topic, "partition", next_offset FROM kafka_offsets WHERE group_id = ?', [group_id]
        ).fetchall()
        return {(t, p): o for t, p, o in rows}

    def land(self, batch: RawBatch, *, group_id: str | None = None) -> tuple[LandCounts, dict[tuple[str, int], int]]:
        """Validate and write ``batch`` in one transaction (see :meth:`write`)."""
        return self.write(self.prepare(batch), group_id=group_id)

    def prepare(self, batch: RawBatch) -> PreparedBatch:
        """Validate every message; no database access (safe while a write is running)."""
        keep: list[int] = []
        kinds: list[str] = []
        values: list[bytes] = []
        stamps: list[Any] = []
        dead: list[int] = []
        reasons: list[str] = []
        duplicates: list[int] = []
        duplicate_of: list[tuple[str, str, str]] = []  # event_id, kind, first source
        first_seen: dict[str, int] = {}
        for i, raw in enumerate(batch.values):
            event, raw_is_current = parse_raw(raw, self.max_bytes)
            if type(event) is Rejected:
                dead.append(i)
                reasons.append(event.reason)
                continue
            first = first_seen.setdefault(event.event_id, i)
            if first != i:
                duplicates.append(i)
                duplicate_of.append((event.event_id, event.kind, batch.source(first)))
                continue
            keep.append(i)
            kinds.append(event.kind)
            stamps.append(event.ts)
            # Upcast events, and ones whose unknown fields moved into metadata, are re-serialised.
            values.append(raw if raw_is_current else event.__pydantic_serializer__.to_json(event))
        events = pl.DataFrame(
            {"kind": kinds, "value": values, "ts": stamps, **_where(batch, keep)}, schema=_EVENTS_SCHEMA
        )
        dead_frame = pl.DataFrame(
            {"raw": [batch.values[i] for i in dead], "reason": reasons, "key": _pick(batch.keys, dead), **_where(batch, dead)},
            schema=_DEAD_SCHEMA,
        )
        duplicates_frame = pl.DataFrame(
            {
                "event_id": [d[0] for d in duplicate_of],
                "kind": [d[1] for d in duplicate_of],
                "first_source": [d[2] for d in duplicate_of],
                **_where(batch, duplicates),
            },
            schema=_DUPLICATES_SCHEMA,
        )
        next_offsets: dict[tuple[str, int], int] = {}
        if batch.offsets is not None:
            for topic, partition, offset in zip(batch.topics, batch.partitions, batch.offsets):
                if offset >= next_offsets.get((topic, partition), 0):
                    next_offsets[(topic, partition)] = offset + 1
        return PreparedBatch(events, dead_frame, duplicates_frame, next_offsets)

    def write(self, prepared: PreparedBatch, *, group_id: str | None = None) -> tuple[LandCounts, dict[tuple[str, int], int]]:
        """Write a prepared batch in ONE transaction.

        With ``group_id`` the batch is Kafka records: rows below the stored next offset
        are dropped and the new next offsets are stored. Returns the counts and the next
        offsets written (empty for files), which the caller then commits to Kafka.

        A document that pydantic accepted but DuckDB cannot read would otherwise fail the
        same batch forever; such rows are found, moved to dead letters with DuckDB's
        reason, and the rest is written, still in one transaction.
        """
        try:
            return self._write(prepared, group_id)
        except _DATA_ERRORS:
            unreadable = self._rows_duckdb_rejects(prepared.events)
            if not unreadable:
                raise
            return self._write(_move_to_dead(prepared, unreadable), group_id)

    def _rows_duckdb_rejects(self, events: pl.DataFrame) -> dict[int, str]:
        """Try each event alone in a rolled-back transaction; return the ones that fail."""
        rejected = {}
        for i in range(events.height):
            row = events.slice(i, 1)
            with self._registered(batch_events=row):
                self.con.execute("BEGIN TRANSACTION")
                try:
                    self.con.execute(_THUMBS_SQL if row["kind"][0] == "thumbs" else _PAIRWISE_SQL).fetchall()
                except _DATA_ERRORS as exc:
                    rejected[i] = f"store rejected the event: {str(exc).splitlines()[0]}"
                finally:
                    self.con.execute("ROLLBACK")
        return rejected

    @contextlib.contextmanager
    def _registered(self, **frames: pl.DataFrame):
        # Registered outside the transaction: unregistering inside an aborted one fails.
        for name, frame in frames.items():
            self.con.register(name, frame)
        try:
            yield
        finally:
            for name in frames:
                self.con.unregister(name)

    def _write(self, prepared: PreparedBatch, group_id: str | None) -> tuple[LandCounts, dict[tuple[str, int], int]]:
        counts = LandCounts()
        next_offsets = prepared.next_offsets if group_id is not None else {}
        events, dead, duplicates = prepared.events, prepared.dead, prepared.duplicates
        if next_offsets:
            # Read outside the transaction: a DuckDB file has one writer, this process.
            stored = self.stored_offsets(group_id)
            if any(stored.get(tp, 0) > 0 for tp in next_offsets):
                events, dead, duplicates, counts.replayed = _drop_landed(stored, events, dead, duplicates)
        with self._registered(batch_events=events, batch_dead=dead, batch_duplicates=duplicates):
            self.con.execute("BEGIN TRANSACTION")
            try:
                counts.thumbs = self._insert_events("thumbs", events, counts)
                counts.pairwise = self._insert_events("pairwise", events, counts)
                if dead.height:
                    added = self.con.execute(_DEAD_SQL).fetchall()[0][0]
                    counts.dead_letters += added
                    counts.replayed += dead.height - added
                if duplicates.height:
                    added = self.con.execute(_BATCH_DUPLICATES_SQL).fetchall()[0][0]
                    counts.duplicates += added
                    counts.replayed += duplicates.height - added
                if next_offsets:
                    self.con.executemany(_OFFSETS_SQL, [[group_id, t, p, o] for (t, p), o in next_offsets.items()])
                self.con.execute("COMMIT")
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
        return counts, next_offsets

    def _insert_events(self, kind: str, events: pl.DataFrame, counts: LandCounts) -> int:
        wanted = int((events["kind"] == kind).sum())
        if not wanted:
            return 0
        inserted = self.con.execute(_THUMBS_SQL if kind == "thumbs" else _PAIRWISE_SQL).fetchall()[0][0]
        if inserted < wanted:
            # Some event_ids were already stored: from another source they are producer
            # retries (recorded as duplicates), from the same source a replay.
            dups = self.con.execute(_DUPLICATES_SQL.format(kind=kind, extract=_extract(kind))).fetchall()[0][0]
            counts.duplicates += dups
            counts.replayed += wanted - inserted - dups
        return inserted


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
    return PreparedBatch(kept, pl.concat([prepared.dead, moved]), prepared.duplicates, prepared.next_offsets)


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
