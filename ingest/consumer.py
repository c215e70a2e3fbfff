"""The Kafka consumer loop: poll a batch, land it in one store transaction, then commit.

Exactly-once, in order (DESIGN.md):
1. auto-commit is off; on partition assignment the consumer seeks to the next offset
   stored in the store's ``kafka_offsets`` (the store, not Kafka, is the source of truth),
   or to the beginning of the log for a partition the store has never seen;
2. each polled batch - valid rows, dead letters, next offsets - is one DuckLake transaction
   (:meth:`StoreSink.write`, which also drops anything below the stored offsets);
3. only then are the offsets committed to Kafka, so lag tools see progress. A failed
   Kafka commit is harmless: the next assignment seeks from the store again.
A kill at any instant either loses the uncommitted transaction (and the batch is read
again) or keeps it (and the batch is skipped). A zombie that lost its partitions may land
a batch twice physically; the store's views show it once.

A stored offset that Kafka no longer has (the topic was recreated, retention deleted it,
or it lies beyond the high watermark) stops ingest with an error that names the partition
and ``--reset-offsets``: never a silent skip or re-read.

Writing runs on one worker thread so that polling and validating the next batch overlap
the current transaction (DuckDB 1.5 releases the GIL while a query runs).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaConfigurationError, KafkaError, OffsetOutOfRangeError

from prefstream.errors import BrokerError, PrefstreamError
from prefstream.ingest.sink import LandCounts, RawBatch, StoreSink
from prefstream.ingest.status import high_watermarks
from prefstream.schemas import DEFAULT_MAX_BYTES
from prefstream.store import Store

log = logging.getLogger(__name__)

# Settings prefstream owns: the landing protocol depends on them.
MANAGED_OPTIONS = {
    "enable_auto_commit", "group_id", "bootstrap_servers", "value_deserializer", "key_deserializer",
    "auto_offset_reset", "allow_auto_create_topics",
}
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
    reset_offsets: str | None = None  # "earliest" | "latest": move this group's stored offsets first

    def __post_init__(self) -> None:
        managed = MANAGED_OPTIONS & set(self.consumer_options)
        if managed:
            raise PrefstreamError(f"consumer option(s) {', '.join(sorted(managed))} are set by prefstream; use --bootstrap / --group instead")
        if not self.topics:
            raise PrefstreamError("no topic given; pass --topic at least once")
        if self.reset_offsets not in (None, "earliest", "latest"):
            raise PrefstreamError("--reset-offsets takes earliest or latest")


class OffsetMissing(PrefstreamError):
    """A stored offset that Kafka no longer has; resolved by --reset-offsets."""


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
        ingestor = self.ingestor
        consumer = ingestor.consumer
        stored = ingestor.sink.stored_offsets(ingestor.settings.group_id)
        fresh = [tp for tp in assigned if (tp.topic, tp.partition) not in stored]
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is not None:
                consumer.seek(tp, offset)
                ingestor.seeked[tp] = offset
        if fresh:
            # The store, not Kafka's committed offsets, decides: a partition it has never
            # seen is read from the start of the log.
            consumer.seek_to_beginning(*fresh)
            ingestor.notify(f"new to this store: {_names(fresh)}; reading from the beginning of the log")
        # Checked against the log's bounds from the poll loop (_check_placed): kafka-python runs
        # this listener on its IO thread, where a blocking call such as beginning_offsets() raises.
        ingestor.assigned_at = time.monotonic()
        log.info("assigned %s", _names(assigned) or "nothing")


class KafkaIngestor:
    """Consumes ``settings.topics`` into ``store`` until told to stop."""

    def __init__(
        self,
        store: Store,
        settings: IngestSettings,
        on_progress: Callable[[LandCounts, float], None] | None = None,
        on_status: Callable[[str], None] | None = None,
    ):
        self.settings = settings
        self.sink = StoreSink(store, max_bytes=settings.max_bytes)
        self.on_progress = on_progress
        self.on_status = on_status
        self.consumer: KafkaConsumer | None = None  # created in run(), never in the constructor
        self.assigned_at: float | None = None
        self.seeked: dict[TopicPartition, int] = {}  # partitions placed at a stored offset, not yet checked
        self._in_flight = 0  # messages handed to the writer thread, not yet landed
        self._stopping: str | None = None

    def stop(self, why: str = "stop requested") -> None:
        """Ask the loop to finish the current batch, commit and return (signal-safe)."""
        self._stopping = why

    def notify(self, text: str) -> None:
        log.info("%s", text)
        if self.on_status:
            self.on_status(text)

    def _connect(self) -> KafkaConsumer:
        options = {
            "max_poll_records": self.settings.max_poll_records,
            # Larger fetches make larger batches: each batch pays a fixed cost (a store
            # commit, a Kafka commit), so fewer, bigger ones land more events per second.
            "max_partition_fetch_bytes": 8 * 1024 * 1024,
            **self.settings.consumer_options,
        }
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.settings.bootstrap,
                group_id=self.settings.group_id,
                enable_auto_commit=False,
                # Never guess a position: every partition is placed explicitly (stored offset
                # or the log's start), and an out-of-range one is an error, not a silent reset.
                auto_offset_reset="none",
                allow_auto_create_topics=False,
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
        try:
            existing = consumer.topics()
        except KafkaError as exc:
            consumer.close()
            raise BrokerError(f"cannot list topics at {self.settings.bootstrap} ({type(exc).__name__})") from None
        missing = [t for t in self.settings.topics if t not in existing]
        if missing:
            consumer.close()
            shown = ", ".join(sorted(t for t in existing if not t.startswith("__"))) or "none"
            raise PrefstreamError(f"no such topic: {', '.join(missing)} (ingest never creates topics); topics on {self.settings.bootstrap}: {shown}")
        if self.settings.reset_offsets:
            self._reset_offsets(consumer)
        consumer.subscribe(list(self.settings.topics), listener=_SeekToStoredOffsets(self))
        self.notify(f"joining group {self.settings.group_id} on {self.settings.bootstrap} (session_timeout_ms bounds the wait) ...")
        return consumer

    def _reset_offsets(self, consumer: KafkaConsumer) -> None:
        partitions = [TopicPartition(t, p) for t in self.settings.topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if self.settings.reset_offsets == "earliest":
            where = consumer.beginning_offsets(partitions)
        else:
            where = high_watermarks(self.settings.bootstrap, partitions, dict(self.settings.consumer_options))
        self.sink.reset_offsets(self.settings.group_id, {(tp.topic, tp.partition): o for tp, o in where.items()})
        self.notify(f"group {self.settings.group_id}: stored offsets reset to {self.settings.reset_offsets} for {_names(partitions)}")

    def _check_placed(self) -> None:
        """Each partition placed at a stored offset, once its high watermark is known: an offset
        past the log's end (the topic was recreated) or before its start (retention deleted
        events never landed) stops ingest."""
        assigned = self.consumer.assignment()
        ready: dict[TopicPartition, tuple[int, int]] = {}
        for tp, offset in list(self.seeked.items()):
            if tp not in assigned:
                # Revoked by a rebalance before its first fetch (highwater() would raise); checked again if it comes back.
                del self.seeked[tp]
                continue
            high = self.consumer.highwater(tp)
            if high is not None:
                del self.seeked[tp]
                ready[tp] = (offset, high)
        if not ready:
            return
        starts = self.consumer.beginning_offsets(list(ready))
        for tp, (offset, high) in ready.items():
            if offset > high:
                raise self._missing(tp, offset, f"the log ends at {high} (was the topic recreated?)")
            if offset < starts[tp]:
                raise self._missing(tp, offset, f"the log now starts at {starts[tp]}")

    def _missing(self, tp: TopicPartition, offset: int, why: str) -> OffsetMissing:
        return OffsetMissing(
            f"{tp.topic}[{tp.partition}]: the store's next offset {offset} is not in Kafka ({why}); "
            f"rerun with --reset-offsets earliest (re-read what Kafka has) or --reset-offsets latest (skip to new events) for group {self.settings.group_id}"
        )

    def run(self) -> IngestResult:
        consumer = self._connect()
        settings = self.settings
        total = LandCounts()
        started = time.monotonic()
        first_message: float | None = None
        last_message: float | None = None
        last_landed = started
        # One writer thread: batch N's transaction runs (DuckDB releases the GIL) while the
        # main thread polls and validates batch N+1. Transactions stay in order: N+1 is
        # handed over only after N committed, and Kafka's offsets only after that.
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefstream-writer")
        pending: Future | None = None

        def finish_pending() -> None:
            nonlocal pending, last_landed
            if pending is None:
                return
            counts, next_offsets = pending.result()
            pending = None
            total.add(counts)
            last_landed = time.monotonic()
            log.info("landed %d messages, next offsets %s", counts.seen, _describe_offsets(next_offsets))
            self._commit_to_kafka(next_offsets)
            if self.on_progress:
                self.on_progress(total, last_landed - first_message)

        try:
            while self._stopping is None:
                limit = settings.max_poll_records
                if settings.max_messages is not None:
                    limit = min(limit, settings.max_messages - total.seen - self._in_flight)
                polled = self._poll(limit) if limit > 0 else {}
                now = time.monotonic()
                if polled:
                    first_message = first_message or now
                    last_message = now
                    prepared = self.sink.prepare(_to_batch(polled))
                    finish_pending()
                    self._in_flight = sum(len(r) for r in polled.values())
                    pending = writer.submit(self.sink.write, prepared, group_id=settings.group_id)
                else:
                    finish_pending()
                    self._in_flight = 0
                if settings.max_messages is not None and total.seen + self._in_flight >= settings.max_messages:
                    self.stop(f"reached --max-messages {settings.max_messages}")
                elif settings.until_idle is not None:
                    self._check_idle(now, started, last_message)
            finish_pending()
        finally:
            writer.shutdown(wait=True)
            consumer.close(autocommit=False)
        seconds = (last_landed - first_message) if first_message else 0.0
        return IngestResult(total, seconds, self._stopping or "stopped")

    def _poll(self, limit: int) -> dict:
        try:
            polled = self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms, max_records=limit)
        except OffsetOutOfRangeError as exc:
            tp, offset = next(iter(exc.args[0].items())) if exc.args and isinstance(exc.args[0], dict) else (None, None)
            if tp is None:
                raise OffsetMissing(f"a stored offset is not in Kafka ({exc}); rerun with --reset-offsets earliest|latest") from None
            raise self._missing(tp, offset, "out of range") from None
        self._check_placed()
        return polled

    def _check_idle(self, now: float, started: float, last_message: float | None) -> None:
        idle_for = self.settings.until_idle
        if self.assigned_at is None:
            if now - started > idle_for + ASSIGNMENT_GRACE_S:
                self.stop(f"no partitions assigned after {now - started:.0f}s")
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
            # The store already holds these offsets; Kafka's copy is only for lag tools.
            log.warning("Kafka offset commit failed (%s); the store holds the offsets", exc)


def _names(partitions) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))


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
