"""Wire events (pydantic v2), JSON Schema export and version upcasting."""

from prefstream.schemas.events import (
    EVENT_ADAPTER,
    SCHEMA_VERSION,
    ChatMessage,
    Event,
    PairwiseEvent,
    ThumbsEvent,
)
from prefstream.schemas.requests import Candidate, ComparisonRequest, request_json_schema
from prefstream.schemas.upcasting import upcast, upcaster
from prefstream.schemas.validate import DEFAULT_MAX_BYTES, Rejected, parse, parse_raw


def json_schema() -> dict:
    """The JSON Schema of one wire message (either kind)."""
    schema = EVENT_ADAPTER.json_schema()
    schema["title"] = f"prefstream feedback event, schema_version {SCHEMA_VERSION}"
    return schema


__all__ = [
    "SCHEMA_VERSION",
    "DEFAULT_MAX_BYTES",
    "ChatMessage",
    "Event",
    "ThumbsEvent",
    "PairwiseEvent",
    "Rejected",
    "parse",
    "parse_raw",
    "upcast",
    "upcaster",
    "json_schema",
    "Candidate",
    "ComparisonRequest",
    "request_json_schema",
]
