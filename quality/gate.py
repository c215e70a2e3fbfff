"""The gate: may an export of a given kind proceed? Each check declares the data it reads.

``dpo``, ``ipo``, ``simpo`` and ``orpo`` exports read pairwise judgements, ``kto`` reads
thumbs (and pairwise ones with ``include_pairwise``); every export also reads the store's
health (expectations, dead letters). A check on data an export does not read never
refuses it: thumbs skewed toward "up" do not stop a DPO export, pairwise position bias
does not stop a KTO one. ``all`` (what ``prefstream audit`` exits on) reads everything.

A failure names its check, the figure, the threshold and the remedy (a flag or setting);
checks that could not run (no data, one annotator, not read by this kind) are listed
in ``not_checked`` with the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from prefstream.errors import PrefstreamError
from prefstream.quality.settings import Settings

PAIRWISE_EXPORTS = ("dpo", "ipo", "simpo", "orpo")
EXPORT_KINDS = (*PAIRWISE_EXPORTS, "kto", "all")
KINDS = ("thumbs", "pairwise")

# check -> (the data it reads: a feedback kind, "each" kind in scope, or "store"; the remedy)
CHECKS = {
    "no_data": ("each", "widen --since/--until, or land feedback of this kind"),
    "low_alpha": ("each", "export with --min-agreement to keep items whose annotators agree, prefer IPO, or lower [quality.gate] min_alpha"),
    "flagged_annotators": ("each", "export with --weighting reliability, or leave the flagged annotators out; [quality.gate] max_flagged_share"),
    "length_skew": ("pairwise", "export with --balance-length (or --force); [quality.gate] min_longer_share / max_longer_share"),
    "length_taste": ("pairwise", "export with --balance-length so length carries no signal; [quality.gate] max_length_coef"),
    "position_bias": ("pairwise", "leave out position-biased annotators, randomise the order shown; [quality.gate] max_position_bias"),
    "label_imbalance": ("thumbs", "set the KTO weights in bias.label_imbalance.kto_weights; beyond the ratio collect the rare label; [quality.gate] max_label_ratio"),
    "contradictions": ("each", "fix the producer sending opposite labels at the same instant; [quality.gate] max_contradiction_share"),
    "drift": ("each", "narrow --since/--until to a stable period; [quality.gate] drift_margin"),
    "expectations": ("store", "fix the rows named in the report's expectations (the store's health, read by every export)"),
    "dead_letters": ("store", "inspect dead_letters (prefstream query \"SELECT reason, count(*) FROM dead_letters GROUP BY 1\"); [quality.gate] max_dead_letter_share"),
}


@dataclass
class Failure:
    check: str
    data: str  # thumbs, pairwise or store
    figure: float | int | None
    threshold: float | int | str | None
    message: str
    remedy: str

    def line(self) -> str:
        return f"{self.check}: {self.message} -- remedy: {self.remedy}"


@dataclass
class GateResult:
    export_kind: str
    passed: bool = True
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    not_checked: list[dict] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One line per failure, with its remedy: what the CLI prints."""
        return [f.line() for f in self.failures]

    def as_dict(self) -> dict:
        return asdict(self)


def gate_for(report: dict, export_kind: str, *, include_pairwise: bool = False, balance_length: bool = False, settings: Settings | None = None) -> GateResult:
    """The verdict of ``report`` for an export of ``export_kind`` (dpo, ipo, simpo, orpo, kto or all).

    ``settings`` (default: the report's own) give the thresholds and ``fail_on``; a flagged
    check outside ``fail_on`` becomes a note.
    """
    if export_kind not in EXPORT_KINDS:
        raise PrefstreamError(f"no gate for export kind {export_kind!r}; choose from {', '.join(EXPORT_KINDS)}")
    g = (settings or Settings.from_config(report.get("settings"))).gate
    scope = ("pairwise",) if export_kind in PAIRWISE_EXPORTS else ("thumbs", "pairwise") if export_kind == "all" or include_pairwise else ("thumbs",)
    result = GateResult(export_kind)
    flagged: list[Failure] = []

    def fail(check: str, data: str, figure, threshold, message: str) -> None:
        flagged.append(Failure(check, data, figure, threshold, message, CHECKS[check][1]))

    def skip(check: str, reason: str) -> None:
        result.not_checked.append({"check": check, "reason": reason})

    for check, (data, _) in CHECKS.items():
        if data in KINDS and data not in scope:
            skip(check, f"reads {data} feedback; a {export_kind} export does not" + (" (pass include_pairwise / --include-pairwise)" if data == "pairwise" else ""))
    counts = report["counts"]
    present = [k for k in scope if counts[k]["annotations"]]
    if not present:
        fail("no_data", "/".join(scope), 0, None, f"no {' or '.join(scope)} feedback in the audited window: nothing to train on")
    for kind in scope:
        if not counts[kind]["annotations"]:
            skip(f"{kind} checks", f"no {kind} feedback in the audited window")
    for kind in present:
        _kind_checks(report, kind, g, fail, skip)
    if "pairwise" in present:
        _pairwise_checks(report, g, balance_length, fail, skip, result.notes)
    if "thumbs" in present:
        _thumbs_checks(report, g, export_kind, fail, result.notes)
    _store_checks(report, g, fail, skip)
    for failure in flagged:
        if failure.check in g.fail_on:
            result.failures.append(failure)
        else:
            result.notes.append(f"{failure.check} flagged, not gating (not in [quality.gate] fail_on): {failure.message}")
    result.passed = not result.failures
    return result


