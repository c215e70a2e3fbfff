"""What a run leaves behind besides weights: ``metrics.jsonl`` and ``run.json``.

``run.json`` answers "which feedback, which checks and which settings produced this model":
the export's id and content hash, the model's path and hash, every setting, package
versions, start / end times, the final metrics and the failure modes seen. It is rewritten
atomically at start (status "running") and at the end: "finished", "stopped_early",
"interrupted" (Ctrl-C) or "failed" (with the error).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from .reference import write_atomic

PACKAGES = ("prefstream", "torch", "transformers", "peft", "tokenizers", "datasets")


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

    def first_eval(self) -> dict | None:
        """The step-0 evaluation line (the starting model's numbers), if written."""
        if not self.path.exists():
            return None
        lines = (json.loads(line) for line in self.path.read_text().splitlines())
        return next((m for m in lines if m["step"] == 0 and "eval/loss" in m), None)


def start_record(out: Path, resumed_from_step: int | None, **fields) -> dict:
    """The run record at start-up; a resumed run keeps its start time and notes the resumption."""
    path = out / "run.json"
    record = json.loads(path.read_text()) if resumed_from_step is not None and path.exists() else {}
    record.update(status="running", **fields, packages=package_versions())
    record.setdefault("started_at", now())
    if resumed_from_step is not None:
        record.setdefault("resumed", []).append({"at": now(), "from_step": resumed_from_step})
    return record


def write_run_record(out: Path, record: dict) -> None:
    atomic_write(out / "run.json", json.dumps(record, indent=2) + "\n")


def atomic_write(path: Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8"))
