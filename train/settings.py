"""Every knob of a training run, in one frozen dataclass (stored in checkpoints and run.json)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prefstream.errors import PrefstreamError

Kind = Literal["dpo", "ipo", "kto", "simpo", "orpo"]


@dataclass(frozen=True)
class TrainSettings:
    """Settings of one run (any objective). Defaults follow TRL's where TRL has one."""

    kind: Kind
    data: str  # export directory (prefstream export dpo|ipo|kto)
    model: str  # local transformers causal-LM directory; also the frozen reference
    out: str  # run directory
    beta: float = 0.1  # IPO: tau; SimPO: TRL CPO's beta; ORPO: TRL's lambda
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
    simpo_gamma: float = 0.5  # SimPO's target reward margin (TRL's default)
    eval_generations: int = 8  # test prompts generated greedily for the length signal
    max_new_tokens: int = 48
    eval_max_rows: int = 2000  # test rows scored at each evaluation (and by the reference)
    device: Literal["cpu", "cuda"] | None = None  # None = cuda when available
    dtype: Literal["bf16", "fp32"] | None = None  # weights; None = bf16 on CUDA, fp32 on CPU
    gradient_checkpointing: bool = False
    fsdp: bool = False  # shard with FSDP2 under torchrun (DDP otherwise)
    lora_r: int = 0  # 0 = full fine-tune
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] | None = None  # None = the attention and MLP projections present
    merge: bool = False  # LoRA: also write merged weights to final/merged
    early_stop: str | None = None  # eval metric to stop on (higher is better unless it names a loss)
    patience: int = 3  # evaluations without improvement before stopping
    displacement_nats: float = 5.0  # health: chosen and rejected log-probs both fell by more
    inflation_pct: float = 50.0  # health: generations this much longer than the reference's
    cache_dir: str | None = None  # reference log-probs; None = $PREFSTREAM_CACHE or ~/.cache

    def __post_init__(self) -> None:
        positive = (
            "batch_size", "grad_accum", "epochs", "max_length", "eval_every", "log_every", "max_new_tokens",
            "eval_max_rows", "patience",
        )  # fmt: skip
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
        if self.lora_r < 0 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise PrefstreamError("need --lora-r >= 0 (0 = full fine-tune), --lora-alpha > 0, --lora-dropout in [0, 1)")
        if self.merge and not self.lora_r:
            raise PrefstreamError("--merge merges LoRA adapters; add --lora-r R or drop --merge")
        if self.displacement_nats <= 0 or self.inflation_pct <= 0:
            raise PrefstreamError("[train.health] thresholds must be positive")
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
