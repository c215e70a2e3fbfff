"""Each objective: its loss (a pure function in :mod:`.losses`) and what its batch needs.

* ``dpo``, ``ipo``: pairs, scored ``[chosen; rejected]`` in one forward, against cached
  reference log-probs.
* ``simpo``, ``orpo``: pairs, reference-free (no reference is loaded or cached).
* ``kto``: unpaired thumbs; the reference point z0 comes from each batch's mismatched pairs
  (every prompt with its batch neighbour's completion, :func:`.data.kl_partners`), scored
  without gradients and averaged over processes, as in the KTO paper and TRL.

:func:`batch_loss` serves training and evaluation alike; it returns the mean loss and
per-example records (detached) from which :func:`summary` derives TRL's diagnostics.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .data import EncodedSplit, batch_plan, encode_split, kl_partners
from .evaluate import label_accuracy, length_controlled, pair_accuracies, same_prompt_pairs
from .export import Export, kto_weights, paired_rows, unpaired_rows
from .losses import PairLoss, dpo_loss, ipo_loss, kl_estimate, kto_loss, orpo_loss, simpo_loss

PAIR = ("chosen", "rejected")


@dataclass(frozen=True)
class Objective:
    kind: str
    reference: bool  # tied to a frozen reference, whose log-probs are computed before training

    @property
    def paired(self) -> bool:
        return self.kind != "kto"

    @property
    def columns(self) -> tuple[str, ...]:
        """The completion columns a batch scores: KTO adds its mismatched ``kl`` completions."""
        return PAIR if self.paired else ("completion", "kl")

    @property
    def unit(self) -> str:
        return "pairs" if self.paired else "examples"


OBJECTIVES = {
    "dpo": Objective("dpo", reference=True),
    "ipo": Objective("ipo", reference=True),
    "kto": Objective("kto", reference=True),
    "simpo": Objective("simpo", reference=False),
    "orpo": Objective("orpo", reference=False),
}


@dataclass(frozen=True)
class Split:
    """One split, tokenised, with what its objective needs beside the text."""

    encoded: EncodedSplit
    completions: dict[str, list[list[int]]]  # by column (KTO: completion and its kl partners)
    plan: list[list[int]]  # batches; KTO's KL pairs never cross them
    labels: torch.Tensor | None  # KTO: desirable or not
    prompt_keys: list[str]  # to find a prompt's other completions (KTO pair accuracies)

    @property
    def prompts(self) -> list[list[int]]:
        return self.encoded.prompts

    def __len__(self) -> int:
        return len(self.encoded)


def load_splits(objective: Objective, export: Export, tokenizer, settings, notice: Callable[[str], None]):
    """(train, test) Splits; the test split is cut to ``settings.eval_max_rows`` rows before tokenising."""
    if objective.paired:
        train_rows, test_rows = paired_rows(export, objective.kind)
    else:
        train_rows, test_rows = unpaired_rows(export, notice)
    test_rows = test_rows[: settings.eval_max_rows]
    splits = []
    for rows, shuffle in ((train_rows, settings.shuffle), (test_rows, False)):
        text_columns = PAIR if objective.paired else ("completion",)
        encoded = encode_split(rows, tokenizer, export.conversational, text_columns, settings.max_length)
        plan = batch_plan(len(encoded), settings.batch_size, settings.seed, shuffle)
        completions = dict(encoded.completions)
        labels = None
        if not objective.paired:
            partners = kl_partners(plan)
            completions["kl"] = [completions["completion"][p] for p in partners]
            labels = torch.tensor([rows[i]["label"] for i in encoded.rows], dtype=torch.bool)
        keys = [json.dumps(rows[i]["prompt"]) for i in encoded.rows]
        splits.append(Split(encoded, completions, plan, labels, keys))
    return splits[0], splits[1]


def loss_weights(objective: Objective, export: Export, settings) -> dict[str, float]:
    """KTO's desirable / undesirable weights (the export's recommendation unless set)."""
    if objective.paired:
        return {}
    desirable, undesirable = kto_weights(export)
    return {
        "desirable": settings.desirable_weight or desirable,
        "undesirable": settings.undesirable_weight or undesirable,
    }


def pair_loss(settings, chosen, rejected, ref_chosen, ref_rejected, chosen_tokens, rejected_tokens) -> PairLoss:
    """The configured pair loss on summed completion log-probs (reference ones None when reference-free)."""
    beta = settings.beta
    if settings.kind == "dpo":
        return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta, settings.label_smoothing)
    if settings.kind == "ipo" and settings.ipo_form == "paper":
        return ipo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    if settings.kind == "ipo":
        return ipo_loss(chosen, rejected, ref_chosen, ref_rejected, beta, chosen_tokens, rejected_tokens)
    if settings.kind == "simpo":
        return simpo_loss(chosen, rejected, chosen_tokens, rejected_tokens, beta, settings.simpo_gamma)
    return orpo_loss(chosen, rejected, chosen_tokens, rejected_tokens, beta)


Score = Callable[[list[list[int]], list[list[int]], bool], tuple[torch.Tensor, torch.Tensor]]


def batch_loss(objective: Objective, settings, split: Split, idx: list[int], score: Score,
               ref: dict[str, torch.Tensor] | None, weights: dict[str, float],
               reduce: Callable[[torch.Tensor], torch.Tensor] = lambda kl: kl):  # fmt: skip
    """Mean loss over rows ``idx`` and their records; ``score(prompts, completions, grad)`` runs the model.

    ``ref`` maps a column to this split's reference log-probs; ``reduce`` averages KTO's KL
    estimate across processes in training.
    """
    prompts = [split.prompts[j] for j in idx]
    column = lambda name: [split.completions[name][j] for j in idx]  # noqa: E731
    ref_of = lambda name: ref[name][idx] if ref is not None else None  # noqa: E731
    if objective.paired:
        # [chosen; rejected]: one forward, then chunk(2)
        logps, tokens = score(prompts * 2, column("chosen") + column("rejected"), True)
        ref_chosen, ref_rejected = (r.to(logps.device) if r is not None else None for r in map(ref_of, PAIR))
        chosen, rejected = logps.chunk(2)
        chosen_tokens, rejected_tokens = tokens.chunk(2)
        result = pair_loss(settings, chosen, rejected, ref_chosen, ref_rejected, chosen_tokens, rejected_tokens)
        records = {
            "losses": result.losses, "chosen_rewards": result.chosen_rewards,
            "rejected_rewards": result.rejected_rewards, "chosen_logps": chosen, "rejected_logps": rejected,
            "chosen_tokens": chosen_tokens, "rejected_tokens": rejected_tokens,
        }  # fmt: skip
        if result.nll is not None:
            records["nll"] = result.nll.reshape(1)
    else:
        # z0 needs no gradient: the mismatched completions are scored without one
        kl_logps, _ = score(prompts, column("kl"), False)
        kl = reduce(kl_estimate(kl_logps, ref_of("kl").to(kl_logps.device)))
        logps, tokens = score(prompts, column("completion"), True)
        labels = split.labels[idx].to(logps.device)
        result = kto_loss(
            logps, ref_of("completion").to(logps.device), labels, kl, settings.beta,
            weights["desirable"], weights["undesirable"],
        )  # fmt: skip
        records = {
            "losses": result.losses, "rewards": result.rewards, "labels": labels, "logps": logps,
            "tokens": tokens, "kl": result.kl.reshape(1),
        }  # fmt: skip
    records = {k: v.detach().float().cpu() for k, v in records.items()}
    records["index"] = torch.tensor(idx)
    return result.losses.mean(), records


def summary(objective: Objective, records: dict[str, torch.Tensor], split: Split | None = None) -> dict:
    """TRL's diagnostics from (gathered) records; with the test ``split``, the length-controlled accuracies too.

    Training reports TRL's strict accuracy (a tie is a miss); evaluation counts a tie as
    half, so a policy equal to its reference scores chance (see :mod:`.evaluate`).
    """
    metrics: dict = {"loss": float(records["losses"].mean())}
    if objective.paired:
        chosen, rejected = records["chosen_rewards"], records["rejected_rewards"]
        metrics.update({
            "rewards/chosen": float(chosen.mean()),
            "rewards/rejected": float(rejected.mean()),
            "rewards/margins": float((chosen - rejected).mean()),
            "rewards/accuracies": float((chosen > rejected).float().mean()),
            "logps/chosen": float(records["chosen_logps"].mean()),
            "logps/rejected": float(records["rejected_logps"].mean()),
        })  # fmt: skip
        if "nll" in records:
            metrics["nll_loss"] = float(records["nll"].mean())
        if split is not None:
            paired = pair_accuracies(chosen, rejected, records["chosen_tokens"], records["rejected_tokens"])
            metrics.update(paired)
            metrics["accuracy_length_controlled"] = length_controlled(paired)
        return metrics
    labels, rewards = records["labels"].bool(), records["rewards"]
    mean = lambda values: float(values.mean()) if values.numel() else None  # noqa: E731
    good, bad = mean(rewards[labels]), mean(rewards[~labels])
    metrics.update({
        "rewards/chosen": good,
        "rewards/rejected": bad,
        "rewards/margins": None if good is None or bad is None else good - bad,
        # TRL-style strict share: a zero reward matches neither label
        "rewards/accuracies": float(torch.where(labels, rewards > 0, rewards < 0).float().mean()),
        "logps/chosen": mean(records["logps"][labels]),
        "logps/rejected": mean(records["logps"][~labels]),
        "kl": float(records["kl"].mean()),
    })  # fmt: skip
    if split is not None:
        metrics["rewards/accuracies"] = label_accuracy(rewards, labels)
        metrics["accuracy_length_controlled"] = metrics["rewards/accuracies"]
        # desirable and undesirable completions of one prompt, scored as pairs
        order = records["index"].argsort()
        rewards, tokens, index = rewards[order], records["tokens"][order], records["index"][order]
        good, bad = same_prompt_pairs([split.prompt_keys[i] for i in index.tolist()], labels[order].tolist())
        if good:
            paired = pair_accuracies(rewards[good], rewards[bad], tokens[good], tokens[bad])
            metrics.update({f"pairs/{k.removeprefix('rewards/')}": v for k, v in paired.items()})
            metrics["accuracy_length_controlled"] = length_controlled(paired)
    return metrics


def concat(records: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.cat([r[key] for r in records]) for key in records[0]}
