"""Small random-init causal LMs and byte-level BPE tokenizers, built offline.

They exist so the trainers can be tried (and tested) without the Hugging Face hub: the saved
directory round-trips through ``AutoModelForCausalLM`` / ``AutoTokenizer`` like any local
model. The tokenizer is trained on a corpus (a built-in one of assistant-style text by
default) so token counts look like real text rather than bytes.

Families: ``tiny`` (prefstream's own Llama-style model and template) and copies of the
``llama3``, ``qwen2`` and ``gemma2`` instruct models — their architecture class, special
tokens, BOS / EOS / pad conventions and verbatim chat templates, at toy size. Only the
tokenizer's algorithm differs (byte-level BPE for all; Gemma's real one is SentencePiece).

Example:
    >>> build_tiny_model("models/qwen2", family="qwen2")  # doctest: +SKIP
    PosixPath('models/qwen2')
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prefstream.errors import PrefstreamError

from . import chat_templates


@dataclass(frozen=True)
class Family:
    """What a tiny model copies from a real one: special tokens, their roles, the chat template."""

    chat_template: str
    bos: str | None  # put in front of plain text when set (Llama-3 and Gemma-2 do, Qwen2 does not)
    eos: str  # the tokenizer's EOS: plain-text completions end with it
    pad: str | None  # None, like Llama-3's tokenizer: no pad token
    extra: tuple[str, ...]  # the other special tokens the template uses
    stop: tuple[str, ...]  # generation_config.eos_token_id: generation stops at any of these


FAMILIES = {
    "tiny": Family(
        chat_templates.TINY, bos="<|bos|>", eos="<|eos|>", pad="<|pad|>",
        extra=("<|system|>", "<|user|>", "<|assistant|>"), stop=("<|eos|>",),
    ),
    "llama3": Family(
        chat_templates.LLAMA3, bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None,
        extra=("<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"), stop=("<|end_of_text|>", "<|eot_id|>"),
    ),
    "qwen2": Family(
        chat_templates.QWEN2, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
        extra=("<|im_start|>",), stop=("<|im_end|>", "<|endoftext|>"),
    ),
    "gemma2": Family(
        chat_templates.GEMMA2, bos="<bos>", eos="<eos>", pad="<pad>",
        extra=("<start_of_turn>", "<end_of_turn>"), stop=("<eos>", "<end_of_turn>"),
    ),
}  # fmt: skip

_VERBS = [
    "fix", "build", "clean", "paint", "repair", "plan", "cook", "grow", "write", "test", "install",
    "configure", "debug", "deploy", "measure", "organise", "replace", "design", "train", "prune", "brew",
    "bake", "sharpen", "assemble", "insulate", "wire", "refactor", "translate", "sketch", "upgrade",
]  # fmt: skip
_NOUNS = [
    "bike", "garden", "fence", "report", "cake", "server", "shelf", "budget", "poem", "lamp", "database",
    "kitchen", "website", "roof", "engine", "spreadsheet", "guitar", "window", "keyboard", "tomato",
    "network", "letter", "bridge", "printer", "sofa", "camera", "script", "pipeline", "greenhouse",
    "telescope",
]  # fmt: skip
_STEPS = [
    "gather the tools you need",
    "read the instructions carefully",
    "measure twice and cut once",
    "start with the simplest part",
    "check your work as you go",
    "ask a friend to review it",
    "take a short break and come back",
    "write down what you changed",
    "switch off the power before touching anything",
    "make a backup so you can undo mistakes",
    "compare the result with a known good example",
    "clean up the workspace when you finish",
]
_REMARKS = [
    "Thanks, that was helpful!",
    "Could you explain that again, more slowly?",
    "I'm not sure what you mean. Can you rephrase the question?",
    "Here is a short summary of the main points.",
    "That depends on your budget and the time you have.",
    "Unfortunately I cannot help with that request.",
    "Please describe the problem in more detail.",
    "Great question! Let me walk you through it step by step.",
    "Remember to wear gloves and safety glasses.",
    "If it still does not work, contact a professional.",
]


def default_corpus() -> list[str]:
    """Plausible assistant and user text: how-to answers, refusals, small talk."""
    lines = list(_REMARKS)
    for i, (verb, noun) in enumerate(itertools.product(_VERBS, _NOUNS)):
        first, then = _STEPS[i % len(_STEPS)], _STEPS[(i * 7 + 3) % len(_STEPS)]
        lines.append(f"How do I {verb} a {noun}?")
        lines.append(f"Sure, here is how to {verb} a {noun}: first {first}. Then {then}.")
        lines.append(f"I don't know about {noun}s. Maybe ask someone else.")
        lines.append(f"My {noun} stopped working again. Can you help me {verb} it? {_REMARKS[i % len(_REMARKS)]}")
    return lines


def corpus_lines(path: str | Path) -> list[str]:
    """Text lines from a file: JSONL feedback events (their text fields) or plain lines."""
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        raw = raw.strip()
        if not raw:
            continue
        try:
            event = json.loads(raw)
        except json.JSONDecodeError:
            lines.append(raw)
            continue
        if not isinstance(event, dict):
            lines.append(raw)
            continue
        lines += list(_event_texts(event))
    return lines


def _event_texts(event: dict) -> Iterable[str]:
    for key in ("prompt", "response", "response_a", "response_b", "completion", "chosen", "rejected"):
        value = event.get(key)
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):  # chat messages: content a string or a list of text parts
            for message in value:
                content = message.get("content") if isinstance(message, dict) else None
                if isinstance(content, list):
                    content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
                if isinstance(content, str) and content:
                    yield content


def build_tokenizer(lines: list[str], vocab_size: int = 1024, family: str = "tiny"):
    """Train a byte-level BPE tokenizer with ``family``'s special tokens and chat template on ``lines``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    spec = FAMILIES[family]
    special = [t for t in (spec.pad, spec.bos, spec.eos) if t is not None] + list(spec.extra)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(lines, trainer=trainer)
    if spec.bos is not None:
        bos_id = backend.token_to_id(spec.bos)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{spec.bos} $A", pair=f"{spec.bos} $A $B", special_tokens=[(spec.bos, bos_id)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=spec.bos,
        eos_token=spec.eos,
        pad_token=spec.pad,
        additional_special_tokens=list(spec.extra),
        chat_template=spec.chat_template,
        model_max_length=2048,
    )


