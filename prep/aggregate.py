"""Aggregation across annotators, in DuckDB SQL over the store's current judgements as of the window's end.

An annotator's judgement of an item is the latest one at or before the window's end
(:func:`prefstream.store.views.current_sql`), so a vote cast after ``--until`` never changes
an export of that window. Each counts once (``majority``) or with the annotator's
reliability from the quality report (``reliability``). Per item:

* pairs: votes for each of the two responses and ties. The response with more (weighted)
  votes is ``chosen``; equal votes (``tie``), only tie votes (``only_ties``), identical
  responses, or only zero-weight voters (``no_reliable_votes``) drop the pair.
* thumbs: up and down votes; more up is desirable (``label`` True), more down undesirable;
  equal votes are a ``tie`` (dropped, or kept as both labels at half weight).
* either: a prompt with a non-text part (image, audio) cannot go into a text export
  (``non_text_content``).

``agreement`` is the share of the item's annotators who back the winner (tie votes count
in the denominator); ``weight`` is the same share with reliability weights (equal to
``agreement`` under majority); ``--min-agreement`` drops items below it (``low_agreement``).

Written as SQL rather than through a library: it is a group-by over the store's own views,
which DuckDB runs vectorised, in parallel and out of core without copying events into
Python. Votes are TEMP tables on the caller's (read-only) connection and decisions TEMP
views over them (``_prep_*``), so nothing lands in the store; :func:`drop_temp` removes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa

from prefstream.prep.chat import HAS_NON_TEXT
from prefstream.store.views import current_sql
from prefstream.times import window_bounds

# Reliability weights become integer micro-units: integer sums are exact and independent of
# the order DuckDB's parallel aggregation adds them in, so two runs give the same bits.
WEIGHT_SCALE = 1_000_000

PAIR_REASONS = ("non_text_content", "identical_responses", "only_ties", "no_reliable_votes", "tie", "low_agreement")
THUMBS_REASONS = ("non_text_content", "no_reliable_votes", "tie", "low_agreement")

@dataclass(frozen=True)
class Window:
    """Half-open ``[since, until)`` on the events' ``ts`` (None is unbounded), over events
    meeting ``plausible`` (an SQL condition on a feedback row; the audit's
    :func:`prefstream.quality.plausible_sql`, so both leave out the same broken clocks)."""

    since: datetime | None = None
    until: datetime | None = None
    plausible: str = "true"

    def params(self) -> list[datetime]:
        return window_bounds(self.since, self.until)


def implausible_counts(con, window: Window, kinds: list[str]) -> dict[str, int]:
    """Events per kind inside the window but not plausible (left out of the export)."""
    # On the raw table: copies of an event share its ts, so distinct ids count each event once
    # without the deduplicating view's window over the whole store.
    return {
        kind: int(con.execute(
            f"SELECT count(DISTINCT event_id) FROM {kind}_raw WHERE ts >= ? AND ts < ? AND NOT {window.plausible}", window.params()
        ).fetchall()[0][0])
        for kind in kinds
    }


def register_weights(con: duckdb.DuckDBPyConnection, reliability: dict[str, float] | None) -> int:
    """Load per-annotator weights into ``_prep_weights``; return the weight (micro-units) of unknown annotators.

    ``None`` is majority voting (everyone weighs one unit). With reliabilities, an annotator
    the report has no estimate for counts as a typical one: the median of the known weights.
    """
    known = {a: r for a, r in (reliability or {}).items() if r is not None}
    scaled = {a: int(round(min(max(float(r), 0.0), 1.0) * WEIGHT_SCALE)) for a, r in known.items()}
    table = pa.table({"annotator_id": pa.array(list(scaled), pa.string()), "w": pa.array(list(scaled.values()), pa.int64())})
    con.register("_prep_weights_in", table)
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE _prep_weights AS SELECT * FROM _prep_weights_in")
    finally:
        con.unregister("_prep_weights_in")
    if reliability is None:
        return 1
    values = sorted(scaled.values())
    if not values:
        return WEIGHT_SCALE
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) // 2


# What the events tables keep: keys, votes, lineage (source position, ts) and the texts.
_EVENT_COLUMNS = 'e.event_id, e.ts, e.topic, e."partition", e."offset", e.source, e.prompt'
_TEXTS = {"pairwise": "e.pair_id, e.response_a, e.response_b", "thumbs": "e.item_id, e.response"}


def _current(kind: str, vote: str, window: Window, reliability: bool, default: int) -> tuple[str, list]:
    """The window's current events of ``kind`` (latest per annotator and item before its end), each with ``vote`` and weight ``w``."""
    weight = f"coalesce(pw.w, {int(default)})::BIGINT" if reliability else "1::BIGINT"
    join = "LEFT JOIN _prep_weights pw USING (annotator_id)" if reliability else ""
    since, until = window.params()
    # Implausible events are left out *before* the latest judgement is chosen: one stamped
    # next year must not supersede an annotator's real vote.
    return (
        f"""SELECT {_EVENT_COLUMNS}, {_TEXTS[kind]}, {vote} AS vote, {weight} AS w
            FROM {current_sql(kind, until, where=window.plausible)} e {join} WHERE e.ts >= ?""",
        [since],
    )


