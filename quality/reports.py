"""Stored reports: the ``quality_reports`` table (migration m003), cited by exports through ``report_id``."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime

import duckdb

from prefstream.errors import PrefstreamError


def save_report(con: duckdb.DuckDBPyConnection, report: dict) -> str:
    """Store ``report`` (setting its ``report_id``) in one transaction; return the id.

    The id is ``qr-<UTC time>-<8 hex>``: sortable by time, unique, short enough to cite.
    """
    created = datetime.fromisoformat(report["created_at"])
    report["report_id"] = f"qr-{created:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    body = json.dumps(report, sort_keys=True)
    report["report_sha256"] = hashlib.sha256(body.encode()).hexdigest()
    try:
        con.execute(
            "INSERT INTO quality_reports (report_id, created_at, since, \"until\", passed, report) VALUES (?, ?, ?, ?, ?, ?)",
            [report["report_id"], created, report["window"]["since"], report["window"]["until"], report["gate"]["passed"], json.dumps(report, sort_keys=True)],
        ).fetchall()
    except duckdb.Error as exc:
        raise PrefstreamError(f"cannot store the quality report: {str(exc).splitlines()[0]} (open the store for writing, or audit with store=False / --no-store)") from None
    return report["report_id"]


def latest_report(con: duckdb.DuckDBPyConnection) -> dict | None:
    """The most recently stored report, or None when there is none."""
    rows = con.execute("SELECT report FROM quality_reports ORDER BY created_at DESC, report_id DESC LIMIT 1").fetchall()
    return json.loads(rows[0][0]) if rows else None


def load_report(con: duckdb.DuckDBPyConnection, report_id: str) -> dict:
    """The stored report ``report_id``; a one-line error when there is no such report."""
    rows = con.execute("SELECT report FROM quality_reports WHERE report_id = ?", [report_id]).fetchall()
    if not rows:
        raise PrefstreamError(f"no quality report {report_id!r}; run `prefstream audit` or list ids with SELECT report_id FROM quality_reports")
    return json.loads(rows[0][0])
