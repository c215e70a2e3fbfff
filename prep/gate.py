"""The quality gate before an export: audit now, or cite a fresh stored report; refuse unless --force.

A stored report is *fresh* for an export when it audited the same window, with the same
quality settings, and no feedback has landed since it was made. ``--report-id`` insists on
one (a stale one is an error); ``--reuse-report`` takes the latest when fresh and audits
again otherwise. The quality stage is imported here, lazily: it pulls in scipy and
great-expectations, which nothing else in an export needs.
"""

from __future__ import annotations

from datetime import datetime

from prefstream.errors import GateFailed, PrefstreamError
from prefstream.prep.settings import ExportSettings, Output
from prefstream.times import parse_time


def run_gate(con, settings: ExportSettings, output: Output, progress=lambda message: None) -> tuple[dict, dict | None]:
    """``(quality record for the manifest, the report)``; raises GateFailed when it fails without --force."""
    if output.skip_gate:
        if settings.weighting == "reliability":
            raise PrefstreamError("--weighting reliability needs a quality report; run the gate (or cite --report-id)")
        return {"checked": False, "report_id": None, "passed": None, "failures": [], "forced": False, "force_reason": None, "reused": False}, None

    from prefstream.quality import audit, latest_report, load_report

    reused = False
    if output.report_id:
        report = load_report(con, output.report_id)
        stale = stale_because(con, report, settings, output.quality_config)
        if stale:
            raise PrefstreamError(f"quality report {output.report_id} is stale: {stale}; drop --report-id to audit again")
        reused = True
    else:
        report = latest_report(con) if output.reuse_report else None
        stale = stale_because(con, report, settings, output.quality_config) if report else "there is none"
        if report and not stale:
            progress(f"reusing quality report {report['report_id']}")
            reused = True
        else:
            if output.reuse_report:
                progress(f"no fresh stored quality report ({stale}); auditing")
            else:
                progress("auditing (quality gate)")
            report = audit(con, since=settings.since, until=settings.until, config=output.quality_config, store=True)
    passed = bool(report["gate"]["passed"])
    failures = [str(f) for f in report["gate"]["failures"]]
    if not passed and not output.force:
        raise GateFailed(
            f"quality gate failed (report {report.get('report_id')}): {'; '.join(failures) or 'see the report'} "
            "-- fix the data, or pass --force (with --force-reason TEXT) to export anyway"
        )
    record = {
        "checked": True,
        "report_id": report.get("report_id"),
        "report_created_at": report.get("created_at"),
        "reused": reused,
        "passed": passed,
        "failures": failures,
        "forced": bool(output.force and not passed),
        "force_reason": (output.force_reason or "(none given)") if output.force and not passed else None,
    }
    return record, report


def stale_because(con, report: dict, settings: ExportSettings, quality_config: dict | None) -> str | None:
    """Why ``report`` cannot stand for this export's gate (None when it is fresh)."""
    window = report.get("window") or {}
    theirs = (parse_time(window.get("since"), "since"), parse_time(window.get("until"), "until"))
    if theirs != (settings.since, settings.until):
        return f"it audited [{_show(theirs[0])}, {_show(theirs[1])}), the export is [{_show(settings.since)}, {_show(settings.until)})"
    try:
        from prefstream.quality import Settings

        ours = Settings.from_config(quality_config).as_dict()
    except ImportError:  # an older quality stage without Settings: the window and data checks still apply
        ours = None
    if ours is not None and report.get("settings") is not None and report["settings"] != ours:
        return "it was made with other [quality] settings"
    created = parse_time(report.get("created_at"), "created_at")
    later = con.execute(
        """SELECT count(*) FROM (SELECT ingested_at FROM thumbs UNION ALL SELECT ingested_at FROM pairwise)
           WHERE ingested_at > ?""",
        [created],
    ).fetchall()[0][0]
    if later:
        return f"{later} events landed after it was made"
    return None


def reliabilities(report: dict | None) -> dict[str, float | None]:
    """``annotator_id -> reliability`` (None when the report has no estimate) from a quality report."""
    if report is None:
        raise PrefstreamError("--weighting reliability needs a quality report")
    return {a["annotator_id"]: a.get("reliability") for a in report.get("annotators", [])}


def _show(ts: datetime | None) -> str:
    return ts.isoformat() if ts else "unbounded"
