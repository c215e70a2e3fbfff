"""Audit settings: the ``[quality]`` table of the config file, with defaults.

\b
    [quality]
    bootstrap = 200              # bootstrap resamples for agreement confidence intervals
    seed = 0
    [quality.gate]
    min_alpha = 0.4              # ... see the field comments below for every key

A key that is not listed here is an error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from prefstream.errors import PrefstreamError

GATE_CHECKS = (
    "no_data", "low_alpha", "flagged_annotators", "length_bias", "position_bias",
    "label_imbalance", "contradictions", "expectations", "drift",
)
DEFAULT_FAIL_ON = tuple(c for c in GATE_CHECKS if c != "drift")


@dataclass(frozen=True)
class Gate:
    """Thresholds: what gets flagged, and which flags fail the gate (``fail_on``)."""

    min_alpha: float = 0.4  # each kind's Krippendorff alpha (nominal) must reach this
    max_flagged_share: float = 0.25  # share of annotations by low_agreement / adversarial annotators
    min_count: int = 30  # fewest observations before anything is flagged
    significance: float = 0.001  # p-value a flag needs (Bonferroni-corrected across annotators)
    low_agreement: float = 0.2  # annotator's Dawid-Skene informedness below this: low_agreement
    adversarial: float = -0.2  # ... at or below this, and the same against the leave-one-out consensus: adversarial
    position_margin: float = 0.15  # annotator's first-shown rate this far from 0.5: position_bias
    label_skew_margin: float = 0.2  # annotator's up rate this far from everyone else's: label_skew
    max_position_bias: float = 0.05  # dataset first-shown rate this far from 0.5: position_bias
    max_length_coef: float = 0.5  # dataset length coefficient beyond this: length_bias (0.5: one SD longer moves 50% to ~59%)
    max_label_ratio: float = 2.0  # up:down or down:up beyond this: label_imbalance
    drift_margin: float = 0.15  # a day's / model's rate this far from overall: drift
    max_contradiction_share: float = 0.01  # contradicting label groups per current annotation
    fail_on: tuple[str, ...] = DEFAULT_FAIL_ON


@dataclass(frozen=True)
class Settings:
    bootstrap: int = 200
    seed: int = 0
    gate: Gate = field(default_factory=Gate)

    @classmethod
    def from_config(cls, config: dict | None) -> "Settings":
        """Settings from the ``[quality]`` table (None or {} gives the defaults)."""
        config = dict(config or {})
        gate = config.pop("gate", {})
        if not isinstance(gate, dict):
            raise PrefstreamError("config key [quality.gate] must be a table")
        top = _typed(cls, config, "quality", skip={"gate"})
        gate_values = _typed(Gate, gate, "quality.gate")
        if "fail_on" in gate_values:
            unknown = set(gate_values["fail_on"]) - set(GATE_CHECKS)
            if unknown:
                raise PrefstreamError(f"[quality.gate] fail_on: unknown check {sorted(unknown)}; choose from {', '.join(GATE_CHECKS)}")
            gate_values["fail_on"] = tuple(gate_values["fail_on"])
        return cls(**top, gate=Gate(**gate_values))

    def as_dict(self) -> dict:
        out = asdict(self)
        out["gate"]["fail_on"] = list(self.gate.fail_on)
        return out


def _typed(kind, table: dict, name: str, skip: set[str] = frozenset()) -> dict:
    known = {f.name: f for f in fields(kind) if f.name not in skip}
    unknown = set(table) - set(known)
    if unknown:
        raise PrefstreamError(f"unknown key(s) {', '.join(sorted(unknown))} in [{name}]; known: {', '.join(known)}")
    values = {}
    for key, value in table.items():
        default = getattr(kind(), key)
        if isinstance(default, tuple):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise PrefstreamError(f"[{name}] {key} = {value!r} has the wrong type; expected {type(default).__name__}")
        values[key] = value
    return values
