"""Length-controlled evaluation metrics (pure) and the generation-length signal.

Reward accuracy (pairs): the share of test pairs whose chosen response gets the higher
implicit reward ``β·(logπ − logπ_ref)``. A tie counts as half, so a policy equal to its
reference (every reward 0, as at step 0) scores 0.5 — chance — rather than 0. It is
reported overall and separately on pairs where the chosen response is longer and where it
is shorter (in completion tokens; equal lengths fall in neither): a model that learned
"longer is better" instead of the preference scores high on one and low on the other.

Reward accuracy (KTO, unpaired): the share of test examples whose implicit reward has the
label's sign (> 0 desirable, < 0 undesirable; 0 counts half). Where the test split holds
desirable and undesirable completions of the same prompt, those combinations are also
scored as pairs, with the same length split.

Generation length: mean number of tokens (up to EOS, which is not counted) that greedy
decoding produces on the first test prompts, next to the reference model's figure. A
growing ratio is the classic length-inflation sign of preference tuning.
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


@torch.no_grad()
def generation_lengths(model, prompts: list[list[int]], max_new_tokens: int, eos_id: int, pad_id: int, autocast):
    """Greedy completion length (tokens before EOS) for each prompt, one prompt at a time."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    lengths = []
    for prompt in prompts:
        ids = torch.tensor([prompt], device=device)
        with autocast():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos_id,
                pad_token_id=pad_id,
            )
        new = out[0, ids.shape[1] :].tolist()
        lengths.append(new.index(eos_id) if eos_id in new else len(new))
    model.train(was_training)
    return lengths
