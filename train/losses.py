"""DPO, IPO, KTO, SimPO and ORPO losses as pure tensor functions, per example (the caller takes the mean).

Inputs are summed completion log-probs of the policy (``*_logps``) and, where the objective
has one, of the frozen reference (``ref_*``). Notation: ``ρ = logπ(y|x) − logπ_ref(y|x)`` (the
log-ratio), ``β`` the strength of the reference tie (``beta``). Rewards are the implicit
rewards ``β·ρ`` (SimPO / ORPO: ``β·`` the mean per-token log-prob, as TRL logs them), detached.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class PairLoss(NamedTuple):
    losses: torch.Tensor  # (pairs,)
    chosen_rewards: torch.Tensor  # β·ρ_w, detached
    rejected_rewards: torch.Tensor  # β·ρ_l, detached
    nll: torch.Tensor | None = None  # ORPO's NLL term on the chosen completions, detached


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


def simpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    beta: float,
    gamma: float,
) -> PairLoss:
    """SimPO (Meng et al. 2024, eq. 6): reference-free, on mean per-token log-probs ``r̄``:

    ``loss = −log σ(β·(r̄_w − r̄_l) − γ)``

    γ is the target reward margin (TRL's ``simpo_gamma``); TRL's CPOTrainer with
    ``loss_type="simpo"``, ``cpo_alpha=0`` computes the same.
    """
    chosen = chosen_logps / chosen_tokens.clamp(min=1)
    rejected = rejected_logps / rejected_tokens.clamp(min=1)
    losses = -F.logsigmoid(beta * (chosen - rejected) - gamma)
    return PairLoss(losses, beta * chosen.detach(), beta * rejected.detach())


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 − exp(x))`` for x < 0, accurate at both ends (Mächler 2012)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    beta: float,
) -> PairLoss:
    """ORPO (Hong et al. 2024, eq. 6-7), reference-free, with λ as ``beta`` (TRL's name):

    ``loss = NLL(y_w) − λ·log σ(log odds(y_w) − log odds(y_l))``, with
    ``log odds(y) = r̄ − log(1 − exp(r̄))`` on mean per-token log-probs ``r̄``.

    The NLL is the mean over the batch's chosen completion tokens (token-weighted, like a
    cross-entropy), spread evenly over the pairs so the caller's mean gives the batch loss.
    TRL's ORPOTrainer takes its NLL over prompt and completion; here it covers the completion,
    as in the paper.
    """
    chosen = chosen_logps / chosen_tokens.clamp(min=1)
    rejected = rejected_logps / rejected_tokens.clamp(min=1)
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    nll = -chosen_logps.sum() / chosen_tokens.sum().clamp(min=1)
    losses = nll - beta * F.logsigmoid(log_odds)
    return PairLoss(losses, beta * chosen.detach(), beta * rejected.detach(), nll.detach())
