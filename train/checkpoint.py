"""Run directory and checkpoints: ``RUN_DIR/checkpoints/step-00000100/``.

A checkpoint holds what cannot be recomputed: the trainable weights and the optimizer state
(``weights/``, written with ``torch.distributed.checkpoint``, so under FSDP each process
writes and reads its own shards; with LoRA only the adapters), plus ``training_state.pt``
(step, scheduler, RNG, early-stop state) and ``settings.json``. Frozen base weights, the
tokenizer and reference log-probs are not copied: they come from ``--model`` and the cache.
It is written under a temporary name and renamed into place; only the newest one is kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path

import torch

from prefstream.errors import PrefstreamError

from .reference import write_atomic

# Settings that may change between a run and its resumption: none changes the numbers' meaning.
RESUMABLE_CHANGES = {"device", "cache_dir"}


def check_out(out: Path, resume: bool) -> None:
    """One-line errors for an --out that cannot hold a run, before any work starts."""
    if resume:
        if latest_checkpoint(out) is None:
            raise PrefstreamError(f"{out} has no checkpoint to resume from; run without --resume")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PrefstreamError(f"{out} is not empty; pass --resume to continue its run, or choose a new --out directory")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PrefstreamError(
            f"cannot create --out {out}: {existing} is not a writable directory; choose another --out"
        )


def open_run(runtime, out: Path, resume: bool, settings: dict) -> Path | None:
    """Create ``out`` for a fresh run, or return the checkpoint to resume from (all processes)."""
    if runtime.is_main and not resume:
        out.mkdir(parents=True, exist_ok=True)
    if not resume:
        return None
    checkpoint = latest_checkpoint(out)
    check_same_settings(checkpoint, settings)
    return checkpoint


def latest_checkpoint(out: Path) -> Path | None:
    steps = sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return steps[-1] if steps else None


def check_same_settings(checkpoint: Path, settings: dict) -> None:
    stored = json.loads((checkpoint / "settings.json").read_text())
    settings = json.loads(json.dumps(settings))  # tuples become lists, as stored
    changed = [k for k in settings if k not in RESUMABLE_CHANGES and stored.get(k) != settings[k]]
    if changed:
        diff = ", ".join(f"{k}: {stored.get(k)!r} -> {settings[k]!r}" for k in changed)
        raise PrefstreamError(
            f"--resume with different settings ({diff}); repeat the original options or use a new --out directory"
        )


def save_checkpoint(out: Path, step: int, model, optimizer, scheduler, settings: dict, runtime, extra: dict) -> Path:
    """Every process calls it (each writes its shards); the main process writes the rest and renames."""
    root = out / "checkpoints"
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if runtime.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    runtime.barrier()  # a leftover of a crashed run is gone before anyone writes
    dcp, model_state, optimizer_state = _state(model, optimizer)
    with _single_process_ok():
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp / "weights")
    if runtime.is_main:
        write_atomic(tmp / "settings.json", json.dumps(settings, indent=2).encode())
        state = {
            "step": step,
            "scheduler": scheduler.state_dict(),
            "rng": {
                "python": random.getstate(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            **extra,
        }
        torch.save(state, tmp / "training_state.pt")
        os.replace(tmp, final)
        for older in root.glob("step-*"):
            if older != final:
                shutil.rmtree(older)
    return final


def load_checkpoint(checkpoint: Path, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG from ``checkpoint``; returns its training state."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    dcp, model_state, optimizer_state = _state(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    with _single_process_ok():
        dcp.load(state, checkpoint_id=checkpoint / "weights")
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"], options=_trainable_only()
    )
    # weights_only=False: the state holds Python's RNG tuple; the file is our own checkpoint.
    training = torch.load(checkpoint / "training_state.pt", weights_only=False)
    scheduler.load_state_dict(training["scheduler"])
    random.setstate(training["rng"]["python"])
    torch.set_rng_state(training["rng"]["torch"])
    if training["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(training["rng"]["cuda"])
    return training


def _trainable_only():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Only trainable tensors: with LoRA the frozen base comes from --model again.
    return StateDictOptions(ignore_frozen_params=True, strict=False)


def _state(model, optimizer):
    """torch.distributed.checkpoint (imported on first use: it takes seconds) and the trainable state dicts."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return dcp, *get_state_dict(model, optimizer, options=_trainable_only())


@contextlib.contextmanager
def _single_process_ok():
    """torch.distributed.checkpoint warns that it runs without a process group; that is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        yield
