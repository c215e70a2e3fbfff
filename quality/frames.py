"""Labels out of the store, as polars frames the statistics take.

Both loaders read the *current* views (the latest event per annotator and item) and keep
rows whose ``ts`` is in ``[since, until)``. ``label`` is the long-format label the
agreement functions use: thumbs ``up`` / ``down``; pairwise ``r1`` / ``r2`` / ``tie``, where
r1 is the response with the smaller md5 digest, so annotators who were shown the pair as
(a, b) and as (b, a) are compared on the same footing. (Sorting the texts themselves
would tie the orientation to how responses start, e.g. "Sorry" < "Sure", and make one
label far more common than the other for no reason.) A label outside the expected
set becomes null (and is counted by the report) instead of failing the audit.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import polars as pl

from prefstream.times import window_bounds


THUMBS_LABELS = ("up", "down")
PAIRWISE_LABELS = ("r1", "r2", "tie")

_THUMBS_SQL = """
SELECT event_id, item_id, prompt_hash, annotator_id,
       CASE WHEN rating IN ('up', 'down') THEN rating END AS label,
       rating, ts, timezone('UTC', ts)::DATE AS day, model_id, length(response) AS response_length
FROM thumbs_current
WHERE ts >= ? AND ts < ?
"""

_PAIRWISE_SQL = """
SELECT event_id, pair_id AS item_id, prompt_hash, annotator_id,
       CASE WHEN choice = 'tie' THEN 'tie'
            WHEN choice NOT IN ('a', 'b') THEN NULL
            WHEN (choice = 'a') = (md5(response_a) <= md5(response_b)) THEN 'r1' ELSE 'r2' END AS label,
       choice, shown_first, first_shown_chosen, md5(response_a) <= md5(response_b) AS a_is_r1,
       length(response_a) AS length_a, length(response_b) AS length_b,
       ts, timezone('UTC', ts)::DATE AS day, model_a, model_b
FROM pairwise_current
WHERE ts >= ? AND ts < ?
"""



def load_thumbs(con: duckdb.DuckDBPyConnection, since: datetime | None = None, until: datetime | None = None) -> pl.DataFrame:
    """Current thumbs in the window: one row per (annotator, item)."""
    return con.sql(_THUMBS_SQL, params=window_bounds(since, until)).pl()


def load_pairwise(con: duckdb.DuckDBPyConnection, since: datetime | None = None, until: datetime | None = None) -> pl.DataFrame:
    """Current pairwise judgements in the window: one row per (annotator, pair)."""
    return con.sql(_PAIRWISE_SQL, params=window_bounds(since, until)).pl()


def labels(frame: pl.DataFrame) -> pl.DataFrame:
    """The long-format (item_id, annotator_id, label) frame the agreement functions take."""
    return frame.select("item_id", "annotator_id", "label")


_REPEATS_SQL = """
WITH raw AS (
    SELECT event_id, annotator_id, {item} AS item_id, {label} AS label, ts FROM {table} WHERE ts >= ? AND ts < ?
)
SELECT
    (SELECT count(*) FROM raw) AS events,
    (SELECT count(*) FROM {table}_current WHERE ts >= ? AND ts < ?) AS current,
    (SELECT count(*) - count(DISTINCT (annotator_id, item_id, label, ts)) FROM raw) AS content_duplicates,
    (SELECT count(*) FROM duplicates d JOIN raw USING (event_id) WHERE d.kind = '{table}') AS retries,
    (SELECT count(*) FROM (SELECT 1 FROM raw GROUP BY annotator_id, item_id, ts HAVING count(DISTINCT label) > 1)) AS contradictions
"""

_PAIRWISE_CANONICAL = """CASE WHEN choice IN ('tie') OR choice NOT IN ('a', 'b') THEN choice
     WHEN (choice = 'a') = (md5(response_a) <= md5(response_b)) THEN 'r1' ELSE 'r2' END"""


def load_repeats(con: duckdb.DuckDBPyConnection, since: datetime | None = None, until: datetime | None = None) -> dict:
    """Per kind: raw ``events``, ``current`` annotations, ``content_duplicates`` (same annotator, item,
    label and ts under another event_id), ``retries`` (repeated event_ids the sink set aside) and
    ``contradictions`` ((annotator, item, ts) groups carrying different labels at the same instant)."""
    window = window_bounds(since, until)
    out = {}
    for table, item, label in (("thumbs", "item_id", "rating"), ("pairwise", "pair_id", _PAIRWISE_CANONICAL)):
        sql = _REPEATS_SQL.format(table=table, item=item, label=label)
        row = con.execute(sql, window + window).fetchall()[0]
        out[table] = dict(zip(("events", "current", "content_duplicates", "retries", "contradictions"), row))
    out["dead_letters"] = con.execute("SELECT count(*) FROM dead_letters").fetchall()[0][0]
    return out
