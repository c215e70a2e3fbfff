"""Version upcasting: older wire versions are rewritten, step by step, to the current one.

When schema_version 2 arrives, register ``@upcaster(1)`` (a function turning a v1 dict
into a v2 dict) and bump ``SCHEMA_VERSION``; v1 messages still on the topic keep landing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefstream.schemas.events import SCHEMA_VERSION

Payload = dict[str, Any]
UPCASTERS: dict[int, Callable[[Payload], Payload]] = {}


def upcaster(from_version: int) -> Callable[[Callable[[Payload], Payload]], Callable[[Payload], Payload]]:
    """Register a function that rewrites a ``from_version`` payload as ``from_version + 1``."""

    def register(fn: Callable[[Payload], Payload]) -> Callable[[Payload], Payload]:
        UPCASTERS[from_version] = fn
        return fn

    return register


def upcast(payload: Payload) -> Payload:
    """Return ``payload`` rewritten to the current schema version.

    Raises ``ValueError`` with a reason for a version that is neither current nor
    reachable through registered upcasters.
    """
    version = payload.get("schema_version")
    if type(version) is not int:
        raise ValueError(f"schema_version must be an integer, got {version!r}")
    while version != SCHEMA_VERSION:
        step = UPCASTERS.get(version)
        if step is None:
            raise ValueError(f"unknown schema_version {version} (this build reads {_readable()})")
        payload = step(dict(payload))
        version = payload.get("schema_version")
    return payload


def _readable() -> str:
    return ", ".join(str(v) for v in sorted({SCHEMA_VERSION, *UPCASTERS}))
