"""Bytes off the wire -> a validated event, or the reason it belongs in dead letters.

:func:`parse` never raises: every failure is returned as :class:`Rejected` with a reason a
person can act on. The common case (a valid v1 event) is validated in one pass by
pydantic-core straight from bytes; anything else takes the step-by-step path so that the
reason names the first thing wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from prefstream.schemas.events import EVENT_ADAPTER, KIND_MODELS, SCHEMA_VERSION, PairwiseEvent, ThumbsEvent
from prefstream.schemas.upcasting import upcast

DEFAULT_MAX_BYTES = 1 << 20
EXTRA_FIELDS_KEY = "extra_fields"
_NUL_ESCAPE = b"\\u0000"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that is not a valid event, with the reason."""

    reason: str


ParseResult = ThumbsEvent | PairwiseEvent | Rejected


def parse(raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> ParseResult:
    """Validate one wire message."""
    return parse_raw(raw, max_bytes)[0]


def parse_raw(raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[ParseResult, bool]:
    """Like :func:`parse`, and also whether ``raw`` itself is the event's current-version JSON
    (true for the common case; false after upcasting or when unknown fields were moved)."""
    if raw is None:
        return Rejected("empty message: null value (tombstone)"), False
    if len(raw) > max_bytes:
        return Rejected(f"oversize message: {len(raw)} bytes > limit {max_bytes}"), False
    if b"\x00" not in raw and _NUL_ESCAPE not in raw:
        try:
            event = EVENT_ADAPTER.validate_json(raw)
            if not event.model_extra:
                return event, True
            return _keep_unknown_fields(event), False
        except ValidationError:
            pass  # fall through to the step-by-step path for a precise reason
    try:
        return _parse_slowly(raw), False
    except Exception as exc:  # noqa: BLE001 - the validator must never crash the consumer
        return Rejected(f"unexpected validation failure: {type(exc).__name__}: {exc}"), False


def _parse_slowly(raw: bytes) -> ParseResult:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(f"invalid UTF-8 at byte {exc.start}")
    if "\x00" in text:
        return Rejected("contains a NUL byte")
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Rejected(f"invalid JSON: {exc}")
    if not isinstance(payload, dict):
        return Rejected(f"not a JSON object (got {type(payload).__name__})")
    if _has_nul(payload):
        return Rejected("contains a NUL character (\\u0000)")
    if "schema_version" not in payload:
        return Rejected("missing required field 'schema_version'")
    try:
        payload = upcast(payload)
    except ValueError as exc:
        return Rejected(str(exc))
    kind = payload.get("kind")
    if kind not in KIND_MODELS:
        return Rejected(f"unknown kind {kind!r} (expected one of: {', '.join(KIND_MODELS)})")
    try:
        return _keep_unknown_fields(KIND_MODELS[kind].model_validate_json(orjson.dumps(payload)))
    except ValidationError as exc:
        return Rejected(_describe(exc))


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _keep_unknown_fields(event: ThumbsEvent | PairwiseEvent) -> ThumbsEvent | PairwiseEvent:
    extra = event.model_extra
    if not extra:
        return event
    metadata = {**event.metadata, EXTRA_FIELDS_KEY: {**event.metadata.get(EXTRA_FIELDS_KEY, {}), **extra}}
    known = {name: getattr(event, name) for name in type(event).model_fields}
    return type(event).model_construct(**{**known, "metadata": metadata})


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "event"
        if err["type"] == "missing":
            parts.append(f"missing required field '{where}'")
        else:
            parts.append(f"field '{where}': {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


__all__ = ["DEFAULT_MAX_BYTES", "EXTRA_FIELDS_KEY", "Rejected", "ParseResult", "parse", "parse_raw", "SCHEMA_VERSION"]
