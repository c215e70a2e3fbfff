"""Synthetic feedback written straight into a store's raw tables with one SQL statement per kind.

For scale tests and ``bench/audit.py``: millions of events in seconds, no Kafka, no JSON.
The same settings give the same rows whatever ``n`` (event ``i`` depends only on ``i`` and
the seed), so a 200k-event store is a sample of the same generator as a 2M-event one.
Honest annotators (``ann-00`` ...) agree with a latent truth with probability
``accuracy``; ``ann-position`` picks the first-shown response 90% of the time and
``ann-random`` labels at random. Responses' lengths are independent of quality unless
``longer_wins`` > 0 (that share of honest judgements goes to the longer response).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass(frozen=True)
class Synthetic:
    events: int
    seed: int = 0
    honest: int = 9  # with the two planted annotators a pool of 11 (a prime: raters of an item are distinct)
    raters: int = 3
    pairwise_share: float = 0.5
    accuracy: float = 0.85
    tie_rate: float = 0.03
    longer_wins: float = 0.0
    days: int = 30
    start: datetime = datetime(2026, 10, 1, tzinfo=timezone.utc)


def _u(tag: str, *keys: str) -> str:
    """A uniform number in [0, 1) from DuckDB's hash of the keys (the same for the same keys)."""
    return f"((hash({', '.join(keys)}, seed, '{tag}') % 1000003) / 1000003.0)"


def _events(s: Synthetic) -> str:
    pool = s.honest + 2
    items = s.events // s.raters
    return f"""
    WITH params AS (SELECT {s.seed} AS seed),
    items AS (SELECT i, seed, {_u('kind', 'i')} < {s.pairwise_share} AS is_pair, {_u('good', 'i')} < 0.5 AS good_a,
                     90 + (hash(i, seed, 'la') % 171)::INTEGER AS la, 90 + (hash(i, seed, 'lb') % 171)::INTEGER AS lb,
                     (hash(i, seed, 'base') % {pool})::INTEGER AS base, 1 + (hash(i, seed, 'off') % {(pool - 1) // 2})::INTEGER AS off
              FROM range({items}) t(i), params),
    ev AS (SELECT items.*, j, ((base + j * off) % {pool})::INTEGER AS r,
                  TIMESTAMPTZ '{s.start.isoformat()}' + to_microseconds((i * {s.days * 86400e6 / max(items, 1):.3f})::BIGINT + j * 1000000) AS ts
           FROM items, range({s.raters}) t(j))
    SELECT *, CASE r WHEN {pool - 1} THEN 'ann-position' WHEN {pool - 2} THEN 'ann-random' ELSE 'ann-' || lpad(r::VARCHAR, {max(2, len(str(pool)))}, '0') END AS annotator_id,
           {_u('u', 'i', 'j')} AS u, {_u('v', 'i', 'j')} AS v, {_u('w', 'i', 'j')} < 0.5 AS first_a
    FROM ev"""


def _common(kind: str) -> str:
    return f"""1 AS schema_version, ts, to_json('How do I fix thing ' || i || '?') AS prompt, 'h' || i AS prompt_hash, annotator_id,
        'user' AS annotator_kind, '{{}}'::JSON AS metadata, NULL::VARCHAR AS topic, NULL::INTEGER AS "partition", NULL::BIGINT AS "offset",
        'synthetic:' || seed || ':{kind}:' || i || ':' || j AS source, ts + INTERVAL 1 MINUTE AS ingested_at,
        'e-' || seed || '-' || i || '-' || j AS event_id"""


def insert_sql(s: Synthetic) -> dict[str, str]:
    """``{"thumbs": INSERT ..., "pairwise": INSERT ...}`` into the raw tables."""
    text = "repeat('words ', {n} // 6)"
    good, bad = "'Sure! Here is how, step by step. '", "'Sorry, I cannot help with that. '"
    thumbs = f"""INSERT INTO thumbs_raw BY NAME
    SELECT {_common('thumbs')}, 'i' || i AS item_id,
           (CASE WHEN good_a THEN {good} ELSE {bad} END) || {text.format(n='la')} AS response,
           CASE WHEN annotator_id = 'ann-random' THEN CASE WHEN u < 0.5 THEN 'up' ELSE 'down' END
                WHEN (u < {s.accuracy}) = good_a THEN 'up' ELSE 'down' END AS rating,
           CASE WHEN i < {s.events // s.raters // 2} THEN 'assistant-v1' ELSE 'assistant-v2' END AS model_id
    FROM ({_events(s)}) WHERE NOT is_pair"""
    longer = "CASE WHEN la >= lb THEN 'a' ELSE 'b' END"
    pairwise = f"""INSERT INTO pairwise_raw BY NAME
    SELECT {_common('pairwise')}, 'p' || i AS pair_id,
           (CASE WHEN good_a THEN {good} ELSE {bad} END) || {text.format(n='la')} AS response_a,
           (CASE WHEN good_a THEN {bad} ELSE {good} END) || {text.format(n='lb')} AS response_b,
           CASE WHEN annotator_id = 'ann-random' THEN CASE WHEN u < 0.5 THEN 'a' ELSE 'b' END
                WHEN annotator_id = 'ann-position' AND u < 0.9 THEN CASE WHEN first_a THEN 'a' ELSE 'b' END
                WHEN v < {s.tie_rate} THEN 'tie'
                WHEN v < {s.tie_rate + s.longer_wins} THEN {longer}
                WHEN (u < {s.accuracy}) = good_a THEN 'a' ELSE 'b' END AS choice,
           CASE WHEN first_a THEN 'a' ELSE 'b' END AS shown_first, 'assistant-v1' AS model_a, 'assistant-v2' AS model_b
    FROM ({_events(s)}) WHERE is_pair"""
    return {"thumbs": thumbs, "pairwise": pairwise}


def build(store, synthetic: Synthetic) -> None:
    """Write ``synthetic`` into ``store`` (a :class:`prefstream.store.Store`), one transaction per kind."""
    for sql in insert_sql(synthetic).values():
        store.transact(lambda con, sql=sql: con.execute(sql), what="synthetic feedback")
