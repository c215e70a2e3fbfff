"""Tokenisation, batch planning and collation, with TRL's conventions.

* Plain text: the prompt and ``prompt + completion + EOS`` are tokenised; conversational: the
  chat template renders the prompt (with the generation prompt) and ``prompt + [assistant]``.
  The completion is whatever follows the longest common prefix of the two, as in TRL 1.x.
* Chat messages reach the template as they are (``name``, ``tool_calls``, ``tool_call_id``
  included), except that content given as a list of text parts is joined into one string.
  A template that refuses a conversation is a one-line :class:`TokenizerError`.
* A sequence longer than ``max_length`` keeps its start (the completion is cut); an example
  whose prompt alone fills ``max_length`` is dropped, since no completion token would remain.
* Batches are formed once (from a seeded permutation, or in order with ``shuffle=False``)
  and their order is reshuffled each epoch. Fixed groups keep KTO's KL pairs — each row's
  prompt with its batch neighbour's completion — equal to the ones whose reference
  log-probs were computed before training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import torch
from jinja2 import TemplateError

from prefstream.errors import PrefstreamError, TokenizerError


@dataclass(frozen=True)
class EncodedSplit:
    """One split, tokenised. ``completions`` maps a column (chosen, rejected, completion) to ids.

    Completions are kept whole; :func:`collate` cuts ``prompt + completion`` to max_length,
    so a KTO KL sequence (a prompt with another row's completion) is cut by its own length.
    """

    rows: list[int]  # indices of the kept source rows
    prompts: list[list[int]]
    completions: dict[str, list[list[int]]]
    truncated: int  # sequences longer than max_length
    dropped: int  # examples whose prompt alone fills max_length

    def __len__(self) -> int:
        return len(self.rows)


def encode_split(rows: list[dict], tokenizer, conversational: bool, columns: tuple[str, ...], max_length: int):
    """Tokenise ``rows`` (prompt + the completion ``columns``) the way TRL's trainers do."""
    prompts = [row["prompt"] for row in rows]
    if conversational:
        prompt_ids = chat_ids(tokenizer, prompts, add_generation_prompt=True)
        full_ids = {
            c: chat_ids(tokenizer, [p + row[c] for p, row in zip(prompts, rows, strict=True)]) for c in columns
        }
    else:
        eos = tokenizer.eos_token
        prompt_ids = tokenizer(prompts)["input_ids"]
        full_ids = {
            c: tokenizer(
                [p + (r[c] if r[c].endswith(eos) else r[c] + eos) for p, r in zip(prompts, rows, strict=True)]
            )["input_ids"]
            for c in columns
        }
    kept, kept_prompts, truncated, dropped = [], [], 0, 0
    completions = {c: [] for c in columns}
    for i, prompt in enumerate(prompt_ids):
        # The completion starts where prompt and prompt+completion diverge: chat templates and
        # BPE merges across the boundary can make the prompt alone tokenise differently.
        start = min(_common_prefix(prompt, full_ids[c][i]) for c in columns)
        if start >= max_length:
            dropped += 1
            continue
        kept.append(i)
        kept_prompts.append(prompt[:start])
        for c in columns:
            completions[c].append(full_ids[c][i][start:])
            truncated += len(full_ids[c][i]) > max_length
    return EncodedSplit(kept, kept_prompts, completions, truncated, dropped)


# What a chat template raises for a conversation it cannot render: raise_exception() and
# undefined fields (jinja2), str + list or None (TypeError), an empty conversation (ValueError).
_TEMPLATE_ERRORS = (TemplateError, TypeError, ValueError)


def chat_ids(tokenizer, conversations: list[list[dict]], add_generation_prompt: bool = False) -> list[list[int]]:
    """Token ids of each conversation rendered by the tokenizer's chat template.

    Raises :class:`TokenizerError` (one line, naming the fix) when there is no template or it
    refuses a conversation.
    """
    if tokenizer.chat_template is None:
        raise TokenizerError(
            "the prompts are chat messages but the model's tokenizer has no chat template; "
            "use a chat model, or plain-text prompts"
        )
    messages = [[template_message(m) for m in conversation] for conversation in conversations]
    try:
        out = tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
        )
    except _TEMPLATE_ERRORS:
        raise _refusal(tokenizer, messages, add_generation_prompt) from None
    return out["input_ids"]


def template_message(message: dict) -> dict:
    """``message`` as a chat template takes it: absent fields absent, text parts one string.

    A saved export stores messages as Arrow structs, which give every message every field any
    message has (``name``, ``tool_call_id``, ...), as None: those are dropped, so a template's
    ``'name' in message`` sees the message as it was sent. Templates of text-only models
    concatenate ``content`` as a string: a list of parts renders as its Python repr (Llama-3's)
    or fails (Qwen2's). Multimodal templates join text parts with nothing between them, so
    joining gives what they would render.
    """
    message = {key: value for key, value in message.items() if value is not None or key == "content"}
    content = message.get("content")
    if not isinstance(content, list):
        return message
    if not all(isinstance(part, dict) and part.get("type") == "text" for part in content):
        kinds = sorted({str(part.get("type")) if isinstance(part, dict) else type(part).__name__ for part in content})
        raise TokenizerError(
            f"a {message.get('role')!r} message has content parts of types {kinds}; a causal LM reads text "
            "only: export text-only messages"
        )
    return {**message, "content": "".join(part.get("text") or "" for part in content)}


