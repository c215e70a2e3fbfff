"""Candidates per second for K samples per prompt: prefstream's batched generate_candidates
against plain ``model.generate`` loops over the same prompts, same settings, on the CPU.

(a) one ``model.generate`` call per candidate (nothing batched);
(b) one call per prompt with ``num_return_sequences=K`` (the usual idiom: K rows a call);
(c) ``generate_candidates``: rows of every prompt batched, left-padded, sorted by length;
    its time includes loading the model from disk, which (a) and (b) do once beforehand.
Each runs ``--repeats`` times, interleaved, and the fastest counts (other load on the machine
only ever slows a run). New tokens are counted too: a random model stops at EOS now and then.

    .venv/bin/python bench/generate.py                  # 32 prompts, K=4, 32 new tokens
    .venv/bin/python bench/generate.py --hidden-size 256 --layers 4 --threads 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def prompts(n: int) -> list[str]:
    from prefstream.tests.train_helpers import NOUNS, VERBS

    pairs = [(verb, noun) for verb in VERBS for noun in NOUNS][:n]
    # two lengths, so batches need padding
    return [f"How do I {verb} a {noun}? Please explain it step by step." if i % 3 else f"{verb} {noun}?"
            for i, (verb, noun) in enumerate(pairs)]  # fmt: skip


def plain_loop(model, tokenizer, texts, k, per_candidate: bool, **sampling) -> tuple[int, int]:
    """(candidates, new tokens) from model.generate, one call per candidate or per prompt."""
    import torch

    candidates = tokens = 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")
        calls, rows = (k, 1) if per_candidate else (1, k)
        for _ in range(calls):
            with torch.inference_mode():
                out = model.generate(**ids, do_sample=True, num_return_sequences=rows, **sampling)
            new = out[:, ids["input_ids"].shape[1] :]
            candidates += rows
            tokens += int((new != tokenizer.pad_token_id).sum())
    return candidates, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="rows per generate call in (c)")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every side (a shared box: 1)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from prefstream.train.tiny_model import build_tiny_model

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        model_dir = build_tiny_model(Path(work) / "model", hidden_size=args.hidden_size, num_layers=args.layers)
        run(args, model_dir)


def run(args, model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefstream.train.generate import generate_candidates

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts = prompts(args.prompts)
    sampling = {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": args.max_new_tokens}
    hf = {**sampling, "top_k": 0, "pad_token_id": tokenizer.pad_token_id}  # HF's default top_k=50 off, as in (c)

    def ours() -> tuple[int, int]:
        out = generate_candidates(model_dir, texts, args.k, seed=0, batch_size=args.batch_size, model_id="bench",
                                  **sampling)  # fmt: skip
        return len(out), sum(c.num_tokens for c in out)

    sides = {
        "(a) model.generate, one call per candidate": lambda: plain_loop(model, tokenizer, texts, args.k, True, **hf),
        "(b) model.generate, one call per prompt (K rows)": lambda: plain_loop(model, tokenizer, texts, args.k, False,
                                                                               **hf),
        f"(c) prefstream generate_candidates, batch {args.batch_size}": ours,
    }  # fmt: skip
    for run in sides.values():  # warm-up: first-call costs (allocator, kernels) out of the timings
        run()
    best = {name: None for name in sides}
    for _ in range(args.repeats):
        for name, run in sides.items():
            start = time.perf_counter()
            candidates, tokens = run()
            seconds = time.perf_counter() - start
            if best[name] is None or seconds < best[name][0]:
                best[name] = (seconds, candidates, tokens)

    print(f"tiny model (hidden {args.hidden_size}, {args.layers} layers, vocab {len(tokenizer)}), {len(texts)} "
          f"prompts x K={args.k}, <= {args.max_new_tokens} new tokens, temperature 1.0, top-p 0.95, CPU fp32, "
          f"{args.threads} thread(s), best of {args.repeats}")  # fmt: skip
    rate = {}
    for name, (seconds, candidates, tokens) in best.items():
        rate[name] = candidates / seconds
        print(f"{name:<52}: {rate[name]:8.1f} candidates/s  {tokens / seconds:8.0f} new tokens/s  ({seconds:.2f} s)")
    a, b, c = rate.values()
    print(f"ratio (c)/(a) = {c / a:.1f}x   (c)/(b) = {c / b:.1f}x")
    if not torch.cuda.is_available():
        print("no GPU available here: the CUDA comparison (~0.5B Qwen2-shaped model) was not run")


if __name__ == "__main__":
    main()
