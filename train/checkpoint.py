"""Run directory and checkpoints: ``RUN_DIR/checkpoints/step-00000100/``.

A checkpoint is a loadable model directory (``save_pretrained`` weights + tokenizer) with
``settings.json`` beside it and ``training_state.pt`` (step, optimizer, scheduler, RNG) so a
resumed run continues exactly. It is written under a temporary name and renamed into place;
only the newest one is kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch

from prefstream.errors import PrefstreamError

# Settings that may change between a run and its resumption: neither changes the numbers' meaning.
RESUMABLE_CHANGES = {"device", "cache_dir"}


def open_run(runtime, out: Path, resume: bool, settings: dict) -> Path | None:
    """Create ``out`` for a fresh run, or return the checkpoint to resume from (all processes)."""
    checkpoint = prepare_run_dir(out, resume) if runtime.is_main else None
    runtime.barrier()  # the other processes look only once the main one has checked
    if resume:
        checkpoint = latest_checkpoint(out)
        check_same_settings(checkpoint, settings)
    return checkpoint


def prepare_run_dir(out: Path, resume: bool) -> Path | None:
    if resume:
        checkpoint = latest_checkpoint(out)
        if checkpoint is None:
            raise PrefstreamError(f"{out} has no checkpoint to resume from; run without --resume")
        return checkpoint
    if out.exists() and any(out.iterdir()):
        raise PrefstreamError(f"{out} is not empty; pass --resume to continue its run, or choose a new --out directory")
    out.mkdir(parents=True, exist_ok=True)
    return None


def latest_checkpoint(out: Path) -> Path | None:
    steps = sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return steps[-1] if steps else None


def check_same_settings(checkpoint: Path, settings: dict) -> None:
    stored = json.loads((checkpoint / "settings.json").read_text())
    changed = [k for k in settings if k not in RESUMABLE_CHANGES and stored.get(k) != settings[k]]
    if changed:
        diff = ", ".join(f"{k}: {stored.get(k)!r} -> {settings[k]!r}" for k in changed)
        raise PrefstreamError(
            f"--resume with different settings ({diff}); repeat the original options or use a new --out directory"
        )


def save_checkpoint(out: Path, step: int, model, tokenizer, optimizer, scheduler, settings: dict) -> Path:
    root = out / "checkpoints"
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "settings.json").write_text(json.dumps(settings, indent=2))
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {
            "python": random.getstate(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }
    torch.save(state, tmp / "training_state.pt")
    os.replace(tmp, final)
    for older in root.glob("step-*"):
        if older != final:
            shutil.rmtree(older)
    return final


def load_training_state(checkpoint: Path, optimizer, scheduler) -> int:
    """Restore optimizer, scheduler and RNG from ``checkpoint``; returns its step."""
    # weights_only=False: the state holds Python's RNG tuple; the file is our own checkpoint.
    state = torch.load(checkpoint / "training_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    random.setstate(state["rng"]["python"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state["step"]
