"""``prefstream tiny-model`` and ``prefstream train dpo|ipo|kto|simpo|orpo``: thin skins over prefstream.train.

torch and transformers are imported inside the commands, so ``prefstream --help`` stays fast.
"""

from __future__ import annotations

import click


@click.command("tiny-model")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory to write the model to.")
@click.option(
    "--family",
    type=click.Choice(["tiny", "llama3", "qwen2", "gemma2"]),
    default="tiny",
    show_default=True,
    help="Architecture, special tokens and chat template: prefstream's own, or a copy of a real instruct model's.",
)
@click.option(
    "--corpus",
    type=click.Path(dir_okay=False),
    help="Text to train the tokenizer on: JSONL feedback events or plain lines (default: built-in).",
)
@click.option("--seed", default=0, show_default=True, help="Seed for the weights and the tokenizer.")
@click.option("--vocab-size", default=1024, show_default=True, help="Upper bound on the BPE vocabulary.")
@click.option("--overwrite", is_flag=True, help="Replace a model already in --out.")
def tiny_model(out: str, family: str, corpus: str | None, seed: int, vocab_size: int, overwrite: bool) -> None:
    """Build a small random-init causal LM and a BPE tokenizer, offline.

    The directory loads with AutoModelForCausalLM / AutoTokenizer and works as --model.
    An existing model in --out is replaced only with --overwrite.

    --family llama3 / qwen2 / gemma2 copy those instruct models' architecture, special tokens
    and chat template (Gemma-2's refuses system messages; Llama-3's has no pad token).

    \b
    Example:
      prefstream tiny-model --out models/tiny
      prefstream tiny-model --out models/qwen2 --family qwen2 --corpus events.jsonl
    """
    from pathlib import Path

    from prefstream.errors import PrefstreamError
    from prefstream.train.tiny_model import build_tiny_model, corpus_lines

    _quiet_transformers()
    lines = None
    if corpus is not None:
        if not Path(corpus).is_file():
            raise PrefstreamError(f"--corpus {corpus} does not exist; pass a JSONL or text file, or leave it out")
        lines = corpus_lines(corpus)
        if not lines:
            raise PrefstreamError(f"--corpus {corpus} holds no text; pass a file with text lines or leave it out")
    path = build_tiny_model(out, lines, seed=seed, vocab_size=vocab_size, family=family, overwrite=overwrite)
    click.echo(f"wrote {path} ({family}; use it as --model)")