# The current events are materialised once (``_prep_*_events``, also the lineage's source), so
# the store's deduplicating views are read once. Votes are tallied on keys alone; the texts
# (prompt, responses) are fetched once per item afterwards from a representative event (they
# are equal across an item's events, whose key hashes them), which keeps long strings out of
# the aggregation's hash table: half the time and far less memory than carrying them along.
_PAIR_VOTE = "CASE WHEN choice = 'tie' THEN 0 WHEN (choice = 'a') = (response_a <= response_b) THEN 1 ELSE 2 END"


def aggregate_pairs(con, window: Window, *, reliability: bool = False, default_weight: int = 1, min_agreement: float = 0.0) -> None:
    """``_prep_pair_events``, ``_prep_pair_votes`` (one row per pair_id) and ``_prep_pairs`` (its decision and drop reason)."""
    events, params = _current("pairwise", _PAIR_VOTE, window, reliability, default_weight)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _prep_pair_events AS {events}", params)
    # r1 / r2 are the pair's responses in a fixed order (vote 1 is for r1), so annotators shown
    # (a, b) and (b, a) count alike.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _prep_pair_votes AS
        WITH g AS (
            SELECT pair_id, count(*) AS n_annotators,
                   count(*) FILTER (WHERE vote = 1) AS v1, count(*) FILTER (WHERE vote = 2) AS v2,
                   coalesce(sum(w) FILTER (WHERE vote = 1), 0) AS s1, coalesce(sum(w) FILTER (WHERE vote = 2), 0) AS s2,
                   coalesce(sum(w) FILTER (WHERE vote = 0), 0) AS st,
                   list_sort(list(event_id)) AS source_event_ids, min(event_id) AS representative
            FROM _prep_pair_events GROUP BY pair_id)
        SELECT g.* EXCLUDE (representative), p.prompt::VARCHAR AS prompt,
               least(p.response_a, p.response_b) AS r1, greatest(p.response_a, p.response_b) AS r2
        FROM g JOIN _prep_pair_events p ON p.event_id = g.representative"""
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW _prep_pairs AS
        WITH d AS (
            SELECT *, s1 >= s2 AS first_wins,
                   (CASE WHEN s1 >= s2 THEN v1 ELSE v2 END) / n_annotators AS agreement,
                   CASE WHEN s1 + s2 + st > 0 THEN (CASE WHEN s1 >= s2 THEN s1 ELSE s2 END) / (s1 + s2 + st) END AS weight
            FROM _prep_pair_votes)
        SELECT pair_id, prompt,
               CASE WHEN first_wins THEN r1 ELSE r2 END AS chosen,
               CASE WHEN first_wins THEN r2 ELSE r1 END AS rejected,
               weight::DOUBLE AS weight, agreement::DOUBLE AS agreement, n_annotators, source_event_ids,
               CASE WHEN {HAS_NON_TEXT} THEN 'non_text_content'
                    WHEN r1 = r2 THEN 'identical_responses'
                    WHEN v1 + v2 = 0 THEN 'only_ties'
                    WHEN s1 + s2 = 0 THEN 'no_reliable_votes'
                    WHEN s1 = s2 THEN 'tie'
                    WHEN agreement < {float(min_agreement)!r} THEN 'low_agreement' END AS drop_reason
        FROM d"""
    )