def _config(family: str, tokenizer, hidden_size: int, num_layers: int, num_heads: int):
    """The family's transformers config at toy size; grouped-query attention as in the real models."""
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config

    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 4,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "max_position_embeddings": 2048,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    kv_heads = max(1, num_heads // 2)
    if family == "tiny":
        return LlamaConfig(**common, num_key_value_heads=num_heads, tie_word_embeddings=False)
    if family == "llama3":
        rope = {"rope_type": "default", "rope_theta": 500000.0}
        return LlamaConfig(**common, num_key_value_heads=kv_heads, tie_word_embeddings=False, rope_parameters=rope)
    if family == "qwen2":
        rope = {"rope_type": "default", "rope_theta": 1000000.0}
        return Qwen2Config(**common, num_key_value_heads=kv_heads, tie_word_embeddings=True, rope_parameters=rope)
    head_dim = hidden_size // num_heads
    return Gemma2Config(**common, num_key_value_heads=kv_heads, head_dim=head_dim, query_pre_attn_scalar=head_dim)


def build_tiny_model(
    out_dir: str | Path,
    corpus: list[str] | None = None,
    seed: int = 0,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    family: str = "tiny",
    overwrite: bool = False,
) -> Path:
    """Save a random-init causal LM of ``family`` and its tokenizer to ``out_dir``.

    The model is written to a temporary folder beside ``out_dir`` and renamed into place, so
    a failure leaves nothing half-written. An existing model is replaced only with ``overwrite``.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if family not in FAMILIES:
        raise PrefstreamError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    out = Path(out_dir)
    _check_target(out, overwrite)
    staging = _staging_dir(out)
    try:
        lines = corpus or default_corpus()
        # BPE training breaks ties by order: shuffle with the seed so the result depends on it alone.
        lines = random.Random(seed).sample(lines, len(lines))
        tokenizer = build_tokenizer(lines, vocab_size=vocab_size, family=family)
        config = _config(family, tokenizer, hidden_size, num_layers, num_heads)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config).to(torch.float32)
        stop_ids = [tokenizer.convert_tokens_to_ids(t) for t in FAMILIES[family].stop]
        model.generation_config.update(
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=stop_ids[0] if len(stop_ids) == 1 else stop_ids,
        )
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _follow_umask(staging)
        _replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
    return out


def _check_target(out: Path, overwrite: bool) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise PrefstreamError(f"--out {out} exists and is not a directory; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / "config.json").is_file():
        raise PrefstreamError(f"--out {out} is a non-empty directory that holds no model; choose another --out")
    if not overwrite:
        raise PrefstreamError(f"--out {out} already holds a model; pass --overwrite to replace it, or choose another")


def _staging_dir(out: Path) -> Path:
    """An empty folder beside ``out`` (same file system, so the final rename is atomic)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as exc:
        raise PrefstreamError(f"cannot write --out {out} ({exc.strerror}); choose a writable directory") from None
    return staging


def _follow_umask(folder: Path) -> None:
    """Give ``folder`` and its files the modes the user's umask gives new ones.

    mkdtemp makes a 0700 folder and transformers writes the weights through a 0600 temporary
    file; without this the model would be unreadable to the user's group.
    """
    mask = os.umask(0)  # the only portable way to read the umask; restored at once
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _replace(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    if out.is_dir() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
        os.replace(out, old / out.name)
        try:
            os.replace(staging, out)
        except OSError:
            os.replace(old / out.name, out)  # put the old model back rather than leave nothing
            raise
        shutil.rmtree(old)
    else:
        os.replace(staging, out)  # onto nothing, or onto an empty folder
