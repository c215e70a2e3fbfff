"""The quality gate before an export, judged for the export's kind; refuse unless --force.

The newest stored report that covers the export's snapshot and window is reused (no
re-audit); without one, the audit runs on the same snapshot and is stored. ``--report-id``
insists on one report, refused when it does not cover them. The verdict is
:func:`prefstream.quality.gate_for`: a DPO / IPO / SimPO / ORPO export is judged on pairwise
checks and the store's health only, a KTO export on thumbs checks (and pairwise ones with
``--include-pairwise``). The quality stage is imported lazily: it pulls in scipy and
great-expectations, which nothing else in an export needs.
"""

from __future__ import annotations

from prefstream.errors import GateFailed, PrefstreamError
from prefstream.prep.settings import ExportSettings, Output

UNCHECKED = {"checked": False, "report_id": None, "reused": False, "passed": None, "failures": [], "notes": [], "forced": False, "force_reason": None}


def run_gate(store, con, snapshot: int, settings: ExportSettings, output: Output, progress=lambda message: None) -> tuple[dict, dict | None]:
    """``(quality record for the manifest, the report)``; raises GateFailed when it fails without --force."""
    if output.skip_gate:
        if settings.weighting == "reliability":
            raise PrefstreamError("--weighting reliability needs a quality report; run the gate (or cite --report-id)")
        return dict(UNCHECKED), None

    from prefstream.quality import Settings, audit, gate_for, load_report, reusable_report

    quality_settings = Settings.from_config(output.quality_config)
    covering = reusable_report(con, since=settings.since, until=settings.until, snapshot=snapshot, settings=quality_settings)
    if output.report_id:
        report = load_report(con, output.report_id)
        # The cited report covers the export when it is the one reuse finds: same window and
        # settings, and no feedback landed between its snapshot and the export's.
        if covering is None or covering["snapshot"] != report["snapshot"] or report["window"] != covering["window"] or report["settings"] != covering["settings"]:
            raise PrefstreamError(
                f"quality report {output.report_id} does not cover this export (snapshot {snapshot}, "
                f"window [{_show(settings.since)}, {_show(settings.until)}), these [quality] settings); drop --report-id to audit again"
            )
        reused = True
    elif covering is not None:
        report, reused = covering, True
        progress(f"reusing quality report {report['report_id']} (it covers snapshot {snapshot} and this window)")
    else:
        progress("auditing (quality gate)")
        report = audit(store, snapshot=snapshot, since=settings.since, until=settings.until, config=output.quality_config, save=True, progress=progress)
        reused = False
    verdict = gate_for(
        report, settings.kind, include_pairwise=settings.include_pairwise, balance_length=settings.balance_length, settings=quality_settings
    )
    if not verdict.passed and not output.force:
        raise GateFailed(
            f"quality gate failed for this {settings.kind} export (report {report['report_id']}):\n  "
            + "\n  ".join(verdict.lines())
            + "\nfix the data, or pass --force --force-reason TEXT to export anyway (recorded in the manifest)"
        )
    record = {
        "checked": True,
        "report_id": report["report_id"],
        "report_created_at": report.get("created_at"),
        "reused": reused,
        "passed": verdict.passed,
        "failures": verdict.lines(),
        "notes": verdict.notes,
        "not_checked": verdict.not_checked,
        "forced": bool(output.force and not verdict.passed),
        "force_reason": output.force_reason if output.force else None,
    }
    return record, report


def reliabilities(report: dict | None) -> dict[str, float | None]:
    """``annotator_id -> reliability`` (None when the report has no estimate) from a quality report."""
    if report is None:
        raise PrefstreamError("--weighting reliability needs a quality report")
    return {a["annotator_id"]: a.get("reliability") for a in report.get("annotators", [])}


def _show(ts) -> str:
    return ts.isoformat() if ts else "unbounded"
