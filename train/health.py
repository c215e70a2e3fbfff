"""Run health at each evaluation: drift against the reference and the failure modes it signals.

* ``logps/chosen_change``, ``logps/rejected_change``: mean change of the test completions'
  summed log-probs (nats) against the reference's (reference-free objectives: against the
  policy at step 0, which is the same model). Both falling is *likelihood displacement*
  (Razin et al. 2024): the margin grows while the chosen answer itself gets less likely.
* ``kl_ref``: KL(π_ref ‖ π) in nats per completion, estimated on completions the reference
  sampled for test prompts (:func:`kl_estimate`).
* ``generation_length`` against ``ref_generation_length`` (greedy, tokens): a growing ratio is
  *length inflation*, the classic length exploit of preference tuning.

Thresholds come from the config file's ``[train.health]`` table.
"""

from __future__ import annotations

import torch

DISPLACEMENT = "likelihood_displacement"
INFLATION = "length_inflation"


def kl_estimate(policy_logps: torch.Tensor, ref_logps: torch.Tensor) -> float:
    """KL(π_ref ‖ π) from completions sampled by the reference: the mean of ``r − 1 − log r``, ``r = π/π_ref``.

    Unbiased (``E[r] = 1`` under the reference) and never negative, unlike the plain mean of
    ``−log r`` on a few samples (Schulman's k3 estimator).
    """
    log_ratio = policy_logps.double() - ref_logps.double()
    return float((log_ratio.exp() - 1 - log_ratio).mean())


def failure_modes(metrics: dict, displacement_nats: float, inflation_pct: float) -> list[str]:
    """The failure modes whose signal in ``metrics`` (one eval's, unprefixed) crosses its threshold."""
    found = []
    chosen, rejected = metrics.get("logps/chosen_change"), metrics.get("logps/rejected_change")
    if chosen is not None and rejected is not None and max(chosen, rejected) < -displacement_nats:
        found.append(DISPLACEMENT)
    length, ref_length = metrics.get("generation_length"), metrics.get("ref_generation_length")
    if length is not None and ref_length and length > ref_length * (1 + inflation_pct / 100):
        found.append(INFLATION)
    return found


def describe(mode: str, metrics: dict, displacement_nats: float, inflation_pct: float) -> str:
    """One line saying what crossed which threshold."""
    if mode == DISPLACEMENT:
        return (
            f"{DISPLACEMENT}: chosen log-prob {metrics['logps/chosen_change']:+.2f} nats, rejected "
            f"{metrics['logps/rejected_change']:+.2f} nats against the reference (threshold -{displacement_nats:g})"
        )
    ratio = metrics["generation_length"] / metrics["ref_generation_length"] - 1
    return (
        f"{INFLATION}: generations {ratio:+.0%} against the reference's "
        f"({metrics['generation_length']:.1f} vs {metrics['ref_generation_length']:.1f} tokens; "
        f"threshold +{inflation_pct:g}%)"
    )
