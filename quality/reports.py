"""Stored reports: the ``quality_reports`` table, cited by exports through ``report_id``, and their reuse.

Functions take a :class:`prefstream.store.Store` or an open connection. Reads through a
store see its current snapshot (a report saved after snapshot N is still found for N).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from contextlib import contextmanager
from datetime import datetime

import duckdb

from prefstream.errors import PrefstreamError
from prefstream.times import parse_time

# Tables whose changes alter what an audit reads; a snapshot touching none of them (a
# report or export saved, a run recorded, files compacted) leaves every report valid.
FEEDBACK_TABLES = ("thumbs_raw", "pairwise_raw", "dead_letters_raw")
_CONTENT_NEUTRAL_CHANGES = ("tables_compacted", "compacted", "flushed")


def save_report(target, report: dict) -> str:
    """Store ``report`` (setting its ``report_id`` and ``report_sha256``) in one transaction; return the id.

    The id is ``qr-<UTC time>-<8 hex>``: sortable by time, unique, short enough to cite.
    """
    created = datetime.fromisoformat(report["created_at"])
    report["report_id"] = f"qr-{created:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    report["report_sha256"] = hashlib.sha256(json.dumps(report, sort_keys=True).encode()).hexdigest()
    row = [report["report_id"], created, report["window"]["since"], report["window"]["until"], report["snapshot"],
           report["gate"]["passed"], json.dumps(report, sort_keys=True)]
    sql = 'INSERT INTO quality_reports (report_id, created_at, since, "until", snapshot, passed, report) VALUES (?, ?, ?, ?, ?, ?, ?)'
    try:
        if _is_store(target):
            target.transact(lambda con: con.execute(sql, row), what="save quality report")
        else:
            target.execute(sql, row)
    except duckdb.Error as exc:
        raise PrefstreamError(f"cannot store the quality report: {str(exc).splitlines()[0]} (audit the store itself, or audit with save=False / --no-store)") from None
    return report["report_id"]


def _is_store(source) -> bool:
    from prefstream.store import Store

    return isinstance(source, Store)


@contextmanager
def _reading(source):
    if _is_store(source):
        con = source.read()
        try:
            yield con
        finally:
            con.close()
    else:
        yield source


def latest_report(source) -> dict | None:
    """The most recently stored report, or None when there is none."""
    with _reading(source) as con:
        rows = con.execute("SELECT report FROM quality_reports ORDER BY created_at DESC, report_id DESC LIMIT 1").fetchall()
    return json.loads(rows[0][0]) if rows else None


def load_report(source, report_id: str) -> dict:
    """The stored report ``report_id``; a one-line error when there is no such report."""
    with _reading(source) as con:
        rows = con.execute("SELECT report FROM quality_reports WHERE report_id = ?", [report_id]).fetchall()
    if not rows:
        raise PrefstreamError(f"no quality report {report_id!r}; run `prefstream audit` or list ids with `prefstream query \"SELECT report_id FROM quality_reports\"`")
    return json.loads(rows[0][0])


def reusable_report(source, *, since=None, until=None, snapshot: int | None = None, settings=None) -> dict | None:
    """The newest stored report that stands for an audit of [since, until) as of ``snapshot``
    (default: the current one) with ``settings`` (a :class:`Settings`, default the defaults):
    the same window and settings, made at snapshot M <= snapshot, and no snapshot in
    (M, snapshot] changed the feedback tables. None when there is none.
    """
    from prefstream.quality.settings import Settings
    from prefstream.store import snapshot_of

    wanted = (settings or Settings()).as_dict()
    since, until = parse_time(since, "since"), parse_time(until, "until")
    with _reading(source) as con:
        target = snapshot if snapshot is not None else snapshot_of(con)
        candidates = con.execute(
            """SELECT snapshot, report FROM quality_reports
               WHERE snapshot <= ? AND since IS NOT DISTINCT FROM ? AND "until" IS NOT DISTINCT FROM ?
               ORDER BY snapshot DESC, created_at DESC""",
            [target, since, until],
        ).fetchall()
        if not candidates:
            return None
        changed = _feedback_changes(con, candidates[-1][0], target)
    for made_at, body in candidates:
        report = json.loads(body)
        if report.get("settings") != wanted:
            continue
        if any(made_at < s <= target for s in changed):
            return None  # newer candidates come first: older ones are stale too
        return report
    return None


def _feedback_changes(con: duckdb.DuckDBPyConnection, after: int, upto: int) -> list[int]:
    """Snapshots in (after, upto] that changed a feedback table (conservatively: any change
    naming one, or any change of a kind not known to leave content alone)."""
    database = con.execute("SELECT current_database()").fetchall()[0][0]
    ids = {str(r[0]) for r in con.execute(
        f"SELECT table_id FROM ducklake_table_info('{database}') WHERE table_name IN {FEEDBACK_TABLES}"
    ).fetchall()}
    names = set(FEEDBACK_TABLES) | {f"main.{t}" for t in FEEDBACK_TABLES}
    out = []
    for snapshot, changes in con.execute(
        f"SELECT snapshot_id, changes FROM ducklake_snapshots('{database}') WHERE snapshot_id > ? AND snapshot_id <= ?", [after, upto]
    ).fetchall():
        for key, values in (changes or {}).items():
            if any(word in key for word in _CONTENT_NEUTRAL_CHANGES):
                continue
            if any(str(v) in ids or str(v) in names for v in values or []):
                out.append(snapshot)
                break
    return out