@click.command("train")
@click.argument("kind", type=click.Choice(["dpo", "ipo", "kto", "simpo", "orpo"]))
@click.option("--data", required=True, help="Export directory from `prefstream export` (any --format).")
@click.option(
    "--model",
    required=True,
    help="Local transformers causal-LM directory (also the reference), or a LoRA adapter directory to continue.",
)
@click.option("--out", required=True, help="Run directory: metrics.jsonl, checkpoints/, final/, run.json.")
@click.option(
    "--beta", default=0.1, show_default=True, help="Reference tie (IPO: tau; SimPO: CPO's beta; ORPO: lambda)."
)
@click.option("--lr", default=1e-6, show_default=True, help="Peak learning rate (AdamW, linear warm-up and decay).")
@click.option("--batch-size", default=8, show_default=True, help="Examples per micro-batch per process.")
@click.option("--grad-accum", default=1, show_default=True, help="Micro-batches per optimizer step.")
@click.option("--epochs", default=1, show_default=True, help="Passes over the train split.")
@click.option("--max-steps", type=int, help="Optimizer steps; overrides --epochs.")
@click.option(
    "--max-length", default=1024, show_default=True, help="Prompt + completion, in tokens; longer keep their start."
)
@click.option("--seed", default=42, show_default=True)
@click.option("--no-shuffle", is_flag=True, help="Batches in export order, fixed across epochs.")
@click.option("--eval-every", default=100, show_default=True, help="Steps between evaluation + checkpoint.")
@click.option("--eval-max-rows", default=2000, show_default=True, help="Test rows scored at each evaluation.")
@click.option("--log-every", default=1, show_default=True, help="Steps between metrics lines.")
@click.option("--warmup-ratio", default=0.1, show_default=True, help="Share of steps spent warming up.")
@click.option("--weight-decay", default=0.0, show_default=True, help="AdamW weight decay.")
@click.option("--max-grad-norm", default=1.0, show_default=True, help="Gradient clipping threshold.")
@click.option("--label-smoothing", default=0.0, show_default=True, help="DPO: assumed share of flipped labels.")
@click.option(
    "--ipo-form",
    type=click.Choice(["normalised", "paper"]),
    default="normalised",
    show_default=True,
    help="IPO: per-token log-ratios (TRL's) or the paper's summed ones.",
)
@click.option("--desirable-weight", type=float, help="KTO: weight of desirable examples (default: the export's).")
@click.option("--undesirable-weight", type=float, help="KTO: weight of undesirable examples (default: the export's).")
@click.option("--simpo-gamma", default=0.5, show_default=True, help="SimPO: target reward margin (TRL's name).")
@click.option("--lora-r", default=0, show_default=True, help="LoRA rank; 0 = full fine-tune.")
@click.option("--lora-alpha", default=16.0, show_default=True, help="LoRA scaling numerator (scale = alpha / r).")
@click.option("--lora-dropout", default=0.0, show_default=True, help="Dropout on the LoRA path.")
@click.option(
    "--lora-targets",
    help="Comma-separated module names to adapt [default: the attention and MLP projections the model has].",
)
@click.option("--merge", is_flag=True, help="LoRA: also write base + adapter merged to final/merged.")
@click.option("--gradient-checkpointing", is_flag=True, help="Recompute activations in backward: less memory.")
@click.option(
    "--dtype", type=click.Choice(["bf16", "fp32"]), help="Weights' dtype [default: bf16 on CUDA, fp32 on CPU]."
)
@click.option("--fsdp", is_flag=True, help="Shard the model with FSDP2 across torchrun processes (else DDP).")
@click.option(
    "--early-stop",
    is_flag=False,
    flag_value="accuracy_length_controlled",
    help="Stop when this eval metric stops improving; final/ keeps the best [bare flag: accuracy_length_controlled].",
)
@click.option("--patience", default=3, show_default=True, help="Evaluations without improvement before stopping.")
@click.option("--eval-generations", default=8, show_default=True, help="Test prompts generated for the length signal.")
@click.option("--max-new-tokens", default=48, show_default=True, help="Generation budget per eval prompt, in tokens.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Default: cuda when available.")
@click.option(
    "--cache-dir",
    help="Reference log-prob cache [default: $PREFSTREAM_CACHE/ref-logps or ~/.cache/prefstream/ref-logps].",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.pass_context
def train(ctx: click.Context, kind: str, resume: bool, no_shuffle: bool, lora_targets: str | None, **options) -> None:
    """Preference-tune a causal LM on an export: DPO, IPO, KTO, SimPO or ORPO.

    Writes metrics.jsonl, checkpoints/, final/ (model + tokenizer; with LoRA the adapter) and
    run.json to --out. Several processes (GPUs, or CPU with gloo) through torchrun, DDP by
    default or FSDP2 with --fsdp: `torchrun --nproc_per_node 2 -m prefstream.train dpo ...`.

    \b
    Health thresholds come from the config file:
      [train.health]
      displacement_nats = 5.0   # chosen and rejected log-probs both fell by more
      inflation_pct = 50.0      # generations this much longer than at step 0

    \b
    Example:
      prefstream tiny-model --out models/tiny
      prefstream train dpo --data exports/dpo-1 --model models/tiny --out runs/dpo-1 --lr 5e-4
      prefstream train simpo --data exports/dpo-1 --model models/tiny --out runs/simpo-1 --lora-r 8 --merge
      prefstream train dpo --data exports/dpo-1 --model models/tiny --out runs/dpo-1 --lr 5e-4 --resume
    """
    from prefstream.config import section
    from prefstream.errors import PrefstreamError
    from prefstream.train import run
    from prefstream.train.settings import TrainSettings

    _quiet_transformers()
    thresholds = section(ctx.obj or {}, "train.health")
    unknown = set(thresholds) - {"displacement_nats", "inflation_pct"}
    if unknown:
        raise PrefstreamError(
            f"[train.health] has unknown keys {sorted(unknown)}; use displacement_nats, inflation_pct"
        )
    targets = tuple(t.strip() for t in lora_targets.split(",") if t.strip()) if lora_targets else None
    settings = TrainSettings(
        kind=kind, shuffle=not no_shuffle, lora_targets=targets, **{k: float(v) for k, v in thresholds.items()},
        **options,
    )  # fmt: skip
    run(settings, resume=resume)


def _quiet_transformers() -> None:
    """Loading bars on every from_pretrained would bury the progress lines."""
    from transformers.utils import logging

    logging.disable_progress_bar()
