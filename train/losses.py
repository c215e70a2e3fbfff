"""DPO, IPO and KTO losses as pure tensor functions, per example (the caller takes the mean).

Inputs are summed completion log-probs of the policy (``*_logps``) and of the frozen
reference (``ref_*``). Notation: ``ρ = logπ(y|x) − logπ_ref(y|x)`` (the log-ratio), ``β`` the
strength of the reference tie (``beta``). Rewards are the implicit rewards ``β·ρ``, detached.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class PairLoss(NamedTuple):
    losses: torch.Tensor  # (pairs,)
    chosen_rewards: torch.Tensor  # β·ρ_w, detached
    rejected_rewards: torch.Tensor  # β·ρ_l, detached


class UnpairedLoss(NamedTuple):
    losses: torch.Tensor  # (examples,), already weighted
    rewards: torch.Tensor  # β·ρ, detached
    kl: torch.Tensor  # the clamped reference point z0 that was used


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> PairLoss:
    """Sigmoid DPO (Rafailov et al. 2023, eq. 7), with conservative-DPO label smoothing ε:

    ``loss = −(1 − ε)·log σ(β·(ρ_w − ρ_l)) − ε·log σ(−β·(ρ_w − ρ_l))``

    ε is the assumed share of flipped labels; ε = 0 is TRL's ``loss_type="sigmoid"``.
    """
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    logits = beta * (chosen_ratio - rejected_ratio)
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return PairLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def ipo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> PairLoss:
    """IPO (Azar et al. 2023, eq. 17) with β as the paper's τ: ``loss = (h − 1/(2β))²``.

    * Length-normalised (TRL's form, the default): ``h = ρ_w / |y_w| − ρ_l / |y_l|`` with
      ``|y|`` the completion's token count (``chosen_tokens`` / ``rejected_tokens``), so the
      target margin does not depend on response length. The IPO authors confirmed to TRL
      that their reported results use this form.
    * The paper's form (pass no token counts): ``h = ρ_w − ρ_l`` on summed log-probs.
    """
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    if chosen_tokens is None or rejected_tokens is None:
        margin = chosen_ratio - rejected_ratio
    else:
        margin = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
    losses = (margin - 1 / (2 * beta)) ** 2
    return PairLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def kl_estimate(kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """KTO's reference point before clamping: mean log-ratio on mismatched (x, y') pairs, detached.

    Under data parallelism, average it across processes before :func:`kto_loss` (as TRL does).
    """
    return (kl_logps - ref_kl_logps).mean().detach()


def kto_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    labels: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> UnpairedLoss:
    """KTO (Ethayarajh et al. 2024, eq. 7) with ``z0 = max(kl, 0)`` (see :func:`kl_estimate`):

    * desirable (``label`` true):   ``λ_D·(1 − σ(β·(ρ − z0)))``
    * undesirable (``label`` false): ``λ_U·(1 − σ(β·(z0 − ρ)))``

    z0 carries no gradient, as in the paper and TRL.
    """
    z0 = kl.detach().clamp(min=0)
    ratio = logps - ref_logps
    labels = labels.bool()
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (ratio - z0)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - ratio)))
    return UnpairedLoss(torch.where(labels, desirable, undesirable), beta * ratio.detach(), z0)
