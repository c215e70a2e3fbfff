"""Deduplicating views over the raw tables, and "current" judgements as of a window's end.

- ``thumbs`` / ``pairwise``: one row per ``event_id``. A physical repeat of the same
  message (a redelivery, a zombie consumer, a second group replaying the topic) and a
  producer retry (the same event_id at another offset) both collapse to the copy at the
  earliest source position, so the choice never depends on which process landed first.
- ``duplicates``: each producer retry once (a source other than the first copy's).
- ``dead_letters``: one row per source position.
- ``kafka_offsets``: per group and partition, the highest next offset of the latest epoch.
- ``*_current``: per annotator and item, the judgement with the latest ``ts``.
"""

from __future__ import annotations

from datetime import datetime

_FIRST_COPY = 'ORDER BY topic NULLS LAST, "partition", "offset", source'

_PAIRWISE_DERIVED = """
    CASE choice WHEN 'a' THEN response_a WHEN 'b' THEN response_b END AS chosen,
    CASE choice WHEN 'a' THEN response_b WHEN 'b' THEN response_a END AS rejected,
    CASE WHEN choice = 'tie' OR shown_first IS NULL THEN NULL ELSE choice = shown_first END AS first_shown_chosen"""

_ITEM = {"thumbs": "item_id", "pairwise": "pair_id"}


def _events(kind: str) -> str:
    return f"SELECT * FROM {kind}_raw QUALIFY row_number() OVER (PARTITION BY event_id {_FIRST_COPY}) = 1"


def _latest(kind: str, source: str) -> str:
    derived = f", {_PAIRWISE_DERIVED}" if kind == "pairwise" else ""
    return (
        f"SELECT *{derived} FROM {source} "
        f"QUALIFY row_number() OVER (PARTITION BY annotator_id, {_ITEM[kind]} ORDER BY ts DESC, event_id DESC) = 1"
    )


def _retries(kind: str) -> str:
    return f"""SELECT source, event_id, '{kind}' AS kind, first_source, ingested_at AS received_at FROM (
        SELECT source, event_id, ingested_at,
               first_value(source) OVER (PARTITION BY event_id {_FIRST_COPY}) AS first_source,
               row_number() OVER (PARTITION BY event_id, source ORDER BY ingested_at) AS copy
        FROM {kind}_raw)
    WHERE copy = 1 AND source <> first_source"""


VIEWS = {
    "thumbs": _events("thumbs"),
    "pairwise": _events("pairwise"),
    "thumbs_current": _latest("thumbs", "thumbs"),
    "pairwise_current": _latest("pairwise", "pairwise"),
    "dead_letters": "SELECT * FROM dead_letters_raw QUALIFY row_number() OVER (PARTITION BY source ORDER BY received_at) = 1",
    "duplicates": f"{_retries('thumbs')} UNION ALL {_retries('pairwise')}",
    "kafka_offsets": """SELECT group_id, topic, "partition", max(next_offset) AS next_offset, max(updated_at) AS updated_at
        FROM offsets_log GROUP BY group_id, topic, "partition", epoch
        QUALIFY epoch = max(epoch) OVER (PARTITION BY group_id, topic, "partition")""",
}


def current_sql(kind: str, until: datetime | None = None) -> str:
    """A parenthesised subquery (use as ``FROM {current_sql(...)} AS c``): the latest judgement per annotator and item among events with
    ``ts < until`` (all events when ``until`` is None); the columns of ``{kind}_current``.

    A vote cast after the window's end therefore never changes what the window exports.
    """
    if kind not in _ITEM:
        raise ValueError(f"unknown kind {kind!r}")
    if until is None:
        return f"(SELECT * FROM {kind}_current)"
    return f"({_latest(kind, f'(SELECT * FROM {kind} WHERE ts < {_timestamp(until)})')})"


def _timestamp(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("window bounds must be timezone-aware")
    return f"TIMESTAMPTZ '{value.isoformat()}'"
