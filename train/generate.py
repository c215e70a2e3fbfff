"""Sample K candidate responses per prompt from a local causal LM, for on-policy rounds.

Rows (prompt, sample index) are generated in batches with ``model.generate``: left-padded,
sorted by prompt length so a batch wastes little on padding. Yet each candidate's draw is a
function of ``(seed, prompt, sample index)`` alone, never of the batch it landed in: a logits
processor samples each row's next token from the tempered, top-p-filtered distribution with
a generator seeded per candidate (inverse-CDF sampling, one uniform per token), and greedy
decoding emits it. Built-in sampling draws from one generator shared by the batch, so a
candidate's text would change with the batch size or the other prompts, and its id could
not name it.

``candidate_id``: the first 32 hex digits of sha256 over canonical JSON of ``model_id``, the
prompt as given, the sample index, the seed, ``temperature``, ``top_p`` and
``max_new_tokens`` — everything the text depends on besides the weights ``model_id`` names.

Example:
    >>> cands = generate_candidates("runs/dpo-1/final", ["How do I fix a bike?"], 4,
    ...                             temperature=0.7, top_p=0.95, max_new_tokens=128, seed=0)  # doctest: +SKIP
    >>> [c.text for c in cands]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import LogitsProcessor

from prefstream.errors import PrefstreamError

from .data import chat_ids, pad_token_id


@dataclass(frozen=True)
class Candidate:
    candidate_id: str  # see the module docstring
    model_id: str
    prompt_index: int  # position in the ``prompts`` passed
    prompt: str | list[dict]  # as passed: a string or chat messages
    sample_index: int  # 0 .. k-1
    seed: int
    text: str  # the response, without its stop token
    num_tokens: int  # generated tokens, the stop token included
    finish_reason: Literal["stop", "length"]  # a stop token ended it, or max_new_tokens did


def generate_candidates(
    model_dir: str | Path,
    prompts: list[str | list[dict]],
    k: int,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    seed: int = 0,
    batch_size: int = 16,
    device: str | None = None,
    model_id: str | None = None,
) -> list[Candidate]:
    """``k`` candidates for each prompt, in prompt order then sample order.

    Args:
        model_dir: a local causal-LM directory (a run's ``final/`` or any model).
        prompts: plain strings (tokenised as they are, BOS added where the tokenizer adds it) or
            chat message lists (rendered by the chat template with the generation prompt).
        k: candidates per prompt.
        temperature: 0 decodes greedily (all k candidates are then the same text).
        top_p: nucleus sampling mass; 1 keeps the whole vocabulary.
        max_new_tokens: the token budget; a candidate cut by it has ``finish_reason == "length"``.
        seed: with the prompt and sample index, fixes each candidate's draw.
        batch_size: rows (prompt x sample) per ``generate`` call; results do not depend on it.
        device: "cpu" or "cuda" (default: cuda when available). CUDA runs in bf16, CPU in fp32.
        model_id: recorded on each candidate (default: :func:`default_model_id`).
    """
    _check(prompts, k, temperature, top_p, max_new_tokens, batch_size)
    torch_device = _device(device)
    tokenizer, model = _load(Path(model_dir), torch_device)
    model_id = model_id or default_model_id(model_dir)
    prompt_ids = [_prompt_ids(tokenizer, p) for p in prompts]
    rows = [(i, s) for i in range(len(prompts)) for s in range(k)]
    order = sorted(range(len(rows)), key=lambda r: len(prompt_ids[rows[r][0]]))
    stop_ids = _stop_ids(model, tokenizer)
    stops = set(stop_ids)
    settings = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
    out: dict[int, Candidate] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        seeds = [_noise_seed(seed, prompts[rows[r][0]], rows[r][1]) for r in chunk]
        generated = _generate(model, tokenizer, [prompt_ids[rows[r][0]] for r in chunk], seeds, stop_ids, **settings)
        for r, tokens in zip(chunk, generated, strict=True):
            i, s = rows[r]
            ends = [n for n, t in enumerate(tokens) if t in stops]
            kept = tokens[: ends[0]] if ends else tokens
            out[r] = Candidate(
                candidate_id=candidate_id(model_id, prompts[i], s, seed, **settings),
                model_id=model_id,
                prompt_index=i,
                prompt=prompts[i],
                sample_index=s,
                seed=seed,
                text=tokenizer.decode(kept, skip_special_tokens=True),
                num_tokens=len(kept) + bool(ends),
                finish_reason="stop" if ends else "length",
            )
    return [out[r] for r in range(len(rows))]


def default_model_id(model_dir: str | Path) -> str:
    """``sha256:`` + the first 16 hex digits of the directory's content hash (every file, names included)."""
    from .reference import model_hash

    # The trainer's file-digest cache ($PREFSTREAM_CACHE/ref-logps), so a model a run already
    # hashed is not read again.
    root = os.environ.get("PREFSTREAM_CACHE")
    cache_dir = (Path(root) if root else Path.home() / ".cache" / "prefstream") / "ref-logps"
    return f"sha256:{model_hash(model_dir, cache_dir)[:16]}"


def candidate_id(
    model_id: str, prompt: str | list[dict], sample_index: int, seed: int, *, temperature: float, top_p: float,
    max_new_tokens: int,
) -> str:  # fmt: skip
    """The stable id of one candidate (see the module docstring)."""
    key = {"model_id": model_id, "prompt": prompt, "sample_index": sample_index, "seed": seed,
           "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}  # fmt: skip
    return hashlib.sha256(_canonical(key)).hexdigest()[:32]


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _prompt_ids(tokenizer, prompt: str | list[dict]) -> list[int]:
    if isinstance(prompt, list):
        return chat_ids(tokenizer, [prompt], add_generation_prompt=True)[0]
    return tokenizer(prompt)["input_ids"]


def _noise_seed(seed: int, prompt: str | list[dict], sample_index: int) -> int:
    """The seed of one candidate's noise generator; independent of the model, so two models
    sampled with the same seed share their noise (common random numbers for comparisons)."""
    digest = hashlib.sha256(_canonical({"seed": seed, "prompt": prompt, "sample_index": sample_index})).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: torch generators take any such int


def _generate(model, tokenizer, prompt_ids, seeds, stop_ids, *, temperature, top_p, max_new_tokens) -> list[list[int]]:
    """Generated token ids of each row (after its prompt; padding after a stop token included)."""
    from transformers import GenerationConfig, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    pad = pad_token_id(tokenizer)
    # Left padding by hand: tokenizer.pad refuses a tokenizer without a pad token (Llama-3's).
    width = max(len(ids) for ids in prompt_ids)
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompt_ids], device=model.device)
    mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompt_ids], device=model.device)
    processors = LogitsProcessorList()
    if temperature > 0:
        processors.append(TemperatureLogitsWarper(temperature))
        if top_p < 1:
            processors.append(TopPLogitsWarper(top_p))
        processors.append(_SeededSampler(seeds))
    # Every value is set, so none comes from the model's own generation_config: candidates are
    # draws from the model's distribution at these settings and nothing else. temperature,
    # top_p and top_k are HF's neutral defaults (greedy ignores them; the processors above
    # sample), set so the model's sampling defaults are not merged in and warned about.
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, repetition_penalty=1.0,
        temperature=1.0, top_p=1.0, top_k=50,
        eos_token_id=stop_ids, pad_token_id=pad, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids, attention_mask=mask, generation_config=config, logits_processor=processors
        )
    return output[:, width:].tolist()


