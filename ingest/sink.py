"""The DuckDB sink: one batch of raw messages -> one transaction.

A batch's valid rows, dead letters, duplicate records and the next Kafka offsets are
written in ONE DuckDB transaction; it is the unit of durability (DESIGN.md, "Exactly-once
landing"). Messages below the stored next offset of their partition are skipped inside
that transaction, so a redelivery after a crash can never land twice, whatever the
consumer's position was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import orjson
import polars as pl

from prefstream.schemas import DEFAULT_MAX_BYTES, PairwiseEvent, Rejected, ThumbsEvent, parse


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as received, with where it came from."""

    value: bytes | None
    source: str  # "topic[partition]@offset" or "path:line"
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None


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


_THUMBS_SQL = """
INSERT OR IGNORE INTO thumbs BY NAME
SELECT event_id, schema_version, ts, prompt::JSON AS prompt, md5(prompt) AS prompt_hash,
       annotator_id, annotator_kind, metadata::JSON AS metadata,
       md5(prompt || chr(31) || response) AS item_id, response, rating, model_id,
       topic, "partition", "offset", source, current_timestamp AS ingested_at
FROM batch_thumbs"""

_PAIRWISE_SQL = """
INSERT OR IGNORE INTO pairwise BY NAME
SELECT event_id, schema_version, ts, prompt::JSON AS prompt, md5(prompt) AS prompt_hash,
       annotator_id, annotator_kind, metadata::JSON AS metadata,
       md5(prompt || chr(31) || least(response_a, response_b) || chr(31) || greatest(response_a, response_b)) AS pair_id,
       response_a, response_b, choice, shown_first, model_a, model_b,
       topic, "partition", "offset", source, current_timestamp AS ingested_at
FROM batch_pairwise"""

_DUPLICATES_SQL = """
INSERT OR IGNORE INTO duplicates
SELECT b.source, b.event_id, '{kind}', t.source, current_timestamp
FROM batch_{kind} b JOIN {kind} t USING (event_id)
WHERE t.source <> b.source"""

_OFFSETS_SQL = """
INSERT INTO kafka_offsets VALUES (?, ?, ?, ?, current_timestamp)
ON CONFLICT DO UPDATE SET next_offset = greatest(kafka_offsets.next_offset, excluded.next_offset),
                          updated_at = excluded.updated_at"""

_SOURCE_SCHEMA = {"topic": pl.String, "partition": pl.Int32, "offset": pl.Int64, "source": pl.String}
_THUMBS_SCHEMA = {
    "event_id": pl.String, "schema_version": pl.Int32, "ts": pl.Datetime("us", "UTC"), "prompt": pl.String,
    "annotator_id": pl.String, "annotator_kind": pl.String, "metadata": pl.String,
    "response": pl.String, "rating": pl.String, "model_id": pl.String, **_SOURCE_SCHEMA,
}
_PAIRWISE_SCHEMA = {
    "event_id": pl.String, "schema_version": pl.Int32, "ts": pl.Datetime("us", "UTC"), "prompt": pl.String,
    "annotator_id": pl.String, "annotator_kind": pl.String, "metadata": pl.String,
    "response_a": pl.String, "response_b": pl.String, "choice": pl.String, "shown_first": pl.String,
    "model_a": pl.String, "model_b": pl.String, **_SOURCE_SCHEMA,
}


def _prompt_json(prompt: Any) -> str:
    if isinstance(prompt, str):
        return orjson.dumps(prompt).decode()
    return orjson.dumps([{"role": m.role, "content": m.content} for m in prompt]).decode()


def _common(event: ThumbsEvent | PairwiseEvent, msg: RawMessage) -> list[Any]:
    return [
        event.event_id, event.schema_version, event.ts, _prompt_json(event.prompt),
        event.annotator_id, event.annotator_kind, orjson.dumps(event.metadata).decode(),
    ]


def _where(msg: RawMessage) -> list[Any]:
    return [msg.topic, msg.partition, msg.offset, msg.source]


