"""Annotator agreement, annotator reliability, bias, expectation suites, report and gate.

\b
    from prefstream.quality import audit, gate_for, reusable_report
    report = audit(store, since="2026-11-01T00:00:00Z")   # stored in quality_reports
    gate_for(report, "dpo").passed                       # the verdict for one export kind
    report["annotators"]  # flagged and top annotators in full; report["annotator_summary"] for the rest

The agreement statistics work on any long-format polars frame (item_id, annotator_id, label).
"""

from prefstream.quality.agreement import (
    AgreementWarning,
    bootstrap_ci,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
)
from prefstream.quality.gate import EXPORT_KINDS, Failure, GateResult, gate_for
from prefstream.quality.report import audit
from prefstream.quality.reports import latest_report, load_report, reusable_report
from prefstream.quality.settings import Settings
from prefstream.quality.sql import plausible_sql

__all__ = [
    "AgreementWarning",
    "EXPORT_KINDS",
    "Failure",
    "GateResult",
    "Settings",
    "audit",
    "bootstrap_ci",
    "cohen_kappa",
    "fleiss_kappa",
    "gate_for",
    "krippendorff_alpha",
    "latest_report",
    "load_report",
    "plausible_sql",
    "reusable_report",
]
