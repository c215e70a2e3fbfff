"""Annotator agreement, annotator reliability, bias, expectation suites, report and gate.

\b
    from prefstream.quality import audit, latest_report
    report = audit(con, since="2026-11-01T00:00:00Z")   # stored in quality_reports
    report["gate"]       # {"passed": bool, "failures": [...]}
    report["annotators"] # [{"annotator_id", "reliability", "flags", ...}, ...]

The agreement statistics work on any long-format polars frame (item_id, annotator_id, label).
"""

from prefstream.quality.agreement import (
    AgreementWarning,
    bootstrap_ci,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
)
from prefstream.quality.report import audit, build_report
from prefstream.quality.reports import latest_report, load_report
from prefstream.quality.settings import Settings

__all__ = [
    "AgreementWarning",
    "Settings",
    "audit",
    "bootstrap_ci",
    "build_report",
    "cohen_kappa",
    "fleiss_kappa",
    "krippendorff_alpha",
    "latest_report",
    "load_report",
]