class DuckDBSink:
    """Lands batches of :class:`RawMessage` into an open, migrated store connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, *, max_bytes: int = DEFAULT_MAX_BYTES):
        self.con = con
        self.max_bytes = max_bytes

    def stored_offsets(self, group_id: str) -> dict[tuple[str, int], int]:
        """``(topic, partition) -> next offset`` recorded for ``group_id``."""
        rows = self.con.execute(
            'SELECT topic, "partition", next_offset FROM kafka_offsets WHERE group_id = ?', [group_id]
        ).fetchall()
        return {(t, p): o for t, p, o in rows}

    def land(self, messages: list[RawMessage], *, group_id: str | None = None) -> tuple[LandCounts, dict[tuple[str, int], int]]:
        """Land ``messages`` in one transaction.

        With ``group_id`` the messages are Kafka records: those below the stored next
        offset are skipped and the new next offsets are stored. Returns the counts and the
        next offsets written (empty for files), which the caller then commits to Kafka.
        """
        counts = LandCounts()
        self.con.execute("BEGIN TRANSACTION")
        try:
            next_offsets: dict[tuple[str, int], int] = {}
            if group_id is not None:
                stored = self.stored_offsets(group_id)
                fresh = []
                for msg in messages:
                    tp = (msg.topic, msg.partition)
                    if msg.offset < stored.get(tp, 0):
                        counts.replayed += 1
                        continue
                    fresh.append(msg)
                    next_offsets[tp] = max(next_offsets.get(tp, 0), msg.offset + 1)
                messages = fresh
            self._land_messages(messages, counts)
            if next_offsets:
                self.con.executemany(_OFFSETS_SQL, [[group_id, t, p, o] for (t, p), o in next_offsets.items()])
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return counts, next_offsets

    def _land_messages(self, messages: list[RawMessage], counts: LandCounts) -> None:
        thumbs: list[list[Any]] = []
        pairwise: list[list[Any]] = []
        dead: list[list[Any]] = []
        in_batch: dict[str, str] = {}  # event_id -> source of its first occurrence in this batch
        in_batch_dups: list[list[Any]] = []
        for msg in messages:
            event = parse(msg.value, self.max_bytes)
            if isinstance(event, Rejected):
                dead.append([msg.source, msg.value, event.reason, msg.key, msg.topic, msg.partition, msg.offset])
                continue
            first = in_batch.setdefault(event.event_id, msg.source)
            if first != msg.source:
                in_batch_dups.append([msg.source, event.event_id, event.kind, first])
                continue
            if event.kind == "thumbs":
                thumbs.append(_common(event, msg) + [event.response, event.rating, event.model_id] + _where(msg))
            else:
                pairwise.append(
                    _common(event, msg)
                    + [event.response_a, event.response_b, event.choice, event.shown_first, event.model_a, event.model_b]
                    + _where(msg)
                )
        counts.thumbs += self._insert_events("thumbs", _THUMBS_SQL, _THUMBS_SCHEMA, thumbs, counts)
        counts.pairwise += self._insert_events("pairwise", _PAIRWISE_SQL, _PAIRWISE_SCHEMA, pairwise, counts)
        if dead:
            before = self._count("dead_letters")
            self.con.executemany(
                "INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, current_timestamp)", dead
            )
            added = self._count("dead_letters") - before
            counts.dead_letters += added
            counts.replayed += len(dead) - added
        if in_batch_dups:
            before = self._count("duplicates")
            self.con.executemany("INSERT OR IGNORE INTO duplicates VALUES (?, ?, ?, ?, current_timestamp)", in_batch_dups)
            added = self._count("duplicates") - before
            counts.duplicates += added
            counts.replayed += len(in_batch_dups) - added

    def _insert_events(self, kind: str, sql: str, schema: dict, rows: list[list[Any]], counts: LandCounts) -> int:
        if not rows:
            return 0
        frame = pl.DataFrame(rows, schema=schema, orient="row")
        self.con.register(f"batch_{kind}", frame)
        try:
            inserted = self.con.execute(sql).fetchall()[0][0]
            if inserted < len(rows):
                # Some event_ids were already stored: from another source they are producer
                # retries (recorded as duplicates), from the same source a replay.
                before = self._count("duplicates")
                self.con.execute(_DUPLICATES_SQL.format(kind=kind)).fetchall()
                dups = self._count("duplicates") - before
                counts.duplicates += dups
                counts.replayed += len(rows) - inserted - dups
        finally:
            self.con.unregister(f"batch_{kind}")
        return inserted

    def _count(self, table: str) -> int:
        return self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
