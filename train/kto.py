"""KTO on unpaired thumbs (pairs are unpaired automatically): the whole run, top to bottom.

settings -> device / processes -> data -> reference log-probs (cached) -> policy ->
optimizer -> eval helper -> one loop with logging, evaluation, checkpoints -> final/.

KTO's reference point z0 is the KL between policy and reference, estimated on each batch
from mismatched pairs — every prompt with its neighbour's completion (see
:func:`prefstream.train.data.kl_partners`) — averaged over processes, clamped at zero and
detached, as in the KTO paper and TRL.

Run with ``prefstream train kto --data EXPORT --model MODEL --out RUN``; several processes
with ``torchrun --nproc_per_node N -m prefstream.train kto ...``.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import get_scheduler

from . import checkpoint, reference
from .data import batch_plan, collate, encode_split, kl_partners, step_batches, total_steps
from .evaluate import generation_lengths, label_accuracy, pair_accuracies, same_prompt_pairs
from .export import kto_weights, load_export, unpaired_rows
from .logprobs import CompletionLogps, sequence_logps
from .losses import UnpairedLoss, kl_estimate, kto_loss
from .model_io import check_causal_lm, load_model, load_tokenizer
from .run_record import MetricsLog, finish_run, start_record, write_run_record
from .runtime import setup_runtime, teardown
from .settings import TrainSettings


def train(settings: TrainSettings, resume: bool = False) -> dict:
    """Train on ``settings.data``'s thumbs; returns the final metrics (also in RUN_DIR/run.json)."""
    started = time.perf_counter()
    # ---- device and processes -----------------------------------------------------------------
    runtime = setup_runtime(settings.device, settings.seed)
    try:
        out = Path(settings.out)
        resume_from = checkpoint.open_run(runtime, out, resume, settings.to_dict())

        # ---- data -----------------------------------------------------------------------------
        check_causal_lm(settings.model)
        export = load_export(settings.data)
        train_rows, test_rows = unpaired_rows(export, runtime.notice)
        tokenizer = load_tokenizer(settings.model)
        pad = tokenizer.pad_token_id
        train_set = encode_split(train_rows, tokenizer, export.conversational, ("completion",), settings.max_length)
        test_set = encode_split(test_rows, tokenizer, export.conversational, ("completion",), settings.max_length)
        train_labels = torch.tensor([train_rows[i]["label"] for i in train_set.rows], dtype=torch.bool)
        test_labels = torch.tensor([test_rows[i]["label"] for i in test_set.rows], dtype=torch.bool)
        recommended = kto_weights(export)
        desirable_weight = settings.desirable_weight or recommended[0]
        undesirable_weight = settings.undesirable_weight or recommended[1]
        plan = batch_plan(len(train_set), settings.batch_size, settings.seed, settings.shuffle)
        test_plan = batch_plan(len(test_set), settings.batch_size, settings.seed, shuffle=False)
        train_partners, test_partners = kl_partners(plan), kl_partners(test_plan)
        steps = total_steps(len(plan), settings.epochs, settings.grad_accum, runtime.world_size, settings.max_steps)
        warmup = math.ceil(settings.warmup_ratio * steps)
        examples_per_step = settings.batch_size * settings.grad_accum * runtime.world_size
        runtime.print(
            f"kto: {len(train_set)} train ({int(train_labels.sum())} desirable) / {len(test_set)} test examples "
            f"from export {export.export_id}; weights desirable {desirable_weight:g}, undesirable "
            f"{undesirable_weight:g}; {steps} steps of {examples_per_step} examples ({settings.batch_size} per "
            f"batch x {settings.grad_accum} accumulated x {runtime.world_size} processes), {warmup} warm-up steps, "
            f"device {runtime.device}"
        )
        truncated = {"train": train_set.truncated, "test": test_set.truncated}
        dropped = {"train": train_set.dropped, "test": test_set.dropped}
        if any(truncated.values()) or any(dropped.values()):
            runtime.notice(
                f"notice: {truncated['train']} train / {truncated['test']} test sequences were longer than "
                f"--max-length {settings.max_length} and lost their end; {dropped['train']} train / "
                f"{dropped['test']} test examples were dropped because the prompt alone fills it"
            )
        eval_prompts = test_set.prompts[: settings.eval_generations]

        # ---- reference log-probs: computed once and cached; no reference model while training -
        model_hash = reference.model_hash(settings.model)
        sequences = {}
        for split, encoded, partners in (("train", train_set, train_partners), ("test", test_set, test_partners)):
            completions = encoded.completions["completion"]
            sequences[f"{split}/completion"] = (encoded.prompts, completions)
            sequences[f"{split}/kl"] = (encoded.prompts, [completions[p] for p in partners])
        cache_key = {
            "export": export.content_hash,
            "model": model_hash,
            "max_length": settings.max_length,
            # The KL pairs depend on the batch grouping, hence on batch size, seed and shuffling.
            "layout": f"unpaired; kl batches {settings.batch_size} seed {settings.seed} shuffle {settings.shuffle}; "
            f"unpaired from {export.kind}; generations {len(eval_prompts)} x {settings.max_new_tokens}",
            "precision": "bf16" if runtime.device.type == "cuda" else "fp32",
        }
        compute = functools.partial(
            reference.compute_reference, settings.model, runtime, tokenizer, sequences, eval_prompts,
            settings.max_length, settings.max_new_tokens, 2 * settings.batch_size,
        )  # fmt: skip
        ref, cache_hit = reference.cached(runtime, settings.reference_cache_dir, cache_key, compute)
        runtime.print(
            f"reference log-probs {'loaded from' if cache_hit else 'computed into'} {settings.reference_cache_dir}"
        )

        # ---- policy ---------------------------------------------------------------------------
        policy = load_model(resume_from or settings.model, runtime.device)
        policy.train()
        parameters = sum(p.numel() for p in policy.parameters())
        runtime.print(f"policy from {resume_from or settings.model}: {parameters / 1e6:.2f}M parameters")
        scorer = CompletionLogps(policy)
        model = DistributedDataParallel(scorer) if runtime.distributed else scorer
        loss_fn = functools.partial(
            kto_loss, beta=settings.beta, desirable_weight=desirable_weight, undesirable_weight=undesirable_weight
        )

        # ---- optimizer ------------------------------------------------------------------------
        optimizer = torch.optim.AdamW(policy.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        scheduler = get_scheduler("linear", optimizer, num_warmup_steps=warmup, num_training_steps=steps)
        step = checkpoint.load_training_state(resume_from, optimizer, scheduler) if resume_from else 0

        # ---- evaluation on the test split (main process) ---------------------------------------
        test_completions = test_set.completions["completion"]
        test_lengths = torch.tensor([len(c) for c in test_completions])
        good, bad = same_prompt_pairs([json.dumps(test_rows[i]["prompt"]) for i in test_set.rows], test_labels.tolist())

        def evaluate() -> dict:
            policy.eval()
            logps, _ = sequence_logps(
                scorer, test_set.prompts, test_completions, pad, settings.max_length, 2 * settings.batch_size, runtime
            )
            kl_logps, _ = sequence_logps(
                scorer, test_set.prompts, [test_completions[p] for p in test_partners], pad, settings.max_length,
                2 * settings.batch_size, runtime,
            )  # fmt: skip
            lengths = generation_lengths(
                policy, eval_prompts, settings.max_new_tokens, tokenizer.eos_token_id, pad, runtime.autocast
            )
            policy.train()
            # z0 per test batch, as in training
            losses, rewards, kls = torch.empty(len(test_set)), torch.empty(len(test_set)), []
            for idx in test_plan:
                kl = kl_estimate(kl_logps[idx], ref["test/kl"][idx])
                result = loss_fn(logps[idx], ref["test/completion"][idx], test_labels[idx], kl)
                losses[idx], rewards[idx] = result.losses, result.rewards
                kls.append(float(result.kl))
            metrics = {
                "loss": float(losses.mean()),
                **unpaired_metrics(UnpairedLoss(losses, rewards, torch.tensor(kls).mean()), logps, test_labels),
                "rewards/accuracies": label_accuracy(rewards, test_labels),
            }
            if good:  # desirable and undesirable completions of one prompt, scored as pairs
                paired = pair_accuracies(rewards[good], rewards[bad], test_lengths[good], test_lengths[bad])
                metrics.update({f"pairs/{k.removeprefix('rewards/')}": v for k, v in paired.items()})
            metrics["generation_length"] = sum(lengths) / len(lengths) if lengths else None
            metrics["ref_generation_length"] = float(ref["test/generation_lengths"].mean()) if lengths else None
            return {f"eval/{k}": v for k, v in metrics.items()}

        # ---- run record -----------------------------------------------------------------------
        log = MetricsLog(out / "metrics.jsonl", resume_step=step if resume_from else None)
        record = start_record(
            out,
            step if resume_from else None,
            kind=settings.kind,
            export={"path": str(export.path), "export_id": export.export_id, "content_hash": export.content_hash},
            model={"path": settings.model, "hash": model_hash},
            settings=settings.to_dict(),
            data={
                "train_examples": len(train_set),
                "train_desirable": int(train_labels.sum()),
                "test_examples": len(test_set),
                "truncated": truncated,
                "dropped": dropped,
                "unpaired_from": export.kind if export.kind != "kto" else None,
            },
            kto_weights={"desirable": desirable_weight, "undesirable": undesirable_weight},
            total_steps=steps,
            warmup_steps=warmup,
            processes=runtime.world_size,
            device=str(runtime.device),
            reference_cache={"dir": str(settings.reference_cache_dir), "hit": cache_hit},
        )
        if runtime.is_main:
            write_run_record(out, record)

        def eval_and_checkpoint() -> dict:
            metrics = {}
            if runtime.is_main:
                metrics = {"step": step, **evaluate()}
                log.write(metrics)
                runtime.print(
                    f"eval step {step}: loss {metrics['eval/loss']:.4f}, "
                    f"accuracy {metrics['eval/rewards/accuracies']:.3f}, kl {metrics['eval/kl']:.4f}, "
                    f"generation length {_fmt(metrics['eval/generation_length'])} "
                    f"(reference {_fmt(metrics['eval/ref_generation_length'])})"
                )
                if step > 0:
                    checkpoint.save_checkpoint(out, step, policy, tokenizer, optimizer, scheduler, settings.to_dict())
            runtime.barrier()
            return metrics

        # ---- training loop --------------------------------------------------------------------
        train_seconds = eval_seconds = 0.0
        train_tokens = 0  # this process's non-padding tokens in training forwards
        last_train, last_eval = {}, {}
        if step == 0:
            t0 = time.perf_counter()
            last_eval = eval_and_checkpoint()
            eval_seconds += time.perf_counter() - t0
        train_completions = train_set.completions["completion"]
        while step < steps:
            t0 = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            micro_batches = step_batches(
                plan, step, settings.grad_accum, runtime.world_size, runtime.rank, settings.seed, settings.shuffle
            )
            losses, rewards, labels, logps_seen, kls = [], [], [], [], []
            tokens = 0
            for i, idx in enumerate(micro_batches):
                prompts = [train_set.prompts[j] for j in idx]
                batch = collate(prompts, [train_completions[j] for j in idx], pad, settings.max_length)
                kl_batch = collate(
                    prompts, [train_completions[train_partners[j]] for j in idx], pad, settings.max_length
                )
                batch, kl_batch = batch.to(runtime.device), kl_batch.to(runtime.device)
                tokens += batch.tokens
                # z0 needs no gradient: a no-grad forward of the bare module (no DDP hooks)
                with torch.no_grad(), runtime.autocast():
                    kl_logps = scorer(kl_batch.input_ids, kl_batch.attention_mask, kl_batch.completion_mask).float()
                kl = runtime.mean(kl_estimate(kl_logps, ref["train/kl"][idx].to(runtime.device)))
                if runtime.distributed:  # all-reduce gradients on the step's last micro-batch only
                    model.require_backward_grad_sync = i == len(micro_batches) - 1
                with runtime.autocast():
                    logps = model(batch.input_ids, batch.attention_mask, batch.completion_mask).float()
                label = train_labels[idx].to(runtime.device)
                result = loss_fn(logps, ref["train/completion"][idx].to(runtime.device), label, kl)
                loss = result.losses.mean()
                (loss / settings.grad_accum).backward()
                losses.append(loss.detach())
                rewards.append(result.rewards)
                labels.append(label)
                logps_seen.append(logps.detach())
                kls.append(result.kl)
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - t0
            train_seconds += elapsed
            train_tokens += tokens

            if step % settings.log_every == 0 or step == steps:
                # Gathering and float() wait for the device: done on logged steps only.
                all_rewards = runtime.gather(torch.cat(rewards))
                all_labels = runtime.gather(torch.cat(labels))
                last_train = {
                    "step": step,
                    "epoch": step * examples_per_step / len(train_set),
                    "loss": float(runtime.mean(torch.stack(losses).mean())),
                    **unpaired_metrics(
                        UnpairedLoss(torch.stack(losses), all_rewards, torch.stack(kls).mean()),
                        runtime.gather(torch.cat(logps_seen)),
                        all_labels,
                    ),
                    # TRL-style strict share: a zero reward matches neither label
                    "rewards/accuracies": float(
                        torch.where(all_labels, all_rewards > 0, all_rewards < 0).float().mean()
                    ),
                    "grad_norm": float(grad_norm),
                    "lr": lr,
                    "tokens_per_s": float(runtime.gather(torch.tensor([tokens])).sum()) / elapsed,
                }
                if runtime.is_main:
                    log.write(last_train)
                runtime.print(
                    f"step {step}/{steps}: loss {last_train['loss']:.4f}, kl {last_train['kl']:.4f}, "
                    f"margin {_fmt(last_train['rewards/margins'])}, accuracy {last_train['rewards/accuracies']:.2f}, "
                    f"lr {lr:.2e}, {last_train['tokens_per_s']:.0f} tokens/s, {elapsed * 1000:.0f} ms"
                )
            if step % settings.eval_every == 0 or step == steps:
                t0 = time.perf_counter()
                last_eval = eval_and_checkpoint()
                eval_seconds += time.perf_counter() - t0

        # ---- final model and run record -------------------------------------------------------
        return finish_run(
            runtime, out, policy, tokenizer, record, {**last_train, **last_eval}, step=step, started=started,
            train_seconds=train_seconds, train_tokens=train_tokens, eval_seconds=eval_seconds,
        )
    finally:
        teardown(runtime)


def unpaired_metrics(result: UnpairedLoss, logps: torch.Tensor, labels: torch.Tensor) -> dict[str, float | None]:
    """TRL's KTO diagnostics: rewards and log-probs by label (None when a label is absent), kl."""
    labels = labels.bool()

    def mean(values: torch.Tensor) -> float | None:
        return float(values.mean()) if values.numel() else None

    chosen, rejected = mean(result.rewards[labels]), mean(result.rewards[~labels])
    return {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": None if chosen is None or rejected is None else chosen - rejected,
        "logps/chosen": mean(logps[labels]),
        "logps/rejected": mean(logps[~labels]),
        "kl": float(result.kl),
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