def _refusal(tokenizer, conversations: list[list[dict]], add_generation_prompt: bool) -> TokenizerError:
    """Which conversation the template refused, and why, as one line."""
    for row, conversation in enumerate(conversations):
        reason = _render_error(tokenizer, conversation, add_generation_prompt)
        if reason is not None:
            break
    else:  # every conversation renders alone; the batch call failed some other way
        return TokenizerError("the model's chat template cannot render the export; check it with apply_chat_template")
    without_system = [m for m in conversation if m.get("role") != "system"]
    system_refused = _render_error(tokenizer, without_system, add_generation_prompt) is None
    if len(without_system) < len(conversation) and system_refused:
        return TokenizerError(
            f"the model's chat template rejects the system role (row {row}: {reason}); "
            "export without system messages or put their text in the first user message, "
            "or use a model whose template takes a system message"
        )
    roles = "/".join(dict.fromkeys(str(m.get("role")) for m in conversation))
    return TokenizerError(
        f"the model's chat template cannot render row {row} (roles {roles}: {reason}); "
        "export messages this model's template takes, or use a model whose template takes these"
    )


def _render_error(tokenizer, conversation: list[dict], add_generation_prompt: bool) -> str | None:
    """The first line of the template's complaint about ``conversation``, or None if it renders."""
    try:
        tokenizer.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt, tokenize=False)
    except _TEMPLATE_ERRORS as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def pad_token_id(tokenizer) -> int:
    """The id to pad with: the pad token, else EOS (TRL's fallback: padding is masked out anyway)."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    raise TokenizerError(
        "the model's tokenizer has neither a pad token nor an EOS token; set eos_token (and pad_token) "
        "in its tokenizer_config.json"
    )


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):  # stops at the shorter
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (rows, longest sequence in the batch), right-padded
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor  # 1 on completion tokens

    def to(self, device: torch.device) -> Batch:
        return Batch(
            *(t.to(device, non_blocking=True) for t in (self.input_ids, self.attention_mask, self.completion_mask))
        )

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


def collate(prompts: list[list[int]], completions: list[list[int]], pad_id: int, max_length: int) -> Batch:
    """``prompt + completion`` rows cut to ``max_length`` (start kept), right-padded to the longest."""
    sequences = [(p + c)[:max_length] for p, c in zip(prompts, completions, strict=True)]
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    completion = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (p, s) in enumerate(zip(prompts, sequences, strict=True)):
        input_ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention[row, : len(s)] = 1
        completion[row, len(p) : len(s)] = 1
    return Batch(input_ids, attention, completion)


def batch_plan(num_examples: int, batch_size: int, seed: int, shuffle: bool) -> list[list[int]]:
    """Fixed groups of example indices; a trailing group of one joins the previous group."""
    order = list(range(num_examples))
    if shuffle:
        random.Random(f"plan-{seed}").shuffle(order)
    groups = [order[i : i + batch_size] for i in range(0, num_examples, batch_size)]
    if len(groups) > 1 and len(groups[-1]) == 1:  # a lone row would be its own KTO KL pair
        tail = groups.pop()
        groups[-1] = groups[-1] + tail
    return groups


def kl_partners(plan: list[list[int]]) -> list[int]:
    """KTO's mismatched pairs: within each batch, row k takes row k-1's completion (row 0 the last's).

    This is TRL's rotation, ``(x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1})``: the completions
    used for the KL estimate are the batch's own, each paired with another prompt.
    """
    partners = [0] * sum(len(group) for group in plan)
    for group in plan:
        for k, i in enumerate(group):
            partners[i] = group[k - 1]
    return partners


def step_batches(
    plan: list[list[int]], step: int, grad_accum: int, world_size: int, rank: int, seed: int, shuffle: bool
) -> list[list[int]]:
    """The micro-batches this process runs for optimizer step ``step`` (0-based).

    Micro-batch ``t = (step * grad_accum + a) * world_size + rank`` of an endless stream of
    epochs; a function of the step alone, so a resumed run sees exactly the same batches.
    """
    out = []
    for a in range(grad_accum):
        t = (step * grad_accum + a) * world_size + rank
        epoch, position = divmod(t, len(plan))
        out.append(plan[_epoch_order(len(plan), epoch, seed, shuffle)[position]])
    return out


@lru_cache(maxsize=4)  # a step reads the same epoch's order once per micro-batch
def _epoch_order(num_groups: int, epoch: int, seed: int, shuffle: bool) -> tuple[int, ...]:
    order = list(range(num_groups))
    if shuffle:
        random.Random(f"epoch-{seed}-{epoch}").shuffle(order)
    return tuple(order)


def total_steps(num_groups: int, epochs: int, grad_accum: int, world_size: int, max_steps: int | None) -> int:
    if max_steps is not None:
        return max_steps
    steps = epochs * num_groups // (grad_accum * world_size)
    if steps == 0:
        raise PrefstreamError(
            f"the train split makes {num_groups} batches, fewer than one optimizer step "
            f"(grad-accum {grad_accum} x {world_size} processes); lower --batch-size or --grad-accum"
        )
    return steps
