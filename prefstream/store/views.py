"""Deduplicating views over the raw tables, and "current" judgements as of a window's end.

- ``thumbs`` / ``pairwise``: one row per ``event_id``. A physical repeat of the same
  message (a redelivery, a zombie consumer, a second group replaying the topic) and a
  producer retry (the same event_id at another offset) both collapse to the copy at the
  earliest source position, so the choice never depends on which process landed first.
- ``duplicates``: each producer retry once (a source other than the first copy's).
- ``dead_letters``: one row per source position and raw message.
- ``kafka_offsets``: per group and partition, the highest next offset of the latest epoch.
- ``*_current``: per annotator and item, the judgement with the latest ``ts``.
"""

from __future__ import annotations

from datetime import datetime

# The earliest source position first; file rows (no topic) after Kafka rows.
_POSITION = '(topic IS NULL, coalesce(topic, \'\'), coalesce("partition", 0), coalesce("offset", 0), source)'

_PAIRWISE_DERIVED = """
    CASE choice WHEN 'a' THEN response_a WHEN 'b' THEN response_b END AS chosen,
    CASE choice WHEN 'a' THEN response_b WHEN 'b' THEN response_a END AS rejected,
    CASE WHEN choice = 'tie' OR shown_first IS NULL THEN NULL ELSE choice = shown_first END AS first_shown_chosen"""

_ITEM = {"thumbs": "item_id", "pairwise": "pair_id"}

# Deduplication works on keys only (DuckLake's stable ``rowid``, the event id, the source
# position): aggregates pick the row ids to keep, and a semi-join fetches those rows with
# their texts. A window over whole rows would sort every prompt and response instead.


def _first_copies(kind: str, where: str = "") -> str:
    """One row per event: its first copy's rowid and the keys "current" needs."""
    return (
        f"SELECT arg_min(rowid, {_POSITION}) AS rid, event_id, any_value(ts) AS ts, "
        f"any_value(annotator_id) AS annotator_id, any_value({_ITEM[kind]}) AS item FROM {kind}_raw {where} GROUP BY event_id"
    )


def _rows(kind: str, rowids: str) -> str:
    derived = f", {_PAIRWISE_DERIVED}" if kind == "pairwise" else ""
    return f"SELECT *{derived} FROM {kind}_raw WHERE rowid IN ({rowids})"


def _latest(kind: str, where: str = "") -> str:
    return _rows(kind, f"SELECT arg_max(rid, (ts, event_id)) FROM ({_first_copies(kind, where)}) GROUP BY annotator_id, item")


def _retries(kind: str) -> str:
    return f"""SELECT r.source, r.event_id, '{kind}' AS kind, f.source AS first_source, min(r.ingested_at) AS received_at
        FROM {kind}_raw r JOIN (SELECT event_id, arg_min(source, {_POSITION}) AS source FROM {kind}_raw GROUP BY event_id) f USING (event_id)
        WHERE r.source <> f.source GROUP BY ALL"""


VIEWS = {
    "thumbs": f"SELECT * FROM thumbs_raw WHERE rowid IN (SELECT rid FROM ({_first_copies('thumbs')}))",
    "pairwise": f"SELECT * FROM pairwise_raw WHERE rowid IN (SELECT rid FROM ({_first_copies('pairwise')}))",
    "thumbs_current": _latest("thumbs"),
    "pairwise_current": _latest("pairwise"),
    # By position and content: a recreated topic reuses offsets for new messages.
    "dead_letters": "SELECT * FROM dead_letters_raw WHERE rowid IN (SELECT min(rowid) FROM dead_letters_raw GROUP BY source, hash(raw))",
    "duplicates": f"{_retries('thumbs')} UNION ALL {_retries('pairwise')}",
    "kafka_offsets": """SELECT group_id, topic, "partition", max(next_offset) AS next_offset, max(updated_at) AS updated_at
        FROM offsets_log GROUP BY group_id, topic, "partition", epoch
        QUALIFY epoch = max(epoch) OVER (PARTITION BY group_id, topic, "partition")""",
}


def current_sql(kind: str, until: datetime | None = None, where: str | None = None) -> str:
    """A parenthesised subquery (use as ``FROM {current_sql(...)} AS c``): the latest judgement per annotator and item among events with
    ``ts < until`` (all events when ``until`` is None); the columns of ``{kind}_current``.

    A vote cast after the window's end therefore never changes what the window exports.
    ``where`` is a further condition on the raw rows (e.g. plausible timestamps), applied
    before the latest judgement is chosen.
    """
    if kind not in _ITEM:
        raise ValueError(f"unknown kind {kind!r}")
    conditions = [c for c in (f"ts < {_timestamp(until)}" if until else None, where) if c]
    if not conditions:
        return f"(SELECT * FROM {kind}_current)"
    return f"({_latest(kind, 'WHERE ' + ' AND '.join(f'({c})' for c in conditions))})"


def _timestamp(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("window bounds must be timezone-aware")
    return f"TIMESTAMPTZ '{value.isoformat()}'"
