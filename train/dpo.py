"""DPO and IPO on preference pairs: the whole run, top to bottom.

settings -> device / processes -> data -> reference log-probs (cached) -> policy ->
optimizer -> eval helper -> one loop with logging, evaluation, checkpoints -> final/.

Run with ``prefstream train dpo|ipo --data EXPORT --model MODEL --out RUN``; several
processes with ``torchrun --nproc_per_node N -m prefstream.train dpo ...``.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import get_scheduler

from . import checkpoint, reference
from .data import batch_plan, collate, encode_split, step_batches, total_steps
from .evaluate import generation_lengths, pair_accuracies
from .export import load_export, paired_rows
from .logprobs import CompletionLogps, sequence_logps
from .losses import PairLoss, dpo_loss, ipo_loss
from .model_io import check_causal_lm, load_model, load_tokenizer
from .run_record import MetricsLog, finish_run, start_record, write_run_record
from .runtime import setup_runtime, teardown
from .settings import TrainSettings


def train(settings: TrainSettings, resume: bool = False) -> dict:
    """Train on ``settings.data``'s pairs; returns the final metrics (also in RUN_DIR/run.json)."""
    started = time.perf_counter()
    # ---- device and processes -----------------------------------------------------------------
    runtime = setup_runtime(settings.device, settings.seed)
    try:
        out = Path(settings.out)
        resume_from = checkpoint.open_run(runtime, out, resume, settings.to_dict())

        # ---- data -----------------------------------------------------------------------------
        check_causal_lm(settings.model)
        export = load_export(settings.data)
        train_rows, test_rows = paired_rows(export, settings.kind)
        tokenizer = load_tokenizer(settings.model)
        pad = tokenizer.pad_token_id
        columns = ("chosen", "rejected")
        train_set = encode_split(train_rows, tokenizer, export.conversational, columns, settings.max_length)
        test_set = encode_split(test_rows, tokenizer, export.conversational, columns, settings.max_length)
        plan = batch_plan(len(train_set), settings.batch_size, settings.seed, settings.shuffle)
        steps = total_steps(len(plan), settings.epochs, settings.grad_accum, runtime.world_size, settings.max_steps)
        warmup = math.ceil(settings.warmup_ratio * steps)
        pairs_per_step = settings.batch_size * settings.grad_accum * runtime.world_size
        runtime.print(
            f"{settings.kind}: {len(train_set)} train / {len(test_set)} test pairs from export {export.export_id}; "
            f"{steps} steps of {pairs_per_step} pairs ({settings.batch_size} per batch x {settings.grad_accum} "
            f"accumulated x {runtime.world_size} processes), {warmup} warm-up steps, device {runtime.device}"
        )
        truncated = {"train": train_set.truncated, "test": test_set.truncated}
        dropped = {"train": train_set.dropped, "test": test_set.dropped}
        if any(truncated.values()) or any(dropped.values()):
            runtime.notice(
                f"notice: {truncated['train']} train / {truncated['test']} test sequences were longer than "
                f"--max-length {settings.max_length} and lost their end; {dropped['train']} train / "
                f"{dropped['test']} test pairs were dropped because the prompt alone fills it"
            )
        eval_prompts = test_set.prompts[: settings.eval_generations]

        # ---- reference log-probs: computed once and cached; no reference model while training -
        model_hash = reference.model_hash(settings.model)
        sequences = {
            f"{split}/{column}": (encoded.prompts, encoded.completions[column])
            for split, encoded in (("train", train_set), ("test", test_set))
            for column in columns
        }
        cache_key = {
            "export": export.content_hash,
            "model": model_hash,
            "max_length": settings.max_length,
            "layout": f"pairs; generations {len(eval_prompts)} x {settings.max_new_tokens}",
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
        loss_fn = functools.partial(pair_loss, settings)

        # ---- optimizer ------------------------------------------------------------------------
        optimizer = torch.optim.AdamW(policy.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        scheduler = get_scheduler("linear", optimizer, num_warmup_steps=warmup, num_training_steps=steps)
        step = checkpoint.load_training_state(resume_from, optimizer, scheduler) if resume_from else 0

        # ---- evaluation on the test split (main process) ---------------------------------------
        test_lengths = [torch.tensor([len(c) for c in test_set.completions[column]]) for column in columns]

        def evaluate() -> dict:
            policy.eval()
            logps, tokens = sequence_logps(
                scorer, test_set.prompts * 2, test_set.completions["chosen"] + test_set.completions["rejected"],
                pad, settings.max_length, 2 * settings.batch_size, runtime,
            )  # fmt: skip
            chosen, rejected = logps.chunk(2)
            result = loss_fn(chosen, rejected, ref["test/chosen"], ref["test/rejected"], *tokens.chunk(2))
            lengths = generation_lengths(
                policy, eval_prompts, settings.max_new_tokens, tokenizer.eos_token_id, pad, runtime.autocast
            )
            policy.train()
            metrics = {
                "loss": float(result.losses.mean()),
                **pair_metrics(result, chosen, rejected),
                **pair_accuracies(result.chosen_rewards, result.rejected_rewards, *test_lengths),
                "generation_length": sum(lengths) / len(lengths) if lengths else None,
                "ref_generation_length": float(ref["test/generation_lengths"].mean()) if lengths else None,
            }
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
                "train_pairs": len(train_set),
                "test_pairs": len(test_set),
                "truncated": truncated,
                "dropped": dropped,
            },
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
                    f"accuracy {metrics['eval/rewards/accuracies']:.3f} "
                    f"(chosen longer {_fmt(metrics['eval/rewards/accuracies_chosen_longer'])}, "
                    f"chosen shorter {_fmt(metrics['eval/rewards/accuracies_chosen_shorter'])}), "
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
        while step < steps:
            t0 = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            micro_batches = step_batches(
                plan, step, settings.grad_accum, runtime.world_size, runtime.rank, settings.seed, settings.shuffle
            )
            losses, chosen_rewards, rejected_rewards, chosen_logps, rejected_logps = [], [], [], [], []
            tokens = 0
            for i, idx in enumerate(micro_batches):
                batch = collate(
                    [train_set.prompts[j] for j in idx] * 2,  # [chosen; rejected]: one forward, then chunk(2)
                    [train_set.completions["chosen"][j] for j in idx]
                    + [train_set.completions["rejected"][j] for j in idx],
                    pad,
                    settings.max_length,
                ).to(runtime.device)
                tokens += batch.tokens
                if runtime.distributed:  # all-reduce gradients on the step's last micro-batch only
                    model.require_backward_grad_sync = i == len(micro_batches) - 1
                with runtime.autocast():
                    logps = model(batch.input_ids, batch.attention_mask, batch.completion_mask).float()
                chosen, rejected = logps.chunk(2)
                result = loss_fn(
                    chosen,
                    rejected,
                    ref["train/chosen"][idx].to(runtime.device),
                    ref["train/rejected"][idx].to(runtime.device),
                    *batch.completion_mask.sum(-1).chunk(2),
                )
                loss = result.losses.mean()
                (loss / settings.grad_accum).backward()
                losses.append(loss.detach())
                chosen_rewards.append(result.chosen_rewards)
                rejected_rewards.append(result.rejected_rewards)
                chosen_logps.append(chosen.detach())
                rejected_logps.append(rejected.detach())
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
                gathered = PairLoss(
                    torch.stack(losses),
                    runtime.gather(torch.cat(chosen_rewards)),
                    runtime.gather(torch.cat(rejected_rewards)),
                )
                last_train = {
                    "step": step,
                    "epoch": step * pairs_per_step / len(train_set),
                    "loss": float(runtime.mean(gathered.losses.mean())),
                    **pair_metrics(
                        gathered, runtime.gather(torch.cat(chosen_logps)), runtime.gather(torch.cat(rejected_logps))
                    ),
                    "rewards/accuracies": float((gathered.chosen_rewards > gathered.rejected_rewards).float().mean()),
                    "grad_norm": float(grad_norm),
                    "lr": lr,
                    "tokens_per_s": float(runtime.gather(torch.tensor([tokens])).sum()) / elapsed,
                }
                if runtime.is_main:
                    log.write(last_train)
                runtime.print(
                    f"step {step}/{steps}: loss {last_train['loss']:.4f}, margin {last_train['rewards/margins']:.4f}, "
                    f"accuracy {last_train['rewards/accuracies']:.2f}, lr {lr:.2e}, "
                    f"{last_train['tokens_per_s']:.0f} tokens/s, {elapsed * 1000:.0f} ms"
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


def pair_loss(
    settings: TrainSettings,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
) -> PairLoss:
    """The configured loss: DPO, IPO length-normalised (TRL's) or IPO as in the paper."""
    if settings.kind == "dpo":
        return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, settings.beta, settings.label_smoothing)
    if settings.ipo_form == "paper":
        return ipo_loss(chosen, rejected, ref_chosen, ref_rejected, settings.beta)
    return ipo_loss(chosen, rejected, ref_chosen, ref_rejected, settings.beta, chosen_tokens, rejected_tokens)


def pair_metrics(result: PairLoss, chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> dict[str, float]:
    """TRL's diagnostics (rewards and log-probs), means over the pairs."""
    return {
        "rewards/chosen": float(result.chosen_rewards.mean()),
        "rewards/rejected": float(result.rejected_rewards.mean()),
        "rewards/margins": float((result.chosen_rewards - result.rejected_rewards).mean()),
        "logps/chosen": float(chosen_logps.mean()),
        "logps/rejected": float(rejected_logps.mean()),
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
