"""Summed completion log-probabilities of a causal LM, TRL's convention.

Row ``i``'s value is ``sum_t log p(x_t | x_<t)`` over its completion tokens (``completion_mask``),
prompt and padding excluded. The model is wrapped in a module so DistributedDataParallel can
wrap the whole computation (its gradient hooks fire only through a module's forward).
"""

from __future__ import annotations

import torch
from torch import nn

from .data import collate


class CompletionLogps(nn.Module):
    """``forward(input_ids, attention_mask, completion_mask) -> (rows,)`` summed log-probs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        config = model.config.get_text_config()
        # Model families that post-process logits (Cohere scales them, Gemma soft-caps them);
        # the head below is applied by hand, so it must apply these too.
        self.logit_scale = getattr(config, "logit_scale", None)
        self.softcap = getattr(config, "final_logit_softcapping", None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor):
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = hidden.last_hidden_state[:, :-1]
        scored = completion_mask[:, 1:].bool()  # position t predicts token t + 1
        # Only completion positions go through the LM head: prompt and padding never become
        # logits, which are the largest tensors of a step for a big vocabulary.
        logits = self.model.get_output_embeddings()(hidden[scored]).float()
        if self.logit_scale is not None:
            logits = logits * self.logit_scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        labels = input_ids[:, 1:][scored]
        token_logps = logits.gather(-1, labels[:, None]).squeeze(-1) - logits.logsumexp(-1)
        return token_logps.new_zeros(scored.shape).masked_scatter(scored, token_logps).sum(-1)


@torch.no_grad()
def sequence_logps(
    scorer: CompletionLogps,
    prompts: list[list[int]],
    completions: list[list[int]],
    pad_id: int,
    max_length: int,
    batch_size: int,
    runtime,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs and completion token counts of many sequences, without gradients.

    Sequences are batched by length so padding stays low; results come back in input order.
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(completions[i]))
    logps = torch.empty(len(prompts), dtype=torch.float32)
    tokens = torch.empty(len(prompts), dtype=torch.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate([prompts[i] for i in idx], [completions[i] for i in idx], pad_id, max_length)
        tokens[idx] = batch.completion_mask.sum(-1).float()
        batch = batch.to(runtime.device)
        with runtime.autocast():
            logps[idx] = scorer(batch.input_ids, batch.attention_mask, batch.completion_mask).float().cpu()
    return logps, tokens
