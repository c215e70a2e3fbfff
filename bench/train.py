"""prefstream's trainers against TRL 1.16's on CPU (fp32): whole-process wall time, steps/s and peak RSS.

Same tiny Llama, same export, batch size, max length and optimizer steps on both sides:
DPO (``trl.DPOTrainer``), KTO (``trl.KTOTrainer``), SimPO (``trl.experimental.cpo.CPOTrainer``
with ``loss_type="simpo"``, ``cpo_alpha=0``), and DPO with LoRA r=8 (``peft``) on both sides
(at the first run length only: it is there for its peak RSS).
Each run is its own process at torch's default thread count, timed from launch to exit
(imports, model load, reference pass, evaluation and saving included: what a user waits
for). prefstream starts from an empty reference cache each time. Reported: wall time,
optimizer steps per second inside the training loop, and peak RSS; then the ratios
(speed-up = TRL's wall time / prefstream's, RSS = prefstream's / TRL's).

    .venv/bin/python bench/train.py                    # 60 and 300 steps, hidden 256, 4 layers
    .venv/bin/python bench/train.py --steps 60 --kinds dpo
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
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
LR = 1e-5
LORA = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                     "down_proj"]}  # fmt: skip


def prefstream_worker(kind: str, lora: bool, work: Path, steps: int, batch_size: int, max_length: int) -> dict:
    from prefstream.train import TrainSettings, run

    out = Path(tempfile.mkdtemp(dir=work, prefix=f"run-prefstream-{kind}-"))
    settings = TrainSettings(
        kind=kind, data=str(work / ("kto" if kind == "kto" else "dpo")), model=str(work / "model"), out=str(out),
        lr=LR, batch_size=batch_size, max_steps=steps, max_length=max_length, eval_every=steps, eval_generations=0,
        lora_r=LORA["r"] if lora else 0, lora_alpha=LORA["lora_alpha"], cache_dir=str(out / "cache"),
    )  # fmt: skip
    run(settings)
    return {"train_s": json.loads((out / "run.json").read_text())["timing"]["train_s"], "steps": steps}


def trl_worker(kind: str, lora: bool, work: Path, steps: int, batch_size: int, max_length: int) -> dict:
    import trl
    from datasets import load_from_disk
    from transformers import AutoTokenizer, TrainerCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.start

    common = dict(
        output_dir=tempfile.mkdtemp(dir=work, prefix=f"run-trl-{kind}-"), bf16=False, use_cpu=True,
        gradient_checkpointing=False, report_to=[], learning_rate=LR, max_steps=steps,
        per_device_train_batch_size=batch_size, logging_steps=1, save_strategy="no", beta=0.1,
        max_length=max_length, disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    if kind == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        config, trainer_class = CPOConfig(loss_type="simpo", cpo_alpha=0.0, **common), CPOTrainer
    elif kind == "kto":
        config, trainer_class = trl.KTOConfig(**common), trl.KTOTrainer
    else:
        config, trainer_class = trl.DPOConfig(**common), trl.DPOTrainer
    extra = {}
    if lora:
        from peft import LoraConfig

        extra["peft_config"] = LoraConfig(task_type="CAUSAL_LM", **LORA)
    model = str(work / "model")
    if kind == "simpo":  # the experimental trainers take a model object
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model)
    clock = Clock()
    trainer = trainer_class(
        model=model,
        args=config,
        train_dataset=load_from_disk(str(work / ("kto" if kind == "kto" else "dpo")))["train"],
        processing_class=AutoTokenizer.from_pretrained(work / "model"),
        callbacks=[clock],
        **extra,
    )
    trainer.train()
    return {"train_s": clock.seconds, "steps": trainer.state.global_step}


def prepare(work: Path, pairs: int, hidden_size: int, layers: int) -> None:
    from prefstream.tests.train_helpers import kto_export, pair_export
    from prefstream.train.tiny_model import build_tiny_model

    build_tiny_model(work / "model", hidden_size=hidden_size, num_layers=layers)
    pair_export(work / "dpo", n_train=pairs, n_test=16)
    kto_export(work / "kto", n_train=pairs // 2, n_test=8)  # as many rows as the DPO set has pairs


def run_worker(name: str, kind: str, lora: bool, steps: int, work: Path, args) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--kind", kind, "--work", str(work),
               "--steps", str(steps), "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length)]  # fmt: skip
    if lora:
        command.append("--lora")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{name} {kind} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "wall_s": wall, "steps_per_s": result["steps"] / result["train_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="60,300", help="comma-separated run lengths")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=512, help="train pairs in the synthetic export")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--kinds", default="dpo,kto,simpo,dpo+lora")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--lora", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:  # a child process: run one trainer, print one JSON line
        from transformers.utils import logging

        logging.disable_progress_bar()
        logging.set_verbosity_error()
        worker = prefstream_worker if args.worker == "prefstream" else trl_worker
        result = worker(args.kind, args.lora, Path(args.work), int(args.steps), args.batch_size, args.max_length)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    import torch

    print(
        f"CPU fp32, torch {torch.__version__} at its default {torch.get_num_threads()} threads, no GPU; "
        f"tiny Llama hidden {args.hidden_size}, {args.layers} layers; batch {args.batch_size}, "
        f"max length {args.max_length} tokens; one process per run, wall time from launch to exit"
    )
    header = f"{'':<20}{'steps':>6}{'wall s':>9}{'train steps/s':>15}{'peak RSS MB':>13}"
    with tempfile.TemporaryDirectory(prefix="prefstream-bench-") as tmp:
        work = Path(tmp)
        prepare(work, args.pairs, args.hidden_size, args.layers)
        for n, steps in enumerate(int(s) for s in args.steps.split(",")):
            print(f"\n{header}")
            # LoRA is there for its memory: measured at the first run length only
            for label in [k for k in args.kinds.split(",") if n == 0 or not k.endswith("+lora")]:
                kind, lora = label.removesuffix("+lora"), label.endswith("+lora")
                results = {name: run_worker(name, kind, lora, steps, work, args) for name in ("prefstream", "trl")}
                for name, r in results.items():
                    print(f"{label + ' ' + name:<20}{steps:>6}{r['wall_s']:>9.1f}{r['steps_per_s']:>15.2f}"
                          f"{r['peak_rss_mb']:>13.0f}")  # fmt: skip
                ours, theirs = results["prefstream"], results["trl"]
                print(
                    f"{label} at {steps} steps: wall-time speed-up {theirs['wall_s'] / ours['wall_s']:.2f}x, "
                    f"train steps/s {ours['steps_per_s'] / theirs['steps_per_s']:.2f}x, "
                    f"peak RSS {ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}x (prefstream / TRL)"
                )


if __name__ == "__main__":
    main()