def aggregate_thumbs(con, window: Window, *, reliability: bool = False, default_weight: int = 1, min_agreement: float = 0.0) -> None:
    """``_prep_thumb_events``, ``_prep_thumb_votes`` (one row per item_id) and ``_prep_thumbs`` (label, drop reason)."""
    events, params = _current("thumbs", "rating = 'up'", window, reliability, default_weight)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _prep_thumb_events AS {events}", params)
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _prep_thumb_votes AS
        WITH g AS (
            SELECT item_id, count(*) AS n_annotators,
                   count(*) FILTER (WHERE vote) AS vu, count(*) FILTER (WHERE NOT vote) AS vd,
                   coalesce(sum(w) FILTER (WHERE vote), 0) AS su, coalesce(sum(w) FILTER (WHERE NOT vote), 0) AS sd,
                   list_sort(list(event_id)) AS source_event_ids, min(event_id) AS representative
            FROM _prep_thumb_events GROUP BY item_id)
        SELECT g.* EXCLUDE (representative), t.prompt::VARCHAR AS prompt, t.response AS completion
        FROM g JOIN _prep_thumb_events t ON t.event_id = g.representative"""
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW _prep_thumbs AS
        WITH d AS (
            SELECT *, su > sd AS label,
                   (CASE WHEN su > sd THEN vu ELSE vd END) / n_annotators AS agreement,
                   CASE WHEN su + sd > 0 THEN greatest(su, sd) / (su + sd) END AS weight
            FROM _prep_thumb_votes)
        SELECT item_id, prompt, completion, label, weight::DOUBLE AS weight, agreement::DOUBLE AS agreement,
               n_annotators, source_event_ids, vu, vd, su, sd,
               CASE WHEN {HAS_NON_TEXT} THEN 'non_text_content'
                    WHEN su + sd = 0 THEN 'no_reliable_votes'
                    WHEN su = sd THEN 'tie'
                    WHEN agreement < {float(min_agreement)!r} THEN 'low_agreement' END AS drop_reason
        FROM d"""
    )


def drop_counts(con, table: str, reasons: tuple[str, ...], prefix: str) -> dict[str, int]:
    """``{prefix_reason: count}`` for every reason (zeros included, so manifests compare key for key)."""
    found = dict(con.execute(f"SELECT drop_reason, count(*) FROM {table} WHERE drop_reason IS NOT NULL GROUP BY 1").fetchall())
    return {f"{prefix}_{reason}": int(found.get(reason, 0)) for reason in reasons}


def drop_temp(con, keep: tuple[str, ...] = ()) -> None:
    """Remove every ``_prep_*`` temp view and table this package made on ``con`` (but ``keep``)."""
    like = "LIKE '\\_prep\\_%' ESCAPE '\\'"
    for (name,) in con.execute(f"SELECT view_name FROM duckdb_views() WHERE temporary AND view_name {like}").fetchall():
        if name not in keep:
            con.execute(f"DROP VIEW IF EXISTS temp.{name}")
    for (name,) in con.execute(f"SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name {like}").fetchall():
        if name not in keep:
            con.execute(f"DROP TABLE IF EXISTS temp.{name}")
