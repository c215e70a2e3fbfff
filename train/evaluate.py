"""Length-controlled evaluation metrics (pure).

Reward accuracy (pairs): the share of test pairs whose chosen response gets the higher
implicit reward ``β·(logπ − logπ_ref)``. A tie counts as half, so a policy equal to its
reference (every reward 0, as at step 0) scores 0.5 — chance — rather than 0. It is
reported overall and separately on pairs where the chosen response is longer and where it
is shorter (in completion tokens; equal lengths fall in neither): a model that learned
"longer is better" instead of the preference scores high on one and low on the other. The
length-controlled accuracy is the mean of those two (each length stratum weighs the same),
or the overall accuracy where one stratum is empty.

Reward accuracy (KTO, unpaired): the share of test examples whose implicit reward has the
label's sign (> 0 desirable, < 0 undesirable; 0 counts half). Where the test split holds
desirable and undesirable completions of the same prompt, those combinations are also
scored as pairs, with the same length split.
"""

from __future__ import annotations

from collections import defaultdict

import torch


def _share(score: torch.Tensor) -> float | None:
    return float(score.mean()) if score.numel() else None


def pair_accuracies(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
) -> dict[str, float | int | None]:
    """Accuracy overall and on pairs where the chosen response is the longer / the shorter."""
    score = (chosen_rewards > rejected_rewards).float() + 0.5 * (chosen_rewards == rejected_rewards).float()
    longer = chosen_lengths > rejected_lengths
    shorter = chosen_lengths < rejected_lengths
    return {
        "rewards/accuracies": _share(score),
        "rewards/accuracies_chosen_longer": _share(score[longer]),
        "rewards/accuracies_chosen_shorter": _share(score[shorter]),
        "pairs_chosen_longer": int(longer.sum()),
        "pairs_chosen_shorter": int(shorter.sum()),
    }


def length_controlled(accuracies: dict) -> float | None:
    """Mean of the chosen-longer and chosen-shorter accuracies (overall where one is missing)."""
    longer, shorter = accuracies["rewards/accuracies_chosen_longer"], accuracies["rewards/accuracies_chosen_shorter"]
    if longer is None or shorter is None:
        return accuracies["rewards/accuracies"]
    return (longer + shorter) / 2


def label_accuracy(rewards: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of examples whose implicit reward sign matches the label; 0 counts half."""
    labels = labels.bool()
    agree = torch.where(labels, rewards > 0, rewards < 0).float()
    return float((agree + 0.5 * (rewards == 0).float()).mean())


def same_prompt_pairs(prompt_keys: list[str], labels: list[bool]) -> tuple[list[int], list[int]]:
    """Every (desirable, undesirable) index combination that shares a prompt."""
    groups: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for i, (key, label) in enumerate(zip(prompt_keys, labels, strict=True)):
        groups[key][0 if label else 1].append(i)
    good, bad = [], []
    for desirable, undesirable in groups.values():
        for i in desirable:
            for j in undesirable:
                good.append(i)
                bad.append(j)
    return good, bad
