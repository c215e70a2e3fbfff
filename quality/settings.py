"""Audit settings: the ``[quality]`` table of the config file, with defaults.

\b
    [quality]
    bootstrap = 200              # bootstrap resamples for agreement confidence intervals
    seed = 0
    [quality.gate]
    min_alpha = 0.4              # ... see the field comments below for every key

A key that is not listed here, or a value of the wrong type or range, is a one-line error
naming the key (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime

from prefstream.errors import PrefstreamError
from prefstream.times import parse_time

GATE_CHECKS = (
    "no_data", "low_alpha", "flagged_annotators", "length_skew", "length_taste", "position_bias",
    "label_imbalance", "contradictions", "expectations", "dead_letters", "drift",
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
    min_longer_share: float = 0.4  # length_skew: the longer response's win share, judged on its 95% CI,
    max_longer_share: float = 0.6  # ... must not lie wholly outside [min_longer_share, max_longer_share]
    max_length_coef: float = 0.5  # length_taste: length coefficient beyond consensus (0.5: one SD longer moves 50% to ~59%)
    max_label_ratio: float = 10.0  # up:down beyond this either way refuses KTO; below it the KTO weights correct it (a note)
    drift_margin: float = 0.15  # a day's / model's rate this far from overall: drift
    max_contradiction_share: float = 0.01  # contradicting label groups per current annotation
    max_dead_letter_share: float = 0.05  # dead letters among all messages the store received
    fail_on: tuple[str, ...] = DEFAULT_FAIL_ON


@dataclass(frozen=True)
class Settings:
    bootstrap: int = 200
    seed: int = 0
    report_annotators: int = 100  # annotators reported in full by volume (flagged ones always are); the rest as a summary
    earliest_ts: str = "2000-01-01T00:00:00Z"  # feedback stamped before this is implausible: counted, shown, left out
    max_future_hours: float = 24.0  # ... and so is feedback stamped this long after the store received it
    gate: Gate = field(default_factory=Gate)

    @classmethod
    def from_config(cls, config: dict | None) -> "Settings":
        """Settings from the ``[quality]`` table (None or {} gives the defaults)."""
        config = dict(config or {})
        gate = config.pop("gate", {})
        if not isinstance(gate, dict):
            raise PrefstreamError("config key [quality.gate] must be a table, e.g. [quality.gate] min_alpha = 0.4")
        top = _typed(cls, config, "quality", skip={"gate"})
        gate_values = _typed(Gate, gate, "quality.gate")
        if "fail_on" in gate_values:
            unknown = set(gate_values["fail_on"]) - set(GATE_CHECKS)
            if unknown:
                raise PrefstreamError(f"[quality.gate] fail_on: unknown check {sorted(unknown)}; choose from {', '.join(GATE_CHECKS)}")
            gate_values["fail_on"] = tuple(gate_values["fail_on"])
        settings = cls(**top, gate=Gate(**gate_values))
        settings.check()
        return settings

    def check(self) -> None:
        """Values in range, each error naming its key."""
        g = self.gate
        if not 0 <= g.min_longer_share <= g.max_longer_share <= 1:
            raise PrefstreamError(f"[quality.gate] min_longer_share {g.min_longer_share} / max_longer_share {g.max_longer_share}: need 0 <= min <= max <= 1")
        if g.max_label_ratio < 1:
            raise PrefstreamError(f"[quality.gate] max_label_ratio = {g.max_label_ratio}: a ratio either way, at least 1")
        for key in ("max_flagged_share", "significance", "max_position_bias", "max_contradiction_share", "max_dead_letter_share"):
            if not 0 <= getattr(g, key) <= 1:
                raise PrefstreamError(f"[quality.gate] {key} = {getattr(g, key)}: a share, between 0 and 1")
        if self.bootstrap < 0 or self.report_annotators < 0 or self.max_future_hours < 0 or g.min_count < 1:
            raise PrefstreamError("[quality] bootstrap, report_annotators, max_future_hours must be >= 0 and [quality.gate] min_count >= 1")
        self.earliest()

    def earliest(self) -> datetime:
        try:
            return parse_time(self.earliest_ts)
        except PrefstreamError:
            raise PrefstreamError(f"[quality] earliest_ts = {self.earliest_ts!r} is not an RFC 3339 timestamp (e.g. 2000-01-01T00:00:00Z)") from None

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
        elif isinstance(default, str):
            ok = isinstance(value, str)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise PrefstreamError(f"[{name}] {key} = {value!r} has the wrong type; expected {type(default).__name__}")
        values[key] = value
    return values
