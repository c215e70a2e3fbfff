"""The gate: may an export proceed? One failure string per check that is both flagged and in ``fail_on``."""

from __future__ import annotations

from prefstream.quality.settings import Gate


def evaluate(report: dict, gate: Gate) -> dict:
    """``{"passed": bool, "failures": [...]}`` for a report (without its ``gate`` key)."""
    failures: list[tuple[str, str]] = []
    counts = report["counts"]
    if counts["thumbs"]["annotations"] + counts["pairwise"]["annotations"] == 0:
        failures.append(("no_data", "no feedback in the audited window: nothing to train on"))
    for kind, agreement in report["agreement"].items():
        alpha = agreement.get("alpha")
        if alpha is not None and alpha < gate.min_alpha:
            failures.append(("low_alpha", f"{kind} agreement: Krippendorff's alpha {alpha:.2f} < min_alpha {gate.min_alpha}"))
    flagged = report["flagged_annotators"]
    if flagged["share"] is not None and flagged["share"] > gate.max_flagged_share:
        names = ", ".join(flagged["annotators"][:5]) + (" ..." if len(flagged["annotators"]) > 5 else "")
        failures.append(("flagged_annotators", f"{flagged['share']:.0%} of annotations come from low_agreement/adversarial annotators ({names}); max_flagged_share {gate.max_flagged_share:.0%}"))
    bias = report["bias"]
    length = bias["length_bias"]
    if length["flagged"]:
        failures.append(("length_bias", f"length bias: length moves judgements beyond consensus (coefficient {length['coef']:.2f}, |max| {gate.max_length_coef}); the longer response won {length['longer_won_share']:.0%} of decided pairs"))
    position = bias["position_bias"]
    if position["flagged"]:
        failures.append(("position_bias", f"position bias: the first-shown response won {position['first_shown_rate']:.1%} of decided pairs (max |rate - 50%| {gate.max_position_bias:.0%})"))
    imbalance = bias["label_imbalance"]
    if imbalance["flagged"]:
        ratio = f"up:down {imbalance['ratio']:.2f}:1" if imbalance.get("ratio") else imbalance.get("reason", "")
        failures.append(("label_imbalance", f"label imbalance: {ratio} beyond {gate.max_label_ratio}:1 either way; see bias.label_imbalance.kto_weights"))
    contradictions = bias["contradictions"]
    if contradictions["flagged"]:
        failures.append(("contradictions", f"contradictions: {contradictions['groups']} (annotator, item, ts) groups carry opposite labels ({contradictions['share']:.1%} > {gate.max_contradiction_share:.1%})"))
    if bias["drift"]["flagged"]:
        failures.append(("drift", "drift: " + "; ".join(bias["drift"]["reasons"])))
    expectations = report["expectations"]
    if expectations.get("failed"):
        names = ", ".join(expectations["failed_names"][:5])
        failures.append(("expectations", f"expectations: {expectations['failed']} of {expectations['evaluated']} failed ({names})"))
    kept = [text for check, text in failures if check in gate.fail_on]
    return {"passed": not kept, "failures": kept}
