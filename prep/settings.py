"""What an export contains (:class:`ExportSettings`, hashed) and where / how it is written (:class:`Output`).

Everything in ``ExportSettings`` decides the rows, so it is part of the content hash; nothing
in ``Output`` is (the same rows written as parquet or to another folder hash the same).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from prefstream.errors import PrefstreamError
from prefstream.times import parse_time

KINDS = ("dpo", "ipo", "kto")
FORMATS = ("hf", "parquet", "jsonl")


@dataclass(frozen=True)
class ExportSettings:
    """Everything that decides an export's rows (all of it goes into the content hash).

    ``min_agreement`` drops items whose winning share of the annotators is below it; ``ties``
    (KTO) drops items whose up and down votes balance, or keeps them as one desirable and one
    undesirable row at half weight. ``include_pairwise`` (KTO) adds each decided pair as a
    desirable and an undesirable row; ``include_thumbs`` (DPO / IPO) adds pairs made of an
    up-rated and a down-rated response to the same prompt, at most ``max_pairs_per_prompt``
    per prompt. ``balance_length`` (DPO / IPO) drops pairs until the longer response wins in
    half of the pairs of unequal length.
    """

    kind: Literal["dpo", "ipo", "kto"]
    eval_fraction: float = 0.1
    seed: int = 0
    since: datetime | None = None
    until: datetime | None = None
    min_agreement: float = 0.0
    weighting: Literal["majority", "reliability"] = "majority"
    ties: Literal["drop", "keep"] = "drop"
    include_pairwise: bool = False
    include_thumbs: bool = False
    max_pairs_per_prompt: int = 4
    balance_length: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PrefstreamError(f"unknown export kind {self.kind!r}; choose from {', '.join(KINDS)}")
        object.__setattr__(self, "since", parse_time(self.since, "since"))
        object.__setattr__(self, "until", parse_time(self.until, "until"))
        if self.since and self.until and self.since >= self.until:
            raise PrefstreamError(f"--since {self.since.isoformat()} is not before --until {self.until.isoformat()}")
        if not 0 < self.eval_fraction < 1:
            raise PrefstreamError(f"--eval-fraction must be between 0 and 1 (both excluded), got {self.eval_fraction}")
        if not 0 <= self.min_agreement <= 1:
            raise PrefstreamError(f"--min-agreement must be between 0 and 1, got {self.min_agreement}")
        if self.weighting not in ("majority", "reliability"):
            raise PrefstreamError(f"--weighting must be majority or reliability, got {self.weighting!r}")
        if self.ties not in ("drop", "keep"):
            raise PrefstreamError(f"--ties must be drop or keep, got {self.ties!r}")
        if self.max_pairs_per_prompt < 1:
            raise PrefstreamError(f"--max-pairs-per-prompt must be at least 1, got {self.max_pairs_per_prompt}")
        # A flag that does nothing for this kind is a mistake worth saying, not ignoring.
        misplaced = {
            "dpo": [("--include-pairwise", self.include_pairwise), ("--ties keep", self.ties == "keep")],
            "kto": [("--include-thumbs", self.include_thumbs), ("--balance-length", self.balance_length)],
        }[self.family]
        for flag, given in misplaced:
            if given:
                raise PrefstreamError(f"{flag} does not apply to {self.kind} exports")

    @property
    def family(self) -> str:
        """``kto`` (unpaired rows) or ``dpo`` (pairs; IPO uses the same rows)."""
        return "kto" if self.kind == "kto" else "dpo"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able settings, times as RFC 3339 (what the content hash covers)."""
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Output:
    """Where and how to write, and how to treat the quality gate (none of it is hashed).

    ``report_id`` cites a stored report (refused when stale: another window, different gate
    settings, or feedback landed after it); ``reuse_report`` takes the latest stored report
    when it is fresh and audits again otherwise. ``skip_gate`` exists for benchmarks and
    library callers that gate elsewhere; the CLI never sets it, and the manifest says so.
    ``memory_limit`` bounds DuckDB's memory while aggregating and writing (DuckDB spills to
    a temporary folder beside the database beyond it), so peak memory does not grow with the
    number of events. It is a setting of the whole DuckDB instance: the CLI sets it on its own
    connection; library callers opt in (the previous limit is restored, as DuckDB rounds it).
    """

    out: Path
    fmt: Literal["hf", "parquet", "jsonl"] = "hf"
    overwrite: bool = False
    force: bool = False
    force_reason: str | None = None
    report_id: str | None = None
    reuse_report: bool = False
    skip_gate: bool = False
    quality_config: dict = field(default_factory=dict)
    memory_limit: str | None = None  # e.g. "512MB": DuckDB's memory during prep (the CLI's default); None leaves it

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.fmt not in FORMATS:
            raise PrefstreamError(f"--format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.force_reason and not self.force:
            raise PrefstreamError("--force-reason needs --force")
        if self.report_id and self.reuse_report:
            raise PrefstreamError("give --report-id or --reuse-report, not both")