def _kind_checks(report: dict, kind: str, g, fail, skip) -> None:
    agreement = report["agreement"][kind]
    if agreement["alpha"] is None:
        skip(f"low_alpha ({kind})", "; ".join(agreement["reasons"][:2]) or "alpha is undefined")
    elif agreement["alpha"] < g.min_alpha:
        fail("low_alpha", kind, agreement["alpha"], g.min_alpha, f"{kind} agreement: Krippendorff's alpha {agreement['alpha']:.2f} < min_alpha {g.min_alpha}")
    flagged = report["flagged_annotators"]["by_kind"][kind]
    if flagged["share"] is not None and flagged["share"] > g.max_flagged_share:
        names = ", ".join(flagged["annotators"][:5]) + (" ..." if flagged["count"] > 5 else "")
        fail("flagged_annotators", kind, flagged["share"], g.max_flagged_share,
             f"{flagged['share']:.0%} of {kind} labels come from {flagged['count']} low_agreement/adversarial annotator(s) ({names}) > {g.max_flagged_share:.0%}")
    contradictions = report["bias"]["contradictions"]
    share = contradictions["share_by_kind"][kind]
    if share is not None and share > g.max_contradiction_share:
        fail("contradictions", kind, share, g.max_contradiction_share,
             f"{contradictions[kind]} {kind} (annotator, item, ts) groups carry different labels ({share:.1%} > {g.max_contradiction_share:.1%})")
    for reason in report["bias"]["drift"]["reasons_by_kind"][kind]:
        fail("drift", kind, None, g.drift_margin, f"drift: {reason}")


def _pairwise_checks(report: dict, g, balance_length: bool, fail, skip, notes: list[str]) -> None:
    bias = report["bias"]
    skew = bias["length_skew"]
    if skew.get("longer_won_share") is None:
        skip("length_skew", skew.get("reason", "not computed"))
    elif skew["flagged"]:
        low, high = skew["longer_won_ci"]
        message = (f"the longer response won {skew['longer_won_share']:.1%} of {skew['n_unequal']:,} decided pairs (95% CI {low:.1%}-{high:.1%}), "
                   f"outside {g.min_longer_share:.0%}-{g.max_longer_share:.0%}: DPO would learn length")
        if balance_length:
            notes.append(f"length_skew: {message}; --balance-length removes it")
        else:
            fail("length_skew", "pairwise", skew["longer_won_share"], f"{g.min_longer_share}-{g.max_longer_share}", message)
    taste = bias["length_taste"]
    if taste.get("coef") is None:
        skip("length_taste", taste.get("reason", "not computed"))
    elif taste["flagged"]:
        message = f"annotators prefer length beyond what quality explains: coefficient {taste['coef']:.2f} (|max| {g.max_length_coef}, p={taste['p_value']:.1g})"
        if balance_length:
            notes.append(f"length_taste: {message}; --balance-length leaves length no signal to teach")
        else:
            fail("length_taste", "pairwise", taste["coef"], g.max_length_coef, message)
    position = bias["position_bias"]
    if position.get("first_shown_rate") is None:
        skip("position_bias", position.get("reason", "not computed"))
    elif position["flagged"]:
        fail("position_bias", "pairwise", position["first_shown_rate"], g.max_position_bias,
             f"the first-shown response won {position['first_shown_rate']:.1%} of {position['n']:,} decided pairs (max |rate - 50%| {g.max_position_bias:.0%})")


def _thumbs_checks(report: dict, g, export_kind: str, fail, notes: list[str]) -> None:
    imbalance = report["bias"]["label_imbalance"]
    if imbalance["flagged"]:
        what = f"up:down {imbalance['ratio']:.1f}:1" if imbalance.get("ratio") else imbalance.get("reason", "")
        fail("label_imbalance", "thumbs", imbalance.get("ratio"), g.max_label_ratio, f"label imbalance {what} beyond {g.max_label_ratio:g}:1 either way: the rare label is too thin for KTO weights to fix")
    elif imbalance.get("ratio") and not 0.75 <= imbalance["ratio"] <= 4 / 3:
        w = imbalance["kto_weights"]
        notes.append(
            f"label_imbalance: up:down {imbalance['ratio']:.2f}:1, corrected by the KTO weights: desirable_weight "
            f"{w['desirable_weight'][0]:.3g}-{w['desirable_weight'][1]:.3g} or undesirable_weight {w['undesirable_weight'][0]:.3g}-{w['undesirable_weight'][1]:.3g}"
        )


def _store_checks(report: dict, g, fail, skip) -> None:
    expectations = report["expectations"]
    if not expectations.get("evaluated"):
        skip("expectations", "; ".join(f"{t}: {why}" for t, why in expectations.get("skipped", {}).items()) or "not run")
    elif expectations.get("failed"):
        names = ", ".join(expectations["failed_names"][:5])
        fail("expectations", "store", expectations["failed"], 0, f"{expectations['failed']} of {expectations['evaluated']} expectations failed ({names})")
    health = report["store_health"]
    share = health["dead_letter_share"]
    if share is None:
        skip("dead_letters", "the store has received no messages")
    elif share > g.max_dead_letter_share:
        fail("dead_letters", "store", share, g.max_dead_letter_share,
             f"{health['dead_letters']:,} of {health['messages']:,} messages were dead-lettered ({share:.1%} > {g.max_dead_letter_share:.0%})")
