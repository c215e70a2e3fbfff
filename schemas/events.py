"""Wire events, schema_version 1 (DESIGN.md, "Wire events").

Strings and ints are strict (no "1" -> 1 coercion): a producer that mistypes a field
should see it in dead letters, not have it silently repaired. Unknown top-level fields
are not rejected: the validator keeps them under ``metadata["extra_fields"]``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    TypeAdapter,
)

SCHEMA_VERSION = 1


def _rfc3339_string(value: Any) -> Any:
    # pydantic would also accept unix numbers for datetimes; the wire format says RFC 3339.
    if not isinstance(value, str):
        raise ValueError("ts must be an RFC 3339 string")
    return value


Text = Annotated[StrictStr, Field(min_length=1)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_string)]


class ContentPart(BaseModel):
    """One part of a message's content: ``{"type": "text", "text": ...}``, or an image, audio ... part.

    Non-text parts are kept as sent (their keys too); stages that need text use the text parts.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    type: Text
    text: StrictStr | None = None


class ChatMessage(BaseModel):
    """One chat turn of a conversational prompt, as chat APIs send it; unknown keys are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)
    role: Text
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: StrictStr | None = None


Prompt = Union[Text, Annotated[list[ChatMessage], Field(min_length=1)]]


class _Event(BaseModel):
    # extra="allow": unknown fields are kept (the validator moves them into metadata).
    model_config = ConfigDict(extra="allow", frozen=True)

    schema_version: Literal[1]
    event_id: Text
    ts: Timestamp
    prompt: Prompt
    annotator_id: Text
    annotator_kind: Literal["user", "expert", "model"] = "user"  # "model": a judge model
    metadata: dict[str, Any] = Field(default_factory=dict)


class ThumbsEvent(_Event):
    """A thumbs up / down on one response."""

    kind: Literal["thumbs"]
    response: Text
    rating: Literal["up", "down"]
    model_id: StrictStr | None = None


class PairwiseEvent(_Event):
    """A preference between two responses to the same prompt."""

    kind: Literal["pairwise"]
    response_a: Text
    response_b: Text
    choice: Literal["a", "b", "tie"]
    shown_first: Literal["a", "b"] | None = None
    model_a: StrictStr | None = None
    model_b: StrictStr | None = None


Event = Annotated[Union[ThumbsEvent, PairwiseEvent], Field(discriminator="kind")]
EVENT_ADAPTER: TypeAdapter[ThumbsEvent | PairwiseEvent] = TypeAdapter(Event)
KIND_MODELS: dict[str, type[_Event]] = {"thumbs": ThumbsEvent, "pairwise": PairwiseEvent}

__all__ = [
    "SCHEMA_VERSION",
    "ChatMessage",
    "ContentPart",
    "ThumbsEvent",
    "PairwiseEvent",
    "Event",
    "EVENT_ADAPTER",
    "KIND_MODELS",
]
