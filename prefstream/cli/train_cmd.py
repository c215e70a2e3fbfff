"""``prefstream tiny-model`` and ``prefstream train dpo|ipo|kto``: thin skins over prefstream.train.

torch and transformers are imported inside the commands, so ``prefstream --help`` stays fast.
"""

from __future__ import annotations

import click


@click.command("tiny-model")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory to write the model to.")
@click.option(
    "--corpus",
    type=click.Path(dir_okay=False),
    help="Text to train the tokenizer on: JSONL feedback events or plain lines (default: built-in).",
)
@click.option("--seed", default=0, show_default=True, help="Seed for the weights and the tokenizer.")
@click.option("--vocab-size", default=1024, show_default=True, help="Upper bound on the BPE vocabulary.")
def tiny_model(out: str, corpus: str | None, seed: int, vocab_size: int) -> None:
    """Build a small random-init Llama-style causal LM and a BPE tokenizer, offline.

    The directory loads with AutoModelForCausalLM / AutoTokenizer and works as --model.

    \b
    Example:
      prefstream tiny-model --out models/tiny
      prefstream tiny-model --out models/tiny --corpus events.jsonl
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
    path = build_tiny_model(out, lines, seed=seed, vocab_size=vocab_size)
    click.echo(f"wrote {path} (use it as --model)")


@click.command("train")
@click.argument("kind", type=click.Choice(["dpo", "ipo", "kto"]))
@click.option("--data", required=True, help="Export directory from `prefstream export`.")
@click.option("--model", required=True, help="Local transformers causal-LM directory (also the reference).")
@click.option("--out", required=True, help="Run directory: metrics.jsonl, checkpoints/, final/, run.json.")
@click.option("--beta", default=0.1, show_default=True, help="Strength of the tie to the reference (IPO: tau).")
@click.option("--lr", default=1e-6, show_default=True, help="Peak learning rate (AdamW, linear warm-up and decay).")
@click.option("--batch-size", default=8, show_default=True, help="Examples per micro-batch per process.")
@click.option("--grad-accum", default=1, show_default=True, help="Micro-batches per optimizer step.")
@click.option("--epochs", default=1, show_default=True, help="Passes over the train split.")
@click.option("--max-steps", type=int, help="Optimizer steps; overrides --epochs.")
@click.option(
    "--max-length", default=1024, show_default=True, help="Prompt + completion tokens; longer keep their start."
)
@click.option("--seed", default=42, show_default=True)
@click.option("--no-shuffle", is_flag=True, help="Batches in export order, fixed across epochs.")
@click.option("--eval-every", default=100, show_default=True, help="Steps between evaluation + checkpoint.")
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
@click.option("--eval-generations", default=8, show_default=True, help="Test prompts generated for the length signal.")
@click.option("--max-new-tokens", default=48, show_default=True, help="Generation budget per eval prompt.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Default: cuda when available.")
@click.option(
    "--cache-dir",
    help="Reference log-prob cache [default: $PREFSTREAM_CACHE/ref-logps or ~/.cache/prefstream/ref-logps].",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
def train(kind: str, resume: bool, no_shuffle: bool, **options) -> None:
    """Preference-tune a causal LM on an export: DPO, IPO or KTO.

    Writes metrics.jsonl, checkpoints/, final/ (model + tokenizer) and run.json to --out.
    Several processes (GPUs, or CPU with gloo) through torchrun:
    `torchrun --nproc_per_node 2 -m prefstream.train dpo ...`.

    \b
    Example:
      prefstream tiny-model --out models/tiny
      prefstream train dpo --data exports/dpo-1 --model models/tiny --out runs/dpo-1 --lr 5e-4
      prefstream train dpo --data exports/dpo-1 --model models/tiny --out runs/dpo-1 --lr 5e-4 --resume
    """
    from prefstream.train import run
    from prefstream.train.settings import TrainSettings

    _quiet_transformers()
    settings = TrainSettings(kind=kind, shuffle=not no_shuffle, **options)
    run(settings, resume=resume)


def _quiet_transformers() -> None:
    """Loading bars on every from_pretrained would bury the progress lines."""
    from transformers.utils import logging

    logging.disable_progress_bar()
