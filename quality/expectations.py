"""Great Expectations suites on the landed tables: schema, nulls, value sets, empty text, sane timestamps.

The store's DDL already enforces most of this on landing; the suites are the independent,
reportable check that what an export is about to read still holds, with GX's standard
result format stored beside the report. GX takes seconds to import, so it is imported
here, inside :func:`run_expectations`, and only when an audit runs.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import duckdb

_COMMON = ["event_id", "schema_version", "ts", "prompt", "prompt_hash", "annotator_id", "annotator_kind", "source", "ingested_at"]
TABLES = {
    "thumbs": {
        "columns": _COMMON + ["item_id", "response", "rating", "model_id"],
        "text": ["response"],
        "sets": {"rating": ["up", "down"], "annotator_kind": ["user", "expert"], "schema_version": [1]},
    },
    "pairwise": {
        "columns": _COMMON + ["pair_id", "response_a", "response_b", "choice", "shown_first", "model_a", "model_b"],
        "text": ["response_a", "response_b"],
        "sets": {"choice": ["a", "b", "tie"], "shown_first": ["a", "b"], "annotator_kind": ["user", "expert"], "schema_version": [1]},
    },
}
OPTIONAL = {"model_id", "model_a", "model_b", "shown_first", "topic", "partition", "offset"}
EARLIEST_TS = datetime(2000, 1, 1, tzinfo=timezone.utc)
# The prompt is stored as canonical JSON: an empty string is '""' and an empty message list
# '[]', so a non-empty prompt is at least 3 characters long.
MIN_PROMPT_JSON = 3


def run_expectations(con: duckdb.DuckDBPyConnection, since: datetime | None, until: datetime | None) -> dict:
    """Validate each landed table (rows with ts in the window) and summarise GX's results."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    started = time.perf_counter()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("prefstream")
    now = datetime.now(timezone.utc)
    suites: dict[str, list[dict]] = {}
    skipped: dict[str, str] = {}
    for table, spec in TABLES.items():
        frames = _landed(con, table, since, until)
        if frames is None or frames[1].empty:
            skipped[table] = f"no {table} rows in the audited window" if frames is not None else f"table {table} is missing"
            continue
        schema, rows = frames
        suites[table] = []
        for name, frame, expectations in (
            ("schema", schema, [gx.expectations.ExpectTableColumnsToMatchSet(column_set=spec["columns"], exact_match=False)]),
            ("rows", rows, _row_expectations(gx.expectations, spec, set(schema.columns), now)),
        ):
            suite = gx.ExpectationSuite(name=f"{table}.{name}")
            for expectation in expectations:
                suite.add_expectation(expectation)
            batch = source.add_dataframe_asset(name=f"{table}.{name}").add_batch_definition_whole_dataframe("window").get_batch(
                batch_parameters={"dataframe": frame}
            )
            suites[table] += [_summary(r) for r in batch.validate(suite, result_format="BASIC").results]
    results = [(table, r) for table, rs in suites.items() for r in rs]
    failed = [f"{table}: {r['name']}" for table, r in results if not r["success"]]
    return {
        "engine": f"great_expectations {gx.__version__}",
        "evaluated": len(results),
        "passed": len(results) - len(failed),
        "failed": len(failed),
        "failed_names": failed,
        "skipped": skipped,
        "suites": suites,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _landed(con, table: str, since: datetime | None, until: datetime | None):
    """(the table's columns as an empty frame, the window's rows with long text as lengths), or None.

    Text is validated through its length (``response`` -> ``response_length``): the checks
    are null and empty, and moving every response into pandas would cost more than the audit.
    """
    exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchall()[0][0]
    if not exists:
        return None
    # Through Arrow: several times faster than DuckDB's own pandas conversion for strings.
    schema = con.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().to_pandas()
    text = [c for c in ("prompt", *TABLES[table]["text"]) if c in schema.columns]
    lengths = ", ".join(f"length({c}::VARCHAR) AS {c}_length" for c in text)
    rows = con.sql(
        f"SELECT * EXCLUDE (metadata, {', '.join(text)}), {lengths} FROM {table} WHERE ts >= ? AND ts < ?",
        params=[since or datetime(1, 1, 2, tzinfo=timezone.utc), until or datetime(9999, 12, 30, tzinfo=timezone.utc)],
    ).to_arrow_table().to_pandas()
    return schema, rows


def _row_expectations(E, spec: dict, present: set[str], now: datetime) -> list:
    text = {"prompt", *spec["text"]}
    out = [E.ExpectColumnValuesToNotBeNull(column=f"{c}_length" if c in text else c) for c in spec["columns"] if c in present and c not in OPTIONAL]
    out.append(E.ExpectColumnValuesToBeUnique(column="event_id"))
    out += [E.ExpectColumnValuesToBeInSet(column=c, value_set=v) for c, v in spec["sets"].items() if c in present]
    out += [E.ExpectColumnValuesToBeBetween(column=f"{c}_length", min_value=1) for c in spec["text"] if c in present]
    out.append(E.ExpectColumnValueLengthsToBeBetween(column="annotator_id", min_value=1))
    out.append(E.ExpectColumnValuesToBeBetween(column="prompt_length", min_value=MIN_PROMPT_JSON))
    out.append(E.ExpectColumnValuesToBeBetween(column="ts", min_value=EARLIEST_TS, max_value=now + timedelta(days=1)))
    return out


def _summary(result) -> dict:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    detail = result.result or {}
    column = kwargs.get("column")
    return {
        "name": f"{config.type}({column})" if column else config.type,
        "expectation": config.type,
        "kwargs": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in kwargs.items()},
        "success": bool(result.success),
        "element_count": detail.get("element_count"),
        "unexpected_count": detail.get("unexpected_count"),
        "partial_unexpected_list": [str(v) for v in detail.get("partial_unexpected_list", [])[:5]],
        "exception": (result.exception_info or {}).get("exception_message") if result.exception_info and result.exception_info.get("raised_exception") else None,
    }
