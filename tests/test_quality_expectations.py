"""The audit's SQL expectations against great_expectations itself, on the same rows with planted faults."""

from __future__ import annotations

import os

import duckdb
import pytest

from prefstream.quality import expectations as ex

# Faulty rows on purpose: every row-level expectation of both suites is broken at least once.
ROWS = {
    "thumbs": """SELECT * FROM (VALUES
        ('e1', 1, TIMESTAMPTZ '2026-11-01 00:00:00+00', '"hi there"', 'h1', 'ann-1', 'user', '{}', 's1', TIMESTAMPTZ '2026-11-01 00:01:00+00', 'i1', 'fine', 'up', 'm'),
        ('e2', 2, TIMESTAMPTZ '2026-11-01 00:00:00+00', '""', 'h2', '', 'robot', '{}', 's2', TIMESTAMPTZ '2026-11-01 00:01:00+00', 'i2', '', 'meh', NULL),
        ('e3', 1, NULL, '[]', NULL, 'ann-2', 'model', '{}', 's3', TIMESTAMPTZ '2026-11-01 00:01:00+00', 'i3', 'ok', 'down', 'm'),
        ('e3', 1, TIMESTAMPTZ '2026-11-01 00:00:00+00', '"q"', 'h4', 'ann-3', 'expert', '{}', 's4', TIMESTAMPTZ '2026-11-01 00:01:00+00', NULL, 'ok', NULL, 'm')
    ) t(event_id, schema_version, ts, prompt, prompt_hash, annotator_id, annotator_kind, metadata, source, ingested_at, item_id, response, rating, model_id)""",
    "pairwise": """SELECT * FROM (VALUES
        ('p1', 1, TIMESTAMPTZ '2026-11-01 00:00:00+00', '"hi there"', 'h1', 'ann-1', 'user', '{}', 's1', TIMESTAMPTZ '2026-11-01 00:01:00+00', 'x1', 'a', 'b', 'a', 'a', NULL, NULL),
        ('p2', 1, TIMESTAMPTZ '2026-11-01 00:00:00+00', '"q"', 'h2', 'ann-2', 'user', '{}', 's2', TIMESTAMPTZ '2026-11-01 00:01:00+00', 'x2', '', 'b', 'c', 'left', NULL, NULL),
        ('p3', 1, TIMESTAMPTZ '2026-11-01 00:00:00+00', '"q"', 'h3', 'ann-3', 'user', '{}', 's3', TIMESTAMPTZ '2026-11-01 00:01:00+00', 'x3', 'a', '', 'tie', NULL, NULL, NULL)
    ) t(event_id, schema_version, ts, prompt, prompt_hash, annotator_id, annotator_kind, metadata, source, ingested_at, pair_id, response_a, response_b, choice, shown_first, model_a, model_b)""",
}


def sql_counts(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, int]:
    """Unexpected counts per expectation name, from the same bit expression the audit's scan evaluates."""
    row_level = [e for e in ex.suite(table) if e.unexpected]
    bits = ", ".join(f"count(*) FILTER (bad & {1 << i} <> 0)" for i in range(len(row_level)))
    row = con.execute(f"SELECT count(*), {bits} FROM (SELECT ({ex.bits_sql(table)})::INTEGER AS bad FROM ({ROWS[table]}))").fetchall()[0]
    duplicated = con.execute(f"SELECT coalesce(sum(c), 0) FROM (SELECT count(*) AS c FROM ({ROWS[table]}) GROUP BY event_id HAVING c > 1)").fetchall()[0][0]
    columns = [d[0] for d in con.execute(f"SELECT * FROM ({ROWS[table]}) LIMIT 0").description]
    return {r["name"]: r["unexpected_count"] for r in ex.summarise(table, columns, row[0], list(row[1:]), int(duplicated))}


def gx_counts(frame, table: str) -> dict[str, int]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = context.data_sources.add_pandas("cross").add_dataframe_asset(name=table).add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": frame}
    )
    suite = gx.ExpectationSuite(name=table)
    for expectation in ex.suite(table):
        suite.add_expectation(getattr(gx.expectations, expectation.gx)(**expectation.kwargs))
    out = {}
    for result in batch.validate(suite, result_format="COMPLETE").results:
        config, details = result.expectation_config, result.result or {}
        column = config.kwargs.get("column")
        name = f"{config.type}({column})" if column else config.type
        if config.type == "expect_table_columns_to_match_set":
            out[name] = len(details.get("details", {}).get("mismatched", {}).get("missing", []))
        else:
            out[name] = details.get("unexpected_count")
    return out


@pytest.mark.parametrize("table", ["thumbs", "pairwise"])
def test_sql_expectations_count_what_great_expectations_counts(table):
    con = duckdb.connect()
    frame = con.execute(ROWS[table]).df()
    ours, theirs = sql_counts(con, table), gx_counts(frame, table)
    assert ours == theirs
    assert sum(1 for v in ours.values() if v) >= 4  # the planted faults are seen, not a vacuous match


def test_a_missing_column_fails_the_schema_expectation():
    results = ex.summarise("thumbs", [c for c in ex.COLUMNS["thumbs"] if c != "rating"], 10, [0] * 20, 0)
    schema = next(r for r in results if r["expectation"] == "ExpectTableColumnsToMatchSet")
    assert not schema["success"] and schema["partial_unexpected_list"] == ["rating"]
