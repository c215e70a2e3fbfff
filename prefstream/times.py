"""Timestamps as users type them (``--since`` / ``--until``), shared by the audit and exports."""

from __future__ import annotations

from datetime import datetime, timezone

from prefstream.errors import PrefstreamError


# Open ends of a --since / --until window, as concrete bounds DuckDB takes as TIMESTAMPTZ parameters.
EARLIEST = datetime(1, 1, 2, tzinfo=timezone.utc)
LATEST = datetime(9999, 12, 30, tzinfo=timezone.utc)


def window_bounds(since: datetime | None, until: datetime | None) -> list[datetime]:
    """``[since, until]`` with open ends replaced by :data:`EARLIEST` / :data:`LATEST`."""
    return [since or EARLIEST, until or LATEST]


def parse_time(value: datetime | str | None, name: str = "time") -> datetime | None:
    """An aware datetime from a datetime or an RFC 3339 string (naive means UTC); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise PrefstreamError(f"--{name} {value!r} is not an RFC 3339 timestamp (e.g. 2026-11-01T00:00:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
