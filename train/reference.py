"""Reference log-probs: computed once, shared by every process, cached on disk.

The reference is the starting model: the policy itself before its first step (a fresh full
fine-tune), the policy with its adapters disabled (LoRA), or the base model loaded for the
pass (a resumed full fine-tune whose cache entry is gone). The pass is split across
processes and gathered (:mod:`.scoring`), in inference mode and at a large batch.

The cache file is named by a hash of what the numbers depend on — the export's content hash,
the model directory's content hash, ``max_length``, the precision, and the layout (which
sequences, in which grouping) — so a later run on the same inputs loads them and never runs
the reference. Files are written to a temporary name and renamed into place, so a crash
never leaves a half-written cache entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from .scoring import generate, score

CACHE_VERSION = 2
SAMPLE_SEED = 1234  # the reference's sampled completions (the KL estimate) are the same in every run


def model_hash(path: str | Path, cache_dir: Path | None = None) -> str:
    """sha256 over every file of a model directory (names included).

    With ``cache_dir``, file digests are kept there by path, size and mtime, so an unchanged
    multi-GB model is not read again.
    """
    root = Path(path)
    index_path = cache_dir / "file-hashes.json" if cache_dir else None
    try:
        index = json.loads(index_path.read_text()) if index_path else {}
    except (FileNotFoundError, json.JSONDecodeError):
        index = {}
    digest, changed = hashlib.sha256(), False
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = file.stat()
        key, stamp = str(file.resolve()), [stat.st_size, stat.st_mtime_ns]
        if index.get(key, {}).get("stamp") != stamp:
            with file.open("rb") as fh:
                index[key] = {"stamp": stamp, "sha256": hashlib.file_digest(fh, "sha256").hexdigest()}
            changed = True
        digest.update(str(file.relative_to(root)).encode() + b"\0" + bytes.fromhex(index[key]["sha256"]))
    if changed and index_path:
        write_atomic(index_path, json.dumps(index).encode())
    return digest.hexdigest()


def reference_pass(scorer, objective, splits: dict, rows: dict[str, list[int]], eval_prompts, tokenizer,
                   settings, runtime) -> dict[str, torch.Tensor]:  # fmt: skip
    """Reference log-probs of the ``rows`` each split uses, and of completions it samples for test prompts.

    ``scorer`` must act as the reference (adapters disabled for LoRA). A split's
    tensors are full length, NaN on rows the run never uses.
    """
    pad, eos, batch = tokenizer.pad_token_id, tokenizer.eos_token_id, 8 * settings.batch_size
    tensors = {}
    for name, split in splits.items():
        for column in objective.columns:
            logps, _ = score(
                scorer, split.prompts, split.completions[column], rows[name], pad, settings.max_length, batch,
                runtime, f"reference log-probs ({name} {column})",
            )  # fmt: skip
            full = torch.full((len(split),), float("nan"))
            full[rows[name]] = logps
            tensors[f"{name}/{column}"] = full
    sampled = generate(scorer, eval_prompts, settings.max_new_tokens, eos, pad, runtime, sample_seed=SAMPLE_SEED)
    tensors.update(pack(sampled, "sample"))
    logps, _ = score(
        scorer, eval_prompts, sampled, list(range(len(sampled))), pad, settings.max_length, batch, runtime,
        "reference log-probs (samples)",
    )  # fmt: skip
    tensors["sample/logps"] = logps
    return tensors


def pack(sequences: list[list[int]], name: str) -> dict[str, torch.Tensor]:
    """Token lists as two tensors (flat ids and lengths), for torch.save with weights_only."""
    flat = [t for s in sequences for t in s]
    return {
        f"{name}/ids": torch.tensor(flat, dtype=torch.long),
        f"{name}/lengths": torch.tensor([len(s) for s in sequences]),
    }


def unpack(tensors: dict[str, torch.Tensor], name: str) -> list[list[int]]:
    ids, out, start = tensors[f"{name}/ids"].tolist(), [], 0
    for length in tensors[f"{name}/lengths"].tolist():
        out.append(ids[start : start + length])
        start += length
    return out


def cache_path(cache_dir: Path, key: dict) -> Path:
    key = {**key, "version": CACHE_VERSION}
    return cache_dir / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]}.pt"


def load(path: Path, runtime) -> dict[str, torch.Tensor] | None:
    """The cached tensors when every process can read them, else None (then all compute)."""
    try:
        tensors = torch.load(path, weights_only=True)["tensors"]
    except (FileNotFoundError, RuntimeError, KeyError, EOFError):
        tensors = None  # absent or unreadable: compute again
    return tensors if runtime.all_true(tensors is not None) else None


def store(path: Path, key: dict, tensors: dict[str, torch.Tensor], runtime) -> None:
    """Write the entry (main process; the others hold the same gathered tensors and move on)."""
    if runtime.is_main:
        import io

        buffer = io.BytesIO()
        torch.save({"key": key, "tensors": tensors}, buffer)
        write_atomic(path, buffer.getvalue())


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename; the file gets the umask's permissions, like any other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def follow_umask(directory: Path) -> None:
    """Give files that a library wrote as 0600 (safetensors does) the umask's permissions."""
    mode = 0o666 & ~current_umask()
    for file in Path(directory).rglob("*"):
        if file.is_file():
            file.chmod(mode)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
