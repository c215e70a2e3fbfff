"""prefstream's DPO / KTO trainers against TRL's DPOTrainer / KTOTrainer on CPU (fp32).

Same tiny model, same export, batch size, max length and number of optimizer steps; each
trainer runs in its own subprocess so peak RSS is its own. Reported per trainer: optimizer
steps per second and non-padding tokens per second over the training steps (set-up, the
reference pre-computation and evaluation excluded on both sides), and peak RSS; then the
ratios prefstream / TRL. Each trainer runs ``--repeats`` times, interleaved, and the fastest
run counts (the usual defence against other load on the machine; RSS is the largest seen).
TRL runs twice: as configured by default (reference model kept in memory, one reference
forward per step) and with ``precompute_ref_log_probs=True``.

    .venv/bin/python bench/train.py              # defaults: 60 steps, batch 8, best of 2
    .venv/bin/python bench/train.py --steps 100 --hidden-size 256 --layers 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
LR = 1e-5


def prefstream_worker(kind: str, work: Path, steps: int, batch_size: int, max_length: int) -> dict:
    from prefstream.train import TrainSettings, run

    out = Path(tempfile.mkdtemp(dir=work, prefix=f"run-prefstream-{kind}-"))
    settings = TrainSettings(
        kind=kind, data=str(work / kind), model=str(work / "model"), out=str(out), lr=LR, batch_size=batch_size,
        max_steps=steps, max_length=max_length, eval_every=steps, eval_generations=0, cache_dir=str(work / "cache"),
    )  # fmt: skip
    run(settings)
    timing = json.loads((out / "run.json").read_text())["timing"]
    return {"seconds": timing["train_s"], "tokens": timing["train_tokens"], "steps": steps}


def trl_worker(kind: str, work: Path, steps: int, batch_size: int, max_length: int, precompute: bool) -> dict:
    import trl
    from datasets import load_from_disk
    from transformers import AutoTokenizer, TrainerCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.start

    config_class, trainer_class = (trl.KTOConfig, trl.KTOTrainer) if kind == "kto" else (trl.DPOConfig, trl.DPOTrainer)
    args = config_class(
        output_dir=tempfile.mkdtemp(dir=work, prefix=f"run-trl-{kind}-"), bf16=False, use_cpu=True,
        gradient_checkpointing=False, report_to=[], learning_rate=LR, max_steps=steps,
        per_device_train_batch_size=batch_size, logging_steps=1, save_strategy="no", beta=0.1,
        max_length=max_length, disable_tqdm=True, precompute_ref_log_probs=precompute, dataloader_num_workers=0,
    )  # fmt: skip
    clock = Clock()
    trainer = trainer_class(
        model=str(work / "model"),
        args=args,
        train_dataset=load_from_disk(str(work / kind))["train"],
        processing_class=AutoTokenizer.from_pretrained(work / "model"),
        callbacks=[clock],
    )
    trainer.train()
    tokens = max(entry.get("num_tokens", 0) for entry in trainer.state.log_history)
    return {"seconds": clock.seconds, "tokens": int(tokens), "steps": trainer.state.global_step}


def prepare(work: Path, pairs: int, hidden_size: int, layers: int) -> None:
    from prefstream.tests.train_helpers import kto_export, pair_export
    from prefstream.train.tiny_model import build_tiny_model

    build_tiny_model(work / "model", hidden_size=hidden_size, num_layers=layers)
    pair_export(work / "dpo", n_train=pairs, n_test=16)
    kto_export(work / "kto", n_train=pairs // 2, n_test=8)  # the same number of rows as the DPO set's pairs


def run_worker(name: str, kind: str, work: Path, args) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--kind", kind, "--work", str(work),
               "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length), "--threads", str(args.threads)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{name} {kind} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["steps_per_s"] = result["steps"] / result["seconds"]
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=256, help="train pairs in the synthetic export")
    parser.add_argument("--hidden-size", type=int, default=64, help="tiny model width (64 = the tests' model)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--kinds", default="dpo,kto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per trainer (1: steadiest on a shared machine)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:  # a child process: run one trainer, print one JSON line
        import torch
        from transformers.utils import logging

        torch.set_num_threads(args.threads)
        logging.disable_progress_bar()
        logging.set_verbosity_error()
        work = Path(args.work)
        shape = (args.kind, work, args.steps, args.batch_size, args.max_length)
        if args.worker == "prefstream":
            result = prefstream_worker(*shape)
        else:
            result = trl_worker(*shape, precompute=args.worker == "trl-precompute")
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    import torch

    print(
        f"CPU fp32, torch {torch.__version__}, {args.threads} thread(s) per trainer; "
        f"tiny Llama hidden {args.hidden_size}, {args.layers} layers; "
        f"{args.steps} steps of batch {args.batch_size}, max length {args.max_length}"
    )
    with tempfile.TemporaryDirectory(prefix="prefstream-bench-") as tmp:
        work = Path(tmp)
        prepare(work, args.pairs, args.hidden_size, args.layers)
        header = f"{'trainer':<28}{'steps/s':>9}{'tokens/s':>11}{'peak RSS MB':>13}"
        for kind in args.kinds.split(","):
            runs = {name: [] for name in ("prefstream", "trl", "trl-precompute")}
            for _ in range(args.repeats):
                for name, seen in runs.items():
                    seen.append(run_worker(name, kind, work, args))
            results = {}
            for name, seen in runs.items():
                results[name] = max(seen, key=lambda r: r["steps_per_s"])
                results[name]["peak_rss_mb"] = max(r["peak_rss_mb"] for r in seen)
            print(f"\n{kind.upper()}\n{header}")
            for name, r in results.items():
                label = f"{name} {kind}"
                print(f"{label:<28}{r['steps_per_s']:>9.2f}{r['tokens_per_s']:>11.0f}{r['peak_rss_mb']:>13.0f}")
            ours = results["prefstream"]
            for baseline in ("trl", "trl-precompute"):
                theirs = results[baseline]
                print(
                    f"ratio prefstream / {baseline}: steps/s {ours['steps_per_s'] / theirs['steps_per_s']:.2f}x, "
                    f"tokens/s {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x, "
                    f"peak RSS {ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}x"
                )


if __name__ == "__main__":
    main()
