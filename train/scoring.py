"""Work every process shares: scoring many sequences and greedy generation, split and gathered.

Sequences are sorted by length (little padding) and cut into batches; process ``r`` takes
batches ``r, r + N, ...``, and the results are gathered so every process ends with all of
them. Under FSDP every forward is a collective, so each process runs the same number of
batches (the short ones repeat a batch and drop its result). Passes longer than a few
seconds show a progress bar on a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence

import torch

from .data import collate
from .model_io import gathered


def progress(items: Iterable, total: int, what: str, runtime):
    """A progress bar on the main process's terminal, shown once a pass takes over 3 s."""
    from tqdm.auto import tqdm

    quiet = not runtime.is_main or not sys.stderr.isatty()
    return tqdm(items, total=total, desc=what, delay=3, leave=False, disable=quiet, unit="batch")


def my_share(chunks: Sequence, runtime) -> list[tuple[int, bool]]:
    """``(chunk index, keep)`` for this process: round-robin, padded to equal counts under FSDP."""
    mine = [(i, True) for i in range(runtime.rank, len(chunks), runtime.world_size)]
    if runtime.fsdp and chunks:
        rounds = -(-len(chunks) // runtime.world_size)
        mine += [(len(chunks) - 1, False)] * (rounds - len(mine))
    return mine


def shared_map(chunks: Sequence, work: Callable[[object], dict[str, torch.Tensor]], what: str, runtime):
    """Run ``work`` on this process's chunks; every process gets ``{key: tensor}`` of all chunks, in order."""
    share = my_share(chunks, runtime)
    done = {}
    for i, keep in progress(share, len(share), what, runtime):
        result = work(chunks[i])
        if keep:
            done[i] = {k: v.detach().cpu() for k, v in result.items()}
    parts = {}
    for theirs in runtime.gather_objects(done):
        parts.update(theirs)
    if not parts:
        return {}
    return {key: torch.cat([parts[i][key] for i in range(len(chunks))]) for key in parts[0]}


def length_batches(prompts, completions, rows: list[int], batch_size: int) -> list[list[int]]:
    """``rows`` sorted by sequence length, cut into batches."""
    order = sorted(rows, key=lambda i: len(prompts[i]) + len(completions[i]))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def score(scorer, prompts, completions, rows: list[int], pad_id: int, max_length: int, batch_size: int, runtime,
          what: str) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Summed log-probs and completion token counts of ``rows`` (in ``rows``' order), without gradients."""
    batches = length_batches(prompts, completions, rows, batch_size)

    def work(idx):
        batch = collate([prompts[i] for i in idx], [completions[i] for i in idx], pad_id, max_length)
        tokens = batch.completion_mask.sum(-1).float()
        batch = batch.to(runtime.device)
        with runtime.inference(), runtime.autocast():
            logps = scorer(batch.input_ids, batch.attention_mask, batch.completion_mask).float()
        return {"index": torch.tensor(idx), "logps": logps, "tokens": tokens}

    out = shared_map(batches, work, what, runtime)
    if not out:
        return torch.empty(0), torch.empty(0)
    position = {row: k for k, row in enumerate(rows)}
    order = torch.tensor([position[int(i)] for i in out["index"]], dtype=torch.long)
    logps, tokens = torch.empty(len(rows)), torch.empty(len(rows))
    logps[order], tokens[order] = out["logps"], out["tokens"]
    return logps, tokens


def generate(scorer, prompts: list[list[int]], max_new_tokens: int, eos_id: int, pad_id: int, runtime,
             sample_seed: int | None = None) -> list[list[int]]:  # fmt: skip
    """Completion token ids for each prompt (up to and including EOS, when it came), one prompt at a time.

    Greedy by default; ``sample_seed`` samples at temperature 1 from a fixed seed instead,
    leaving the global random state as it was.
    """
    chunks = [[i] for i in range(len(prompts))]
    model = scorer.model
    was_training = model.training
    model.eval()

    def work(idx):
        ids = torch.tensor([prompts[idx[0]]], device=runtime.device)
        cuda = [runtime.device] if runtime.device.type == "cuda" else []
        with runtime.inference(), runtime.autocast(), torch.random.fork_rng(devices=cuda), gathered(scorer):
            if sample_seed is not None:
                torch.manual_seed(sample_seed + idx[0])
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                do_sample=sample_seed is not None, top_k=None, top_p=None,
                temperature=None if sample_seed is None else 1.0,
                eos_token_id=eos_id, pad_token_id=pad_id, synced_gpus=runtime.fsdp,
            )  # fmt: skip
        new = out[0, ids.shape[1] :].tolist()
        new = new[: new.index(eos_id) + 1] if eos_id in new else new
        return {"ids": torch.tensor(new + [-1])}

    out = shared_map(chunks, work, "generating", runtime)
    model.train(was_training)
    if not out:
        return []
    # ids of all prompts, concatenated with a -1 after each
    flat, completions, current = out["ids"].tolist(), [], []
    for token in flat:
        if token == -1:
            completions.append(current)
            current = []
        else:
            current.append(token)
    return completions


def lengths(completions: list[list[int]], eos_id: int) -> tuple[torch.Tensor, int]:
    """Completion lengths in tokens (EOS not counted) and how many hit the budget (ended without EOS)."""
    ended = [bool(c) and c[-1] == eos_id for c in completions]
    counts = [len(c) - e for c, e in zip(completions, ended, strict=True)]
    return torch.tensor(counts, dtype=torch.float32), ended.count(False)
