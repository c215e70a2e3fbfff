"""A small random-init Llama-style causal LM and a byte-level BPE tokenizer, built offline.

It exists so the trainers can be tried (and tested) without the Hugging Face hub: the saved
directory round-trips through ``AutoModelForCausalLM`` / ``AutoTokenizer`` like any local
model. The tokenizer is trained on a corpus (a built-in one of assistant-style text by
default) so token counts look like real text rather than bytes.

Example:
    >>> build_tiny_model("models/tiny")  # doctest: +SKIP
    PosixPath('models/tiny')
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable
from pathlib import Path

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]

# Each turn ends with EOS and nothing after it, so a rendered assistant completion ends with
# EOS (TRL's convention for plain text, reached here through the template).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}\n{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}\n{% endif %}"
)

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
        elif isinstance(value, list):  # chat messages
            yield from (m["content"] for m in value if isinstance(m, dict) and isinstance(m.get("content"), str))


def build_tokenizer(lines: list[str], vocab_size: int = 1024):
    """Train a byte-level BPE tokenizer (BOS added in front, chat template set) on ``lines``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = [PAD, BOS, EOS, *ROLE_TOKENS]
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
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def build_tiny_model(
    out_dir: str | Path,
    corpus: list[str] | None = None,
    seed: int = 0,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
) -> Path:
    """Save a random-init Llama-style causal LM and its tokenizer to ``out_dir``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    lines = corpus or default_corpus()
    # BPE training breaks ties by order: shuffle with the seed so the result depends on it alone.
    lines = random.Random(seed).sample(lines, len(lines))
    tokenizer = build_tokenizer(lines, vocab_size=vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
