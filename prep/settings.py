"""What an export contains (:class:`ExportSettings`, hashed) and where / how it is written (:class:`Output`).

Everything in ``ExportSettings`` decides the rows, so it is part of the content hash; nothing
in ``Output`` is (the same rows written as parquet or to another folder hash the same).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import duckdb

from prefstream.errors import PrefstreamError
from prefstream.times import parse_time

# SimPO and ORPO train on the same pairs as DPO and IPO (TRL's CPO / ORPO trainers read these columns).
PAIR_KINDS = ("dpo", "ipo", "simpo", "orpo")
KINDS = (*PAIR_KINDS, "kto")
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

    kind: Literal["dpo", "ipo", "simpo", "orpo", "kto"]
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
        """``kto`` (unpaired rows) or ``dpo`` (pairs; IPO, SimPO and ORPO use the same rows)."""
        return "kto" if self.kind == "kto" else "dpo"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able settings, times as RFC 3339 (what the content hash covers)."""
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Output:
    """Where and how to write, and how to treat the quality gate (none of it is hashed).

    The gate reuses the newest stored report that covers the export's snapshot and window
    and audits otherwise; ``report_id`` insists on one report (refused when it does not
    cover them). ``force`` exports although the gate fails, and ``force_reason`` is recorded
    either way. ``skip_gate`` exists for benchmarks and library callers that gate elsewhere;
    the CLI never sets it, and the manifest says so. ``memory_limit`` bounds DuckDB's memory
    while aggregating and writing (beyond it DuckDB spills to a temporary folder), so peak
    memory does not grow with the number of events.
    """

    out: Path
    fmt: Literal["hf", "parquet", "jsonl"] = "hf"
    overwrite: bool = False
    force: bool = False
    force_reason: str | None = None
    report_id: str | None = None
    skip_gate: bool = False
    quality_config: dict = field(default_factory=dict)
    memory_limit: str | None = None  # e.g. "512MB": DuckDB's memory during prep (the CLI's default); None leaves DuckDB's

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.fmt not in FORMATS:
            raise PrefstreamError(f"--format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.force_reason and not self.force:
            raise PrefstreamError("--force-reason needs --force")
        if self.memory_limit is not None:
            _check_memory_limit(self.memory_limit)


def _check_memory_limit(value: str) -> None:
    # DuckDB itself is the judge of what it accepts (units, percentages): ask a throwaway instance.
    con = duckdb.connect()
    try:
        con.execute("SET memory_limit = ?", [value])
    except duckdb.Error as exc:
        raise PrefstreamError(f"--memory-limit {value!r}: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
