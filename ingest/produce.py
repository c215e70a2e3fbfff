"""Producing feedback to Kafka (the simulator's output, benchmarks, tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from prefstream.errors import BrokerError


def encode(message: dict[str, Any] | bytes) -> bytes:
    return message if isinstance(message, bytes) else orjson.dumps(message)


def topic_exists(bootstrap: str, topic: str) -> bool:
    """Whether ``topic`` exists (asked without creating it)."""
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, allow_auto_create_topics=False)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap} ({type(exc).__name__}); start one with `prefstream broker`") from None
    try:
        return topic in consumer.topics()
    finally:
        consumer.close()


def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[dict[str, Any] | bytes],
    *,
    key: Callable[[dict[str, Any] | bytes], bytes | None] | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Send every message to ``topic`` and wait until the broker has them all; return the count."""
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024, acks=1)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap} ({type(exc).__name__}); start one with `prefstream broker`") from None
    sent = 0
    try:
        for message in messages:
            producer.send(topic, value=encode(message), key=key(message) if key else None)
            sent += 1
            if on_sent and sent % 10000 == 0:
                on_sent(sent)
        producer.flush()
    finally:
        producer.close()
    return sent
