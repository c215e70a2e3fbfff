"""Synthetic exports for the training tests and the benchmark.

Quality is learnable and independent of length: a good response is a helpful how-to
("Sure, here is how to fix a bike: first ..."), a bad one a dodge ("I don't know about
bikes. ..."), and each gets a random number of extra sentences, so the chosen response is
the longer in some pairs and the shorter in others. Train and test prompts never overlap.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from pathlib import Path

VERBS = ["fix", "build", "clean", "paint", "repair", "plan", "cook", "grow", "write", "test", "install", "debug"]
NOUNS = ["bike", "garden", "fence", "report", "cake", "server", "shelf", "budget", "poem", "lamp", "roof", "guitar"]
STEPS = [
    "gather the tools you need",
    "read the instructions carefully",
    "measure twice and cut once",
    "start with the simplest part",
    "check your work as you go",
    "ask a friend to review it",
]
DODGES = ["Maybe ask someone else.", "I really cannot say.", "That is not something I know much about."]


def _pair(rng: random.Random, verb: str, noun: str) -> tuple[str, str, str]:
    prompt = f"How do I {verb} a {noun}?"
    steps = rng.sample(STEPS, rng.randint(1, 3))
    good = f"Sure, here is how to {verb} a {noun}: first {steps[0]}." + "".join(f" Then {s}." for s in steps[1:])
    bad = f"I don't know about {noun}s." + "".join(f" {rng.choice(DODGES)}" for _ in range(rng.randint(0, 5)))
    return prompt, good, bad


def pair_rows(n_train: int, n_test: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, test) rows with prompt / chosen / rejected; prompts are disjoint across splits."""
    rng = random.Random(seed)
    combos = list(itertools.product(VERBS, NOUNS))
    rng.shuffle(combos)
    if n_train + n_test > len(combos):
        combos = combos * ((n_train + n_test) // len(combos) + 1)  # repeats stay within a split
    rows = []
    for verb, noun in combos[: n_train + n_test]:
        prompt, good, bad = _pair(rng, verb, noun)
        rows.append({"prompt": prompt, "chosen": good, "rejected": bad, "weight": 1.0, "pair_id": f"p{len(rows)}"})
    return rows[:n_train], rows[n_train:]


def unpair(rows: list[dict], seed: int = 0) -> list[dict]:
    """Thumbs rows (prompt / completion / label) from pairs, shuffled so labels interleave."""
    out = []
    for row in rows:
        out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
        out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
    random.Random(seed).shuffle(out)
    return out


def conversational(rows: list[dict]) -> list[dict]:
    """TRL's conversational format of the same rows."""
    out = []
    for row in rows:
        new = dict(row)
        new["prompt"] = [{"role": "user", "content": row["prompt"]}]
        for column in ("chosen", "rejected", "completion"):
            if column in row:
                new[column] = [{"role": "assistant", "content": row[column]}]
        out.append(new)
    return out


def write_export(
    path: str | Path, kind: str, train: list[dict], test: list[dict], prompt_format: str = "plain", fmt: str = "hf"
) -> Path:
    """Save rows as an export directory like `prefstream export`: splits in ``fmt`` (hf, parquet, jsonl) + manifest."""
    from datasets import Dataset, DatasetDict

    path = Path(path)
    train_set = Dataset.from_list(train)
    columns = {name: [row[name] for row in test] for name in train_set.features}  # an empty split keeps them
    test_set = Dataset.from_dict(columns, features=train_set.features)
    files = {"train": "train", "test": "test"}
    if fmt == "hf":
        DatasetDict({"train": train_set, "test": test_set}).save_to_disk(str(path))
    else:
        path.mkdir(parents=True)
        for name, split in (("train", train_set), ("test", test_set)):
            files[name] = f"{name}.{fmt}"
            split.to_parquet(path / files[name]) if fmt == "parquet" else split.to_json(path / files[name])
    content = json.dumps({"train": train, "test": test}, sort_keys=True).encode()
    manifest = {
        "export_id": f"{kind}-{hashlib.sha256(content).hexdigest()[:8]}",
        "kind": kind,
        "prompt_format": prompt_format,
        "content_hash": hashlib.sha256(content).hexdigest(),
        "rows": {"train": len(train), "test": len(test)},
        "format": fmt,
        "files": files,
        "created_by": "tests",  # an extra key: readers must tolerate them
    }
    if kind == "kto":
        desirable = sum(r["label"] for r in train)
        undesirable = len(train) - desirable
        manifest["kto_weights"] = {
            "desirable": desirable,
            "undesirable": undesirable,
            "desirable_weight": 1.0,
            "undesirable_weight": round(desirable / max(undesirable, 1), 2),
        }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return path


def pair_export(path: str | Path, n_train: int = 64, n_test: int = 32, kind: str = "dpo", seed: int = 0) -> Path:
    train, test = pair_rows(n_train, n_test, seed)
    return write_export(path, kind, train, test)


def kto_export(path: str | Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """Unpaired thumbs from ``n_train`` / ``n_test`` pairs (twice as many rows)."""
    train, test = pair_rows(n_train, n_test, seed)
    return write_export(path, "kto", unpair(train, seed), unpair(test, seed + 1))


def shared_tiny_model(tmp_path_factory) -> Path:
    """One tiny model per test session (pytest's base temp dir is shared by all test files)."""
    from prefstream.train.tiny_model import build_tiny_model

    path = tmp_path_factory.getbasetemp() / "tiny-model"
    if not (path / "config.json").exists():
        build_tiny_model(path, seed=0)
    return path


def perturbed_copy(model_dir: Path, out_dir: Path, scale: float = 0.05, seed: int = 1) -> Path:
    """The same model with noise on every weight: a reference that differs from the policy."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    if (out_dir / "config.json").exists():
        return out_dir
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(out_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, out_dir / name)
    return out_dir


def sft_copy(model_dir: Path, out_dir: Path, texts: list[tuple[str, str]], steps: int = 60, lr: float = 1e-2) -> Path:
    """The model fine-tuned on (prompt, answer + EOS) texts: a starting point that ends its answers.

    A random-init model never emits EOS, so its greedy generations always fill the budget
    and length inflation could not show; after this it answers like ``texts`` and stops.
    """
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out_dir / "config.json").exists():
        return out_dir
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    batch = tokenizer([p + " " + a + tokenizer.eos_token for p, a in texts], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    torch.manual_seed(0)
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, out_dir / name)
    return out_dir


def crash_after_first_checkpoint() -> None:
    """``python -m prefstream.tests.train_helpers ARGS``: `prefstream train ARGS`, crashing after its first checkpoint.

    Lets a test interrupt a torchrun job at a known step (each process raises once it saved).
    """
    import sys

    from prefstream.cli import main
    from prefstream.train import checkpoint

    original = checkpoint.save_checkpoint

    def save_then_crash(*args, **kwargs):
        original(*args, **kwargs)
        raise RuntimeError("injected crash")

    checkpoint.save_checkpoint = save_then_crash
    main(["train", *sys.argv[1:]], prog_name="prefstream")


if __name__ == "__main__":
    crash_after_first_checkpoint()
