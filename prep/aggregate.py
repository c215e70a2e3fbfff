"""Aggregation across annotators, in DuckDB SQL over the current-feedback views.

Each annotator's current label counts once (or with their reliability as weight). An item
whose weighted votes tie has no label and is dropped; ``agreement`` is the winning share
of the weighted votes (ties included in the denominator for pairs), used as the row weight.

Written as SQL rather than with a library: the aggregation is a group-by over the store's
own views, and DuckDB does it vectorised and out of core.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import polars as pl


@dataclass(frozen=True)
class Window:
    """A half-open time window on the events' ``ts``; None means unbounded."""

    since: datetime | None = None
    until: datetime | None = None

    def sql(self) -> str:
        return "ts >= coalesce(?::TIMESTAMPTZ, '-infinity') AND ts < coalesce(?::TIMESTAMPTZ, 'infinity')"

    def params(self) -> list:
        return [self.since, self.until]


# An annotator the reliability estimate knows nothing about counts as a coin flip.
UNKNOWN_RELIABILITY = 0.5


def _weighting(con: duckdb.DuckDBPyConnection, weights: dict[str, float] | None) -> tuple[str, str]:
    """Register annotator weights; return (join clause, SQL expression for an event's weight)."""
    if not weights:
        return "", "1.0"
    frame = pl.DataFrame({"annotator_id": list(weights), "w": [float(v) for v in weights.values()]})
    con.register("annotator_weights", frame)
    return "LEFT JOIN annotator_weights aw USING (annotator_id)", f"coalesce(aw.w, {UNKNOWN_RELIABILITY})"


def count_in_window(con: duckdb.DuckDBPyConnection, window: Window) -> int:
    """Current thumbs and pairwise events in the window."""
    query = f"SELECT (SELECT count(*) FROM thumbs_current WHERE {window.sql()}) + (SELECT count(*) FROM pairwise_current WHERE {window.sql()})"
    return con.execute(query, window.params() * 2).fetchall()[0][0]


def thumbs_items(con: duckdb.DuckDBPyConnection, window: Window, weights: dict[str, float] | None = None) -> pl.DataFrame:
    """One row per thumbs item: prompt, response, weighted up / down votes, event ids."""
    join, w = _weighting(con, weights)
    return con.sql(
        f"""
        SELECT item_id, any_value(prompt_hash) AS prompt_hash, any_value(prompt)::VARCHAR AS prompt,
               any_value(response) AS completion,
               sum(CASE WHEN rating = 'up' THEN {w} ELSE 0 END)::DOUBLE AS w_up,
               sum(CASE WHEN rating = 'down' THEN {w} ELSE 0 END)::DOUBLE AS w_down,
               count(*)::INTEGER AS n_annotators,
               list(event_id ORDER BY event_id) AS source_event_ids
        FROM thumbs_current e {join} WHERE {window.sql()}
        GROUP BY item_id ORDER BY item_id""",
        params=window.params(),
    ).pl()


def pairwise_items(con: duckdb.DuckDBPyConnection, window: Window, weights: dict[str, float] | None = None) -> pl.DataFrame:
    """One row per unordered pair: its two responses (r1 < r2), weighted votes for each and ties."""
    join, w = _weighting(con, weights)
    return con.sql(
        f"""
        SELECT pair_id, any_value(prompt_hash) AS prompt_hash, any_value(prompt)::VARCHAR AS prompt,
               any_value(least(response_a, response_b)) AS r1, any_value(greatest(response_a, response_b)) AS r2,
               sum(CASE WHEN chosen = least(response_a, response_b) THEN {w} ELSE 0 END)::DOUBLE AS w1,
               sum(CASE WHEN chosen = greatest(response_a, response_b) THEN {w} ELSE 0 END)::DOUBLE AS w2,
               sum(CASE WHEN choice = 'tie' THEN {w} ELSE 0 END)::DOUBLE AS w_tie,
               count(*)::INTEGER AS n_annotators,
               list(event_id ORDER BY event_id) AS source_event_ids
        FROM pairwise_current e {join} WHERE {window.sql()}
        GROUP BY pair_id ORDER BY pair_id""",
        params=window.params(),
    ).pl()


def decide_thumbs(items: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Majority label per thumbs item; ties dropped. Returns KTO rows and drop counts."""
    total = pl.col("w_up") + pl.col("w_down")
    labelled = items.with_columns(
        label=pl.col("w_up") > pl.col("w_down"),
        agreement=pl.max_horizontal("w_up", "w_down") / total,
        tie=pl.col("w_up") == pl.col("w_down"),
    )
    dropped = {"tie": int(labelled["tie"].sum())}
    rows = labelled.filter(~pl.col("tie")).select(
        "prompt_hash", "prompt", "completion", "label", "agreement", "n_annotators", "source_event_ids", pl.col("item_id")
    )
    return rows, dropped


def decide_pairs(items: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Majority preference per pair; ties (and identical responses) dropped."""
    identical = pl.col("r1") == pl.col("r2")
    tie = pl.col("w1") == pl.col("w2")
    decided = items.filter(~identical & ~tie)
    dropped = {
        "identical_responses": int(items.select(identical.sum()).item()),
        "tie": int(items.filter(~identical).select(tie.sum()).item()),
    }
    first_wins = pl.col("w1") > pl.col("w2")
    rows = decided.select(
        "prompt_hash",
        "prompt",
        chosen=pl.when(first_wins).then(pl.col("r1")).otherwise(pl.col("r2")),
        rejected=pl.when(first_wins).then(pl.col("r2")).otherwise(pl.col("r1")),
        agreement=pl.max_horizontal("w1", "w2") / (pl.col("w1") + pl.col("w2") + pl.col("w_tie")),
        n_annotators="n_annotators",
        source_event_ids="source_event_ids",
        pair_id="pair_id",
    )
    return rows, dropped
