"""The short human summary ``prefstream audit`` prints: one line per finding, then the gate, one failure a line."""

from __future__ import annotations


def summary_text(report: dict, gate) -> str:
    """``gate``: the :class:`prefstream.quality.gate.GateResult` the command exits on."""
    lines = [f"quality report {report.get('report_id') or '(not stored)'}  snapshot {report['snapshot']}  window {_window(report['window'])}"]
    for kind, a in report["agreement"].items():
        if a["n"] == 0:
            lines.append(f"  {kind:<9}no labels")
            continue
        alpha = "n/a" if a["alpha"] is None else f"{a['alpha']:.2f}"
        ci = f" [{a['alpha_ci'][0]:.2f}, {a['alpha_ci'][1]:.2f}]" if a["alpha_ci"] else ""
        lines.append(f"  {kind:<9}{a['n']:>9,} labels {a['n_items']:>8,} items {a['n_annotators']:>6,} annotators  alpha {alpha}{ci}")
        vs = report["judges"][kind].get("human_vs_model")
        if vs and vs["agreement"] is not None:
            lines.append(f"  {'':<9}model judges agree with humans on {vs['agreement']:.0%} of {vs['shared_items']:,} shared items")
    flagged = [a for a in report["annotators"] if a["flags"]]
    total = report["annotator_summary"]["flagged"]
    if flagged:
        shown = ", ".join(f"{a['annotator_id']} ({', '.join(a['flags'])})" for a in flagged[:6])
        more = f" and {total - 6:,} more" if total > 6 else ""
        lines.append(f"  annotators flagged: {shown}{more}")
    else:
        lines.append(f"  annotators flagged: none of {report['annotator_summary']['total']:,}")
    b = report["bias"]
    lines.append(
        "  bias: "
        + ", ".join(
            [
                _flag("length_skew", b["length_skew"], "longer won {longer_won_share:.0%}"),
                _flag("length_taste", b["length_taste"], "coef {coef:.2f}"),
                _flag("position", b["position_bias"], "first shown won {first_shown_rate:.1%}"),
                _flag("labels", b["label_imbalance"], "up:down {ratio:.2f}:1"),
                _flag("drift", b["drift"], "{n_reasons} shift(s)", n_reasons=len(b["drift"]["reasons"])),
            ]
        )
    )
    t = report["timestamps"]
    if t["implausible"]:
        lines.append(f"  timestamps: {t['implausible']:,} implausible (before {t['earliest'][:10]} or > {t['max_future_hours']:g} h after receipt), left out")
    e = report["expectations"]
    lines.append(f"  expectations: {e.get('passed', 0)}/{e.get('evaluated', 0)} passed" + (f" ({', '.join(e['failed_names'][:3])})" if e.get("failed") else ""))
    for note in gate.notes:
        lines.append(f"  note: {note}")
    for item in gate.not_checked:
        if not item["reason"].startswith("reads "):
            lines.append(f"  not checked: {item['check']}: {item['reason']}")
    lines.append(f"gate ({gate.export_kind}): PASSED" if gate.passed else f"gate ({gate.export_kind}): FAILED ({len(gate.failures)})")
    lines += [f"  - {line}" for line in gate.lines()]
    return "\n".join(lines)


def _flag(name: str, section: dict, template: str, **extra) -> str:
    state = "FLAGGED" if section["flagged"] else "ok"
    try:
        detail = template.format(**section, **extra)
    except (KeyError, TypeError, ValueError):  # a figure that could not be computed is None
        detail = "n/a"
    return f"{name} {state} ({detail})"


def _window(window: dict) -> str:
    if not window["since"] and not window["until"]:
        return "all"
    return f"[{window['since'] or '-inf'}, {window['until'] or '+inf'})"