class _SeededSampler(LogitsProcessor):
    """Picks each row's next token by inverse-CDF sampling with that row's own generator.

    One uniform per row and step, drawn on the CPU (the same draws on any device), selects
    the token where the row's cumulative probability first exceeds it; every other logit
    becomes -inf, so greedy decoding emits that token.
    """

    def __init__(self, seeds: list[int]):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        uniform = torch.cat([torch.rand(1, generator=g) for g in self.generators])
        cdf = torch.softmax(scores.float(), dim=-1).cumsum(dim=-1)
        # scaled by the row's total, which float32 rounding leaves a little off 1
        target = (uniform.to(cdf.device) * cdf[:, -1]).unsqueeze(1)
        # right=True: the first token whose cdf exceeds the target, never one of probability 0
        choice = torch.searchsorted(cdf, target, right=True).clamp_max(scores.shape[-1] - 1)
        return torch.full_like(scores, -torch.inf).scatter_(1, choice, 0.0)


def _stop_ids(model, tokenizer) -> list[int]:
    """The model's generation_config stop tokens (e.g. Llama-3's <|eot_id|> and <|end_of_text|>), and EOS."""
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return list(dict.fromkeys(i for i in [*ids, tokenizer.eos_token_id] if i is not None))


def _load(path: Path, device: torch.device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not path.is_dir():
        raise PrefstreamError(f"{path} is not a directory; pass a run's final/ or a local causal-LM directory")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    except (OSError, ValueError) as exc:
        raise PrefstreamError(
            f"{path}: cannot load a causal LM and its tokenizer ({str(exc).splitlines()[0]}); "
            "pass a run's final/ or a local causal-LM directory"
        ) from None
    model.eval()
    return tokenizer, model


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise PrefstreamError(f"device {name!r}: use cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise PrefstreamError("device cuda: no CUDA device is available here; use cpu")
    return torch.device(name)


def _check(prompts, k: int, temperature: float, top_p: float, max_new_tokens: int, batch_size: int) -> None:
    problems = [
        (not prompts, "no prompts given"),
        (k < 1, f"k must be at least 1 (got {k})"),
        (temperature < 0, f"temperature must be >= 0 (got {temperature})"),
        (not 0 < top_p <= 1, f"top_p must be in (0, 1] (got {top_p})"),
        (max_new_tokens < 1, f"max_new_tokens must be at least 1 (got {max_new_tokens})"),
        (batch_size < 1, f"batch_size must be at least 1 (got {batch_size})"),
    ]
    for failed, message in problems:
        if failed:
            raise PrefstreamError(message)
