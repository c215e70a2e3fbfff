"""Summed completion log-probabilities of a causal LM, TRL's convention.

Row ``i``'s value is ``sum_t log p(x_t | x_<t)`` over its completion tokens (``completion_mask``),
prompt and padding excluded. The model is wrapped in a module so DistributedDataParallel can
wrap the whole computation (its gradient hooks fire only through a module's forward). Under
LoRA the adapters live inside the transformers modules, so scoring through them trains the
adapters, and ``model.disable_adapter()`` turns the same scorer into the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from .model_io import causal_lm


class CompletionLogps(nn.Module):
    """``forward(input_ids, attention_mask, completion_mask) -> (rows,)`` summed log-probs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model  # the policy as trained (peft-wrapped with LoRA): DDP sees its parameters
        config = causal_lm(model).config.get_text_config()
        # Model families that post-process logits (Cohere scales them, Gemma soft-caps them);
        # the head below is applied by hand, so it must apply these too.
        self.logit_scale = getattr(config, "logit_scale", None)
        self.softcap = getattr(config, "final_logit_softcapping", None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor):
        lm = causal_lm(self.model)
        hidden = lm.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = hidden.last_hidden_state[:, :-1]
        scored = completion_mask[:, 1:].bool()  # position t predicts token t + 1
        # Only completion positions go through the LM head: prompt and padding never become
        # logits, which are the largest tensors of a step for a big vocabulary.
        logits = lm.get_output_embeddings()(hidden[scored]).float()
        if self.logit_scale is not None:
            logits = logits * self.logit_scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        labels = input_ids[:, 1:][scored]
        token_logps = logits.gather(-1, labels[:, None]).squeeze(-1) - logits.logsumexp(-1)
        return token_logps.new_zeros(scored.shape).masked_scatter(scored, token_logps).sum(-1)
