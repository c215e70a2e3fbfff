"""Comparison requests, schema_version 1: two candidate responses to one prompt, to be judged.

A request is what ``prefstream generate`` emits and what people (through any tool) or
``prefstream judge`` answer with an ordinary ``pairwise`` event: ``response_a`` / ``model_a``
from ``a``, ``response_b`` / ``model_b`` from ``b``, ``shown_first`` copied from the request and
``metadata.request_id`` linking back. ``kind`` is ``comparison_request`` so that a request sent
to a feedback topic by mistake is dead-lettered (unknown kind), never landed as feedback.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from prefstream.schemas.events import Prompt, Text, Timestamp

REQUEST_SCHEMA_VERSION = 1


class Candidate(BaseModel):
    """One generated response: which model made it, under a stable id."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    candidate_id: Text
    model_id: Text
    text: Text


class ComparisonRequest(BaseModel):
    """Two candidates for one prompt, and the order to show them in (randomised, recorded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = REQUEST_SCHEMA_VERSION
    kind: Literal["comparison_request"] = "comparison_request"
    request_id: Text
    ts: Timestamp = Field(description="when the request was created (RFC 3339)")
    prompt: Prompt
    a: Candidate
    b: Candidate
    shown_first: Literal["a", "b"] = Field(description="which candidate to show first (or on the left)")
    metadata: dict[str, Any] = Field(default_factory=dict)


REQUEST_ADAPTER: TypeAdapter[ComparisonRequest] = TypeAdapter(ComparisonRequest)


def request_json_schema() -> dict:
    """The JSON Schema of one comparison request."""
    schema = REQUEST_ADAPTER.json_schema()
    schema["title"] = f"prefstream comparison request, schema_version {REQUEST_SCHEMA_VERSION}"
    return schema


__all__ = ["REQUEST_SCHEMA_VERSION", "REQUEST_ADAPTER", "Candidate", "ComparisonRequest", "request_json_schema"]
