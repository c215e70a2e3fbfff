"""What a store holds and how far behind Kafka each group is (``prefstream status``)."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from prefstream.errors import BrokerError
from prefstream.ingest.sink import FILES_GROUP
from prefstream.store import Store, snapshot_of


def store_status(store: Store, snapshot: int | None = None) -> dict[str, Any]:
    """Rows landed, dead letters by reason, duplicates, newest ``ts``, stored offsets, snapshot."""
    con = store.read(snapshot)
    try:
        one = lambda sql: con.execute(sql).fetchall()[0][0]  # noqa: E731
        offsets = con.execute(
            'SELECT group_id, topic, "partition", next_offset, updated_at FROM kafka_offsets ORDER BY 1, 2, 3'
        ).fetchall()
        return {
            "store": store.location.redacted(),
            "snapshot": snapshot_of(con),
            "rows": {name: one(f"SELECT count(*) FROM {name}") for name in ("thumbs", "pairwise", "thumbs_current", "pairwise_current")},
            "dead_letters": dict(con.execute("SELECT reason, count(*) FROM dead_letters GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20").fetchall()),
            "dead_letters_total": one("SELECT count(*) FROM dead_letters"),
            "duplicates": one("SELECT count(*) FROM duplicates"),
            "newest_ts": _iso(one("SELECT max(ts) FROM (SELECT max(ts) AS ts FROM thumbs_raw UNION ALL SELECT max(ts) FROM pairwise_raw)")),
            "groups": [
                {"group": g, "topic": t, "partition": p, "next_offset": o, "updated_at": _iso(u)}
                for g, t, p, o, u in offsets
                if g != FILES_GROUP
            ],
            "files": [{"file": t, "next_line": o} for g, t, _, o, _ in offsets if g == FILES_GROUP],
        }
    finally:
        con.close()


def add_lag(status: dict[str, Any], bootstrap: str, consumer_options: dict[str, Any] | None = None) -> None:
    """Add each partition's high watermark and lag (high watermark minus the stored next offset)."""
    partitions = {TopicPartition(g["topic"], g["partition"]) for g in status["groups"]}
    if not partitions:
        return
    marks = high_watermarks(bootstrap, partitions, consumer_options or {})
    for g in status["groups"]:
        high = marks.get(TopicPartition(g["topic"], g["partition"]))
        g["high_watermark"] = high
        g["lag"] = None if high is None else max(high - g["next_offset"], 0)


def high_watermarks(bootstrap: str, partitions, options: dict[str, Any]) -> dict[TopicPartition, int]:
    """The log end of each partition: the larger of ListOffsets' answer and a fetch's high
    watermark (some Kafka-protocol brokers answer ListOffsets wrongly; a fetch never lies)."""
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, allow_auto_create_topics=False, **options)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap} ({type(exc).__name__}); check --bootstrap") from None
    try:
        existing = consumer.topics()
        partitions = [tp for tp in partitions if tp.topic in existing]
        if not partitions:
            return {}
        listed = consumer.end_offsets(partitions)
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, max(listed.get(tp, 0) - 1, 0))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in partitions):
            consumer.poll(timeout_ms=200, max_records=1)
        return {tp: max(listed.get(tp) or 0, consumer.highwater(tp) or 0) for tp in partitions}
    finally:
        consumer.close(autocommit=False)


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None
