"""Every knob of a training run, in one frozen dataclass (stored in checkpoints and run.json)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prefstream.errors import PrefstreamError

Kind = Literal["dpo", "ipo", "kto"]


@dataclass(frozen=True)
class TrainSettings:
    """Settings of one DPO / IPO / KTO run. Defaults follow TRL's where TRL has one."""

    kind: Kind
    data: str  # export directory (prefstream export dpo|ipo|kto)
    model: str  # local transformers causal-LM directory; also the frozen reference
    out: str  # run directory
    beta: float = 0.1
    lr: float = 1e-6
    batch_size: int = 8  # per process; chosen and rejected both count once per pair
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    max_length: int = 1024  # prompt + completion tokens; longer sequences keep their start
    seed: int = 42
    shuffle: bool = True
    eval_every: int = 100  # optimizer steps between evaluation + checkpoint
    log_every: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    label_smoothing: float = 0.0  # DPO only (conservative DPO)
    ipo_form: Literal["normalised", "paper"] = "normalised"
    desirable_weight: float | None = None  # KTO; None = the export's recommendation
    undesirable_weight: float | None = None
    eval_generations: int = 8  # test prompts generated greedily for the length signal
    max_new_tokens: int = 48
    device: Literal["cpu", "cuda"] | None = None  # None = cuda when available
    cache_dir: str | None = None  # reference log-probs; None = $PREFSTREAM_CACHE or ~/.cache

    def __post_init__(self) -> None:
        positive = ("batch_size", "grad_accum", "epochs", "max_length", "eval_every", "log_every", "max_new_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise PrefstreamError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise PrefstreamError("--max-steps must be at least 1 (or leave it out to use --epochs)")
        if self.eval_generations < 0:
            raise PrefstreamError("--eval-generations must not be negative (0 turns generation off)")
        if self.beta <= 0:
            raise PrefstreamError("--beta must be positive")
        if self.lr < 0:
            raise PrefstreamError("--lr must not be negative")
        if self.max_grad_norm <= 0 or self.weight_decay < 0 or not 0 <= self.warmup_ratio <= 1:
            raise PrefstreamError("need --max-grad-norm > 0, --weight-decay >= 0 and --warmup-ratio in [0, 1]")
        if not 0 <= self.label_smoothing < 0.5:
            raise PrefstreamError("--label-smoothing must be in [0, 0.5)")
        if self.kind == "kto" and self.batch_size < 2:
            raise PrefstreamError(
                "KTO needs --batch-size 2 or more: its KL estimate pairs each prompt with another row's completion"
            )
        for name in ("desirable_weight", "undesirable_weight"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise PrefstreamError(f"--{name.replace('_', '-')} must be positive")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def reference_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        root = os.environ.get("PREFSTREAM_CACHE")
        base = Path(root) if root else Path.home() / ".cache" / "prefstream"
        return base / "ref-logps"
