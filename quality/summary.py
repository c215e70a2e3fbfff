"""The short human summary ``prefstream audit`` prints: one line per finding, verdict last."""

from __future__ import annotations


def summary_text(report: dict) -> str:
    lines = [f"quality report {report.get('report_id') or '(not stored)'}  window {_window(report['window'])}"]
    for kind, a in report["agreement"].items():
        if a["n"] == 0:
            lines.append(f"  {kind:<9}no labels")
            continue
        alpha = "n/a" if a["alpha"] is None else f"{a['alpha']:.2f}"
        ci = f" [{a['alpha_ci'][0]:.2f}, {a['alpha_ci'][1]:.2f}]" if a["alpha_ci"] else ""
        lines.append(f"  {kind:<9}{a['n']:>9,} labels {a['n_items']:>8,} items {a['n_annotators']:>4} annotators  alpha {alpha}{ci}")
    flagged = [a for a in report["annotators"] if a["flags"]]
    if flagged:
        shown = ", ".join(f"{a['annotator_id']} ({', '.join(a['flags'])})" for a in flagged[:6])
        more = f" and {len(flagged) - 6} more" if len(flagged) > 6 else ""
        lines.append(f"  annotators flagged: {shown}{more}")
    else:
        lines.append(f"  annotators flagged: none of {len(report['annotators'])}")
    b = report["bias"]
    lines.append(
        "  bias: "
        + ", ".join(
            [
                _flag("length", b["length_bias"], "coef {coef:.2f}, longer won {longer_won_share:.0%}"),
                _flag("position", b["position_bias"], "first shown won {first_shown_rate:.1%}"),
                _flag("labels", b["label_imbalance"], "up:down {ratio:.2f}:1"),
                _flag("drift", b["drift"], "{n_reasons} shift(s)", n_reasons=len(b["drift"]["reasons"])),
            ]
        )
    )
    e = report["expectations"]
    lines.append(f"  expectations: {e.get('passed', 0)}/{e.get('evaluated', 0)} passed" + (f" ({', '.join(e['failed_names'][:3])})" if e.get("failed") else ""))
    gate = report["gate"]
    lines.append("gate: PASSED" if gate["passed"] else f"gate: FAILED ({len(gate['failures'])})")
    lines += [f"  - {f}" for f in gate["failures"]]
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
