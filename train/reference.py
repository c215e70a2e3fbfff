"""Reference log-probs: computed once with the frozen reference model, cached on disk.

The cache file is named by a hash of what the numbers depend on — the export's content hash,
the model directory's content hash, ``max_length``, the precision, and the layout (which
sequences, in which grouping) — so a later run on the same inputs loads them and never
builds the reference model. Files are written to a temporary name and renamed into place,
so a crash never leaves a half-written cache entry.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from .evaluate import generation_lengths
from .logprobs import CompletionLogps, sequence_logps
from .model_io import load_model
from .runtime import Runtime

CACHE_VERSION = 1


def model_hash(path: str | Path) -> str:
    """sha256 over every file of a model directory (weights, config, tokenizer), names included."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with file.open("rb") as fh:
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()


def compute_reference(
    model_dir: str,
    runtime: Runtime,
    tokenizer,
    sequences: dict[str, tuple[list[list[int]], list[list[int]]]],
    generation_prompts: list[list[int]],
    max_length: int,
    max_new_tokens: int,
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """Reference log-probs of each named (prompts, completions) list, and its generation lengths.

    Runs before the policy exists; the reference model is dropped when this returns.
    """
    model = load_model(model_dir, runtime.device)
    model.eval()
    scorer = CompletionLogps(model)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    tensors = {
        name: sequence_logps(scorer, prompts, completions, pad, max_length, batch_size, runtime)[0]
        for name, (prompts, completions) in sequences.items()
    }
    lengths = generation_lengths(model, generation_prompts, max_new_tokens, eos, pad, runtime.autocast)
    tensors["test/generation_lengths"] = torch.tensor(lengths, dtype=torch.float32)
    return tensors


def cached(
    runtime: Runtime, cache_dir: Path, key: dict, compute: Callable[[], dict[str, torch.Tensor]]
) -> tuple[dict[str, torch.Tensor], bool]:
    """Load the entry for ``key``, or compute it on the main process and store it.

    Returns the tensors and whether they came from the cache. Other processes wait for the
    main one and read the file it wrote.
    """
    key = {**key, "version": CACHE_VERSION}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = cache_dir / f"{name}.pt"
    tensors = _load(path)
    hit = tensors is not None
    if runtime.is_main and not hit:
        _save(path, {"key": key, "tensors": compute()})
        # compute() built the reference model; release it before the policy is loaded
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    runtime.barrier()
    return (tensors if hit else _load(path)), hit


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    try:
        return torch.load(path, weights_only=True)["tensors"]
    except (FileNotFoundError, RuntimeError, KeyError, EOFError):
        return None  # absent or unreadable: compute again


def _save(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
