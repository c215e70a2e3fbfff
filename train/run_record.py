"""What a run leaves behind besides weights: ``metrics.jsonl`` and ``run.json``.

``run.json`` answers "which feedback, which checks and which settings produced this model":
the export's id and content hash, the model's path and hash, every setting, package
versions, start / end times and the final metrics. It is rewritten atomically at start
(status "running") and at the end (status "finished").
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

PACKAGES = ("prefstream", "torch", "transformers", "tokenizers", "datasets", "accelerate")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class MetricsLog:
    """Appends one JSON object per logged step to ``metrics.jsonl``."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        if resume_step is not None and path.exists():
            # Lines past the checkpoint were written by the interrupted run; the resumed run
            # writes them again, so keep the file identical to an uninterrupted run's.
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
            atomic_write(path, "".join(f"{line}\n" for line in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def start_record(out: Path, resumed_from_step: int | None, **fields) -> dict:
    """The run record at start-up; a resumed run keeps its start time and notes the resumption."""
    path = out / "run.json"
    record = json.loads(path.read_text()) if resumed_from_step is not None and path.exists() else {}
    record.update(status="running", **fields, packages=package_versions())
    record.setdefault("started_at", now())
    if resumed_from_step is not None:
        record.setdefault("resumed", []).append({"at": now(), "from_step": resumed_from_step})
    return record


def finish_run(runtime, out: Path, policy, tokenizer, record: dict, final_metrics: dict, *, step: int, started: float,
               train_seconds: float, train_tokens: int, eval_seconds: float) -> dict:
    """Save ``final/`` (model + tokenizer) and the finished ``run.json``; return the final metrics."""
    import torch

    train_tokens = int(runtime.gather(torch.tensor([train_tokens])).sum())
    if runtime.is_main:
        policy.save_pretrained(out / "final")
        tokenizer.save_pretrained(out / "final")
        record.update(
            status="finished",
            ended_at=now(),
            steps=step,
            timing={
                "total_s": time.perf_counter() - started,
                "train_s": train_seconds,  # optimizer steps only: no set-up, evaluation or checkpoints
                "train_tokens": train_tokens,
                "eval_s": eval_seconds,
            },
            final_metrics=final_metrics,
        )
        write_run_record(out, record)
        runtime.print(f"done: {out / 'final'} ({train_seconds:.1f} s in training steps)")
    runtime.barrier()
    return final_metrics


def write_run_record(out: Path, record: dict) -> None:
    atomic_write(out / "run.json", json.dumps(record, indent=2) + "\n")


def atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
