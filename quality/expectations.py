"""Expectation suites on the landed tables, written as SQL: schema, nulls, value sets, empty text, unique ids.

Each expectation carries the great_expectations type and arguments it stands for and the
SQL condition of an *unexpected* row. The audit evaluates every row condition inside its
one scan of the window (a bit per expectation, so no text leaves DuckDB and nothing is
copied into pandas); a test runs great_expectations itself on a sample and checks that
both engines count the same unexpected rows. (A GX SQL datasource cannot attach a DuckLake
catalog, and GX's pandas path copied every row: 1.7 GB at 1M events.)

Timestamps are not an expectation: implausible ones are counted and left out of windows
(see :func:`prefstream.quality.sql.plausible_sql`), they do not block an export.
"""

from __future__ import annotations

from dataclasses import dataclass

_COMMON = ["event_id", "schema_version", "ts", "prompt", "prompt_hash", "annotator_id", "annotator_kind", "source", "ingested_at"]
COLUMNS = {
    "thumbs": _COMMON + ["item_id", "response", "rating", "model_id"],
    "pairwise": _COMMON + ["pair_id", "response_a", "response_b", "choice", "shown_first", "model_a", "model_b"],
}
OPTIONAL = {"model_id", "model_a", "model_b", "shown_first"}
TEXT = {"thumbs": ["response"], "pairwise": ["response_a", "response_b"]}
SETS = {
    "thumbs": {"rating": ["up", "down"], "annotator_kind": ["user", "expert", "model"], "schema_version": [1]},
    "pairwise": {"choice": ["a", "b", "tie"], "shown_first": ["a", "b"], "annotator_kind": ["user", "expert", "model"], "schema_version": [1]},
}
# The prompt is stored as canonical JSON: an empty string is '""' and an empty message list
# '[]', so a non-empty prompt is at least 3 characters long (bytes: the same for such short JSON, and cheaper).
MIN_PROMPT_JSON = 3


@dataclass(frozen=True)
class Expectation:
    gx: str  # the great_expectations class this stands for
    kwargs: dict
    unexpected: str | None  # SQL: true on an unexpected row (None: a table-level expectation)

    @property
    def name(self) -> str:
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in self.gx).lstrip("_")
        return f"{snake}({self.kwargs['column']})" if "column" in self.kwargs else snake


def suite(table: str) -> list[Expectation]:
    """The expectations on ``table`` (thumbs or pairwise); row-level ones first."""
    out = [Expectation("ExpectColumnValuesToNotBeNull", {"column": c}, f'"{c}" IS NULL') for c in COLUMNS[table] if c not in OPTIONAL]
    for column, values in SETS[table].items():
        listed = ", ".join(repr(v) for v in values)
        out.append(Expectation("ExpectColumnValuesToBeInSet", {"column": column, "value_set": values}, f'"{column}" NOT IN ({listed})'))
    for column in TEXT[table]:
        out.append(Expectation("ExpectColumnValueLengthsToBeBetween", {"column": column, "min_value": 1}, f"\"{column}\" = ''"))
    out.append(Expectation("ExpectColumnValueLengthsToBeBetween", {"column": "annotator_id", "min_value": 1}, "annotator_id = ''"))
    out.append(Expectation("ExpectColumnValueLengthsToBeBetween", {"column": "prompt", "min_value": MIN_PROMPT_JSON}, f"strlen(prompt::VARCHAR) < {MIN_PROMPT_JSON}"))
    out.append(Expectation("ExpectColumnValuesToBeUnique", {"column": "event_id"}, None))
    out.append(Expectation("ExpectTableColumnsToMatchSet", {"column_set": COLUMNS[table], "exact_match": False}, None))
    return out


def bits_sql(table: str) -> str:
    """One INTEGER per row: bit i set when the row is unexpected for row-level expectation i."""
    rows = [e for e in suite(table) if e.unexpected]
    # NULL-safe: a NULL condition (e.g. NOT IN on a NULL) is not unexpected, as in GX.
    return " | ".join(f"(CASE WHEN {e.unexpected} THEN {1 << i} ELSE 0 END)" for i, e in enumerate(rows))


def summarise(table: str, columns: list[str], rows: int, bit_counts: list[int], duplicated_ids: int) -> list[dict]:
    """Results in GX's shape (name, success, element_count, unexpected_count) from the counts."""
    results = []
    bit = 0
    for e in suite(table):
        if e.unexpected:
            unexpected = bit_counts[bit]
            bit += 1
        elif e.gx == "ExpectColumnValuesToBeUnique":
            unexpected = duplicated_ids
        else:
            missing = sorted(set(COLUMNS[table]) - set(columns))
            results.append({"name": e.name, "expectation": e.gx, "kwargs": e.kwargs, "success": not missing, "element_count": None,
                            "unexpected_count": len(missing), "partial_unexpected_list": missing[:5]})
            continue
        results.append({"name": e.name, "expectation": e.gx, "kwargs": e.kwargs, "success": unexpected == 0,
                        "element_count": rows, "unexpected_count": unexpected, "partial_unexpected_list": []})
    return results


def report_section(results: dict[str, list[dict]], skipped: dict[str, str]) -> dict:
    """The report's ``expectations``: totals, failed names and every result by table."""
    flat = [(table, r) for table, rs in results.items() for r in rs]
    failed = [f"{table}: {r['name']}" for table, r in flat if not r["success"]]
    return {
        "engine": "SQL in the audit's scan (the great_expectations expectations of the same names; cross-checked against GX in tests)",
        "evaluated": len(flat),
        "passed": len(flat) - len(failed),
        "failed": len(failed),
        "failed_names": failed,
        "skipped": skipped,
        "suites": results,
    }
