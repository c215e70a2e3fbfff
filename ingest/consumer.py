"""The Kafka consumer loop: poll a batch, land it in one DuckDB transaction, then commit.

Exactly-once, in order (DESIGN.md):
1. auto-commit is off; on partition assignment the consumer seeks to the next offset
   stored in DuckDB's ``kafka_offsets`` (the store, not Kafka, is the source of truth);
2. each polled batch - valid rows, dead letters, next offsets - is one DuckDB transaction
   (:meth:`DuckDBSink.write`, which also drops anything below the stored offsets);
3. only then are the offsets committed to Kafka, so lag tools see progress. A failed
   Kafka commit is harmless: the next assignment seeks from DuckDB again.
A kill at any instant either loses the uncommitted transaction (and the batch is read
again) or keeps it (and the batch is skipped): nothing lost, nothing twice.

The loop is deliberately serial: DuckDB's Python client (2.0) holds the GIL while a query
runs, so writing on a worker thread measured no faster, only harder to reason about.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaConfigurationError, KafkaError

from prefstream.errors import BrokerError, PrefstreamError
from prefstream.ingest.sink import DuckDBSink, LandCounts, RawBatch
from prefstream.schemas import DEFAULT_MAX_BYTES

log = logging.getLogger(__name__)

# Settings prefstream owns: the landing protocol depends on them.
MANAGED_OPTIONS = {"enable_auto_commit", "group_id", "bootstrap_servers", "value_deserializer", "key_deserializer"}
# How long to wait for a first partition assignment beyond --until-idle before giving up.
ASSIGNMENT_GRACE_S = 30.0


@dataclass(frozen=True)
class IngestSettings:
    """What to consume and when to stop."""

    bootstrap: str
    topics: tuple[str, ...]
    group_id: str
    until_idle: float | None = None
    max_messages: int | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    poll_timeout_ms: int = 500
    max_poll_records: int = 20000
    consumer_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        managed = MANAGED_OPTIONS & set(self.consumer_options)
        if managed:
            raise PrefstreamError(f"consumer option(s) {', '.join(sorted(managed))} are set by prefstream; use --bootstrap / --group instead")
        if not self.topics:
            raise PrefstreamError("no topic given; pass --topic at least once")


@dataclass
class IngestResult:
    counts: LandCounts
    seconds: float  # from the first message received to the last batch landed
    stopped_because: str


class _SeekToStoredOffsets(ConsumerRebalanceListener):
    def __init__(self, ingestor: "KafkaIngestor"):
        self.ingestor = ingestor

    def on_partitions_revoked(self, revoked) -> None:
        # Nothing is pending: every landed batch was committed before the next poll.
        pass

    def on_partitions_assigned(self, assigned) -> None:
        stored = self.ingestor.sink.stored_offsets(self.ingestor.settings.group_id)
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is not None:
                self.ingestor.consumer.seek(tp, offset)
        self.ingestor.assigned_at = time.monotonic()
        log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in assigned) or "nothing")


class KafkaIngestor:
    """Consumes ``settings.topics`` into the store behind ``con`` until told to stop."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        settings: IngestSettings,
        on_progress: Callable[[LandCounts, float], None] | None = None,
    ):
        self.settings = settings
        self.sink = DuckDBSink(con, max_bytes=settings.max_bytes)
        self.on_progress = on_progress
        self.consumer: KafkaConsumer | None = None  # created in run(), never in the constructor
        self.assigned_at: float | None = None
        self._stopping: str | None = None

    def stop(self, why: str = "stop requested") -> None:
        """Ask the loop to finish the current batch, commit and return (signal-safe)."""
        self._stopping = why

    def _connect(self) -> KafkaConsumer:
        options = {
            "auto_offset_reset": "earliest",
            "max_poll_records": self.settings.max_poll_records,
            # Larger fetches make larger batches: each batch pays a fixed cost (a DuckDB
            # commit, a Kafka commit), so fewer, bigger ones land more events per second.
            "max_partition_fetch_bytes": 8 * 1024 * 1024,
            **self.settings.consumer_options,
        }
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.settings.bootstrap,
                group_id=self.settings.group_id,
                enable_auto_commit=False,
                **options,
            )
        except (KafkaConfigurationError, TypeError, ValueError, AssertionError) as exc:
            raise PrefstreamError(f"invalid consumer option: {exc}") from None
        except KafkaError as exc:
            raise BrokerError(
                f"cannot reach Kafka at {self.settings.bootstrap} ({type(exc).__name__}); "
                "check --bootstrap, or start a local broker with `prefstream broker`"
            ) from None
        self.consumer = consumer
        consumer.subscribe(list(self.settings.topics), listener=_SeekToStoredOffsets(self))
        return consumer

    def run(self) -> IngestResult:
        consumer = self._connect()
        settings = self.settings
        total = LandCounts()
        started = time.monotonic()
        first_message: float | None = None
        last_message: float | None = None
        last_landed = started
        try:
            while self._stopping is None:
                limit = settings.max_poll_records
                if settings.max_messages is not None:
                    limit = min(limit, settings.max_messages - total.seen)
                polled = consumer.poll(timeout_ms=settings.poll_timeout_ms, max_records=limit)
                now = time.monotonic()
                if polled:
                    first_message = first_message or now
                    last_message = now
                    counts, next_offsets = self.sink.land(_to_batch(polled), group_id=settings.group_id)
                    total.add(counts)
                    last_landed = time.monotonic()
                    log.info("landed %d messages, next offsets %s", counts.seen, _describe_offsets(next_offsets))
                    self._commit_to_kafka(next_offsets)
                    if self.on_progress:
                        self.on_progress(total, last_landed - first_message)
                if settings.max_messages is not None and total.seen >= settings.max_messages:
                    self.stop(f"reached --max-messages {settings.max_messages}")
                elif settings.until_idle is not None:
                    self._check_idle(now, started, last_message)
        finally:
            consumer.close(autocommit=False)
        seconds = (last_landed - first_message) if first_message else 0.0
        return IngestResult(total, seconds, self._stopping or "stopped")

    def _check_idle(self, now: float, started: float, last_message: float | None) -> None:
        idle_for = self.settings.until_idle
        if self.assigned_at is None:
            if now - started > idle_for + ASSIGNMENT_GRACE_S:
                self.stop(f"no partitions assigned after {now - started:.0f}s (does the topic exist?)")
            return
        since = max(self.assigned_at, last_message or 0.0)
        if now - since >= idle_for:
            self.stop(f"idle for {idle_for:g}s")

    def _commit_to_kafka(self, next_offsets: dict[tuple[str, int], int]) -> None:
        if not next_offsets:
            return
        offsets = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in next_offsets.items()}
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:
            # DuckDB already holds these offsets; Kafka's copy is only for lag tools.
            log.warning("Kafka offset commit failed (%s); DuckDB holds the offsets", exc)


def _to_batch(polled: dict) -> RawBatch:
    batch = RawBatch(values=[], keys=[], topics=[], partitions=[], offsets=[])
    for tp, records in polled.items():
        batch.values.extend(r.value for r in records)
        batch.keys.extend(r.key for r in records)
        batch.offsets.extend(r.offset for r in records)
        batch.topics.extend([tp.topic] * len(records))
        batch.partitions.extend([tp.partition] * len(records))
    return batch


def _describe_offsets(next_offsets: dict[tuple[str, int], int]) -> str:
    return ", ".join(f"{t}[{p}]={o}" for (t, p), o in sorted(next_offsets.items())) or "unchanged"
