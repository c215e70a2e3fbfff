"""One training loop for every objective (DPO, IPO, KTO, SimPO, ORPO): the whole run, top to bottom.

checks (before any work) -> device / processes -> data -> policy (LoRA, FSDP2) -> reference
log-probs (cached; every process shares the pass) -> optimizer -> eval helper (health, early
stop) -> one loop with logging, evaluation, checkpoints -> final/.

Run with ``prefstream train KIND --data EXPORT --model MODEL --out RUN``; several processes
with ``torchrun --nproc_per_node N -m prefstream.train KIND ...`` (DDP, or FSDP2 with --fsdp).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from prefstream.errors import PrefstreamError

from . import checkpoint, health, reference
from .data import collate, step_batches, total_steps
from .export import load_export
from .logprobs import CompletionLogps
from .model_io import is_lora, load_policy, load_tokenizer, lora_targets, merge_adapter, resolve_model, save_model
from .model_io import shard
from .objectives import OBJECTIVES, batch_loss, concat, load_splits, loss_weights, summary
from .run_record import MetricsLog, now, start_record, write_run_record
from .runtime import check_runtime, setup_runtime, teardown
from .scoring import generate, lengths, score, shared_map
from .settings import TrainSettings


class TrainingInterrupted(PrefstreamError):
    """Ctrl-C: the run saved what it could and says how to continue."""

    exit_code = 130


def train(settings: TrainSettings, resume: bool = False) -> dict:
    """Train ``settings.kind`` on ``settings.data``; returns the final metrics (also in RUN_DIR/run.json)."""
    started = time.perf_counter()
    objective = OBJECTIVES[settings.kind]
    out = Path(settings.out)

    # ---- checks: one line each, before any work and before anything is written to --out -------
    device, dtype = check_runtime(settings.device, settings.fsdp, settings.dtype)
    source = resolve_model(settings.model)
    targets = lora_targets(source.base, settings.lora_targets) if settings.lora_r and not source.adapter else None
    checkpoint.check_out(out, resume)  # every process checks before any joins the group (no race)
    export = load_export(settings.data)
    tokenizer = load_tokenizer(source.base)
    runtime = setup_runtime(device, dtype, settings.fsdp, settings.seed)
    try:
        # ---- data ---------------------------------------------------------------------------------
        train_set, test_set = load_splits(objective, export, tokenizer, settings, runtime.notice)
        for name, split in (("train", train_set), ("test", test_set)):
            if not len(split):
                raise PrefstreamError(
                    f"every {name} example's prompt fills --max-length {settings.max_length} (tokens) on its own; "
                    "raise --max-length"
                )
        steps = total_steps(
            len(train_set.plan), settings.epochs, settings.grad_accum, runtime.world_size, settings.max_steps
        )
        warmup = math.ceil(settings.warmup_ratio * steps)
        per_step = settings.batch_size * settings.grad_accum * runtime.world_size
        truncated = {"train": train_set.encoded.truncated, "test": test_set.encoded.truncated}
        dropped = {"train": train_set.encoded.dropped, "test": test_set.encoded.dropped}
        if any(truncated.values()) or any(dropped.values()):
            runtime.notice(
                f"notice: {truncated['train']} train / {truncated['test']} test sequences were longer than "
                f"--max-length {settings.max_length} tokens and lost their end; {dropped['train']} train / "
                f"{dropped['test']} test {objective.unit} were dropped because the prompt alone fills it"
            )
        weights = loss_weights(objective, export, settings)
        eval_prompts = test_set.prompts[: settings.eval_generations]
        # the reference scores only the train rows the run's steps will reach
        used = {"train": rows_used(train_set.plan, steps, settings, runtime.world_size),
                "test": list(range(len(test_set)))}  # fmt: skip
        runtime.print(
            f"{settings.kind}: {len(train_set)} train / {len(test_set)} test {objective.unit} from export "
            f"{export.export_id}; {steps} steps of {per_step} {objective.unit} ({settings.batch_size} per batch x "
            f"{settings.grad_accum} accumulated x {runtime.world_size} processes{', FSDP2' if runtime.fsdp else ''}), "
            f"{warmup} warm-up steps, max length {settings.max_length} tokens, device {runtime.device}, "
            f"weights {str(dtype).removeprefix('torch.')}"
        )
        runtime.barrier()  # every process has checked --out before the main one creates it
        resume_from = checkpoint.open_run(runtime, out, resume, settings.to_dict())

        # ---- policy (with LoRA, also the reference: its adapters disabled) ------------------------
        policy = load_policy(source, settings, runtime, targets)
        scorer = CompletionLogps(policy)
        if runtime.fsdp:
            shard(scorer, runtime.mesh)
        trainable = [p for p in policy.parameters() if p.requires_grad]
        runtime.print(
            f"policy from {settings.model}: {sum(p.numel() for p in policy.parameters()) / 1e6:.2f}M parameters, "
            f"{sum(p.numel() for p in trainable) / 1e6:.2f}M trained"
            + (f" (LoRA r={policy.peft_config['default'].r})" if is_lora(policy) else "")
        )

        # ---- reference log-probs: computed once, before the first step, and cached ----------------
        model_hash = reference.model_hash(source.base, settings.reference_cache_dir)
        ref, cache_hit = None, None
        if objective.reference:
            key = {
                "export": export.content_hash, "model": model_hash, "max_length": settings.max_length,
                "precision": str(dtype), "layout": layout(objective, settings, used, len(eval_prompts)),
            }  # fmt: skip
            path = reference.cache_path(settings.reference_cache_dir, key)
            ref = reference.load(path, runtime)
            cache_hit = ref is not None
            if ref is None:
                # The policy has not moved yet: it is the reference (LoRA: with adapters disabled).
                with policy.disable_adapter() if is_lora(policy) else contextlib.nullcontext():
                    ref = reference.reference_pass(
                        scorer, objective, {"train": train_set, "test": test_set}, used, eval_prompts,
                        tokenizer, settings, runtime,
                    )  # fmt: skip
                reference.store(path, key, ref, runtime)
            runtime.print(f"reference log-probs {'loaded from' if cache_hit else 'computed into'} {path}")
        ref_train = {c: ref[f"train/{c}"] for c in objective.columns} if ref else None
        ref_test = {c: ref[f"test/{c}"] for c in objective.columns} if ref else None
        samples = reference.unpack(ref, "sample") if ref else []

        # ---- optimizer ----------------------------------------------------------------------------
        model = DistributedDataParallel(scorer) if runtime.distributed and not runtime.fsdp else scorer
        optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(linear_schedule, warmup, steps))
        step, best = 0, {"value": None, "step": None, "stale": 0}
        if resume_from:
            state = checkpoint.load_checkpoint(resume_from, policy, optimizer, scheduler)
            step, best = state["step"], state["best"]
            runtime.print(f"resumed from {resume_from} at step {step}")
        # a resumed run drops the lines its predecessor wrote past the checkpoint
        log = MetricsLog(out / "metrics.jsonl", resume_step=step if resume_from and runtime.is_main else None)

        tokens_seen = {"n": 0}  # non-padding tokens of this process's training forwards

        def forward(prompts, completions, grad: bool):
            """Summed completion log-probs (and token counts) of one batch; no gradient unless ``grad``."""
            batch = collate(prompts, completions, tokenizer.pad_token_id, settings.max_length).to(runtime.device)
            if grad and policy.training:
                tokens_seen["n"] += batch.tokens
            module = model if grad and policy.training else scorer  # DDP hooks only on gradient forwards
            with contextlib.nullcontext() if grad else torch.no_grad(), runtime.autocast():
                logps = module(batch.input_ids, batch.attention_mask, batch.completion_mask).float()
            return logps, batch.completion_mask.sum(-1).float()

        # ---- evaluation: every process takes a share of the batches and the generations -----------
        baseline = log.first_eval()  # the starting model's eval (step 0): the drift baseline
        eval_batches = test_set.plan if not objective.paired else chunks(len(test_set), 4 * settings.batch_size)
        eos = tokenizer.eos_token_id

        def evaluate() -> dict:
            policy.eval()
            with runtime.inference():
                records = shared_map(
                    eval_batches,
                    lambda idx: batch_loss(objective, settings, test_set, idx, forward, ref_test, weights)[1],
                    "evaluating", runtime,
                )  # fmt: skip
                metrics = summary(objective, records, test_set)
                generated = generate(
                    scorer, eval_prompts, settings.max_new_tokens, eos, tokenizer.pad_token_id, runtime
                )
                if samples:
                    logps, _ = score(
                        scorer, eval_prompts, samples, list(range(len(samples))), tokenizer.pad_token_id,
                        settings.max_length, 8 * settings.batch_size, runtime, "scoring reference samples",
                    )  # fmt: skip
                    metrics["kl_ref"] = health.kl_estimate(logps, ref["sample/logps"])
            policy.train()
            if generated:
                length, at_budget = lengths(generated, eos)
                metrics["generation_length"] = float(length.mean())
                metrics["generation_at_budget"] = at_budget / len(generated)
            start = baseline or {f"eval/{k}": v for k, v in metrics.items()}  # step 0 is its own baseline
            for column in ("chosen", "rejected"):
                if metrics[f"logps/{column}"] is not None and start[f"eval/logps/{column}"] is not None:
                    metrics[f"logps/{column}_change"] = metrics[f"logps/{column}"] - start[f"eval/logps/{column}"]
            metrics["ref_generation_length"] = start.get("eval/generation_length")
            modes = health.failure_modes(metrics, settings.displacement_nats, settings.inflation_pct)
            return {**{f"eval/{k}": v for k, v in metrics.items()}, "eval/failure_modes": modes}

        # ---- run record ---------------------------------------------------------------------------
        record = start_record(
            out,
            step if resume_from else None,
            kind=settings.kind,
            export={"path": str(export.path), "export_id": export.export_id, "content_hash": export.content_hash,
                    "format": export.manifest.get("format", "hf")},
            model={"path": settings.model, "base": str(source.base), "hash": model_hash,
                   "adapter": str(source.adapter) if source.adapter else None, "lora_targets": targets},
            settings=settings.to_dict(),
            data={f"{split}_{objective.unit}": len(s) for split, s in (("train", train_set), ("test", test_set))}
            | {"truncated": truncated, "dropped": dropped, "reference_train_rows": len(used["train"]),
               "unpaired_from": export.kind if not objective.paired and export.kind != "kto" else None},
            kto_weights=weights or None,
            total_steps=steps,
            warmup_steps=warmup,
            processes=runtime.world_size,
            parallelism="fsdp2" if runtime.fsdp else "ddp" if runtime.distributed else None,
            device=str(runtime.device),
            reference_cache={"dir": str(settings.reference_cache_dir), "hit": cache_hit},
        )  # fmt: skip
        record.setdefault("failure_modes", {})
        if runtime.is_main:
            write_run_record(out, record)
    except KeyboardInterrupt:
        teardown(runtime)
        raise TrainingInterrupted(
            "interrupted before the first step, so there is nothing to resume; run again"
        ) from None
    except BaseException:
        teardown(runtime)
        raise

    early = "eval/" + settings.early_stop.removeprefix("eval/") if settings.early_stop else None

    def eval_and_checkpoint() -> tuple[dict, bool]:
        """Evaluate, log, keep the best model (early stop) and checkpoint; returns the metrics and whether to stop."""
        metrics = {"step": step, **evaluate()}
        if runtime.is_main:
            log.write(metrics)
        runtime.print(eval_line(metrics, settings))
        for mode in metrics["eval/failure_modes"]:
            if mode not in record["failure_modes"]:
                detail = health.describe(mode, strip(metrics), settings.displacement_nats, settings.inflation_pct)
                record["failure_modes"][mode] = {"first_step": step, "detail": detail}
                runtime.notice(f"warning: step {step}: {detail}")
        stop = False
        if early:
            if early not in metrics or metrics[early] is None:
                names = ", ".join(sorted(k.removeprefix("eval/") for k, v in metrics.items() if isinstance(v, float)))
                raise PrefstreamError(f"--early-stop {settings.early_stop}: no such eval metric; choose one of {names}")
            value = metrics[early] if not lower_is_better(early) else -metrics[early]
            if best["value"] is None or value > best["value"]:
                best.update(value=value, step=step, stale=0)
                save_model(policy, tokenizer, out / ".best", runtime)
            else:
                best["stale"] += 1
                stop = best["stale"] >= settings.patience
        if 0 < step < steps and not stop:  # a finished run leaves final/, not a checkpoint to resume
            checkpoint.save_checkpoint(out, step, policy, optimizer, scheduler, settings.to_dict(), runtime,
                                       {"best": best})  # fmt: skip
        return metrics, stop

    # ---- training loop ------------------------------------------------------------------------------
    train_seconds = eval_seconds = 0.0
    last_train, last_eval, stopped = {}, {}, False
    try:
        if step == 0:
            t0 = time.perf_counter()
            last_eval, stopped = eval_and_checkpoint()
            baseline = {k: v for k, v in last_eval.items() if k.startswith("eval/")}
            eval_seconds += time.perf_counter() - t0
        while step < steps and not stopped:
            t0 = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            tokens_seen["n"] = 0
            micro_batches = step_batches(
                train_set.plan, step, settings.grad_accum, runtime.world_size, runtime.rank, settings.seed,
                settings.shuffle,
            )  # fmt: skip
            seen = []
            for i, idx in enumerate(micro_batches):
                last = i == len(micro_batches) - 1
                if runtime.fsdp:  # reduce-scatter gradients on the step's last micro-batch only
                    scorer.set_requires_gradient_sync(last)
                elif runtime.distributed:  # all-reduce likewise
                    model.require_backward_grad_sync = last
                loss, records = batch_loss(objective, settings, train_set, idx, forward, ref_train, weights,
                                           reduce=runtime.mean)  # fmt: skip
                (loss / settings.grad_accum).backward()
                seen.append(records)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - t0
            train_seconds += elapsed

            if step % settings.log_every == 0 or step == steps:
                # Gathering and float() wait for the device: done on logged steps only.
                gathered = {k: runtime.gather(v) for k, v in concat(seen).items()}
                tokens = float(runtime.gather(torch.tensor([tokens_seen["n"]])).sum())
                grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
                last_train = {
                    "step": step,
                    "epoch": step * per_step / len(train_set),
                    **summary(objective, gathered),
                    "grad_norm": float(grad_norm),
                    "lr": lr,
                    "tokens_per_s": tokens / elapsed,
                }
                if runtime.is_main:
                    log.write(last_train)
                runtime.print(
                    f"step {step}/{steps}: loss {last_train['loss']:.4f}, margin {fmt(last_train['rewards/margins'])}, "
                    f"accuracy {last_train['rewards/accuracies']:.2f}, lr {lr:.2e}, "
                    f"{last_train['tokens_per_s']:.0f} tokens/s, {elapsed * 1000:.0f} ms"
                )
            if step % settings.eval_every == 0 or step == steps:
                t0 = time.perf_counter()
                last_eval, stopped = eval_and_checkpoint()
                eval_seconds += time.perf_counter() - t0

        # ---- final model and run record -----------------------------------------------------------
        final = out / "final"
        if early and runtime.is_main:
            os.replace(out / ".best", final)  # the best evaluation's model, not the last
        elif not early:
            save_model(policy, tokenizer, final, runtime)
        if settings.merge and runtime.is_main:
            merge_adapter(source, final, final / "merged", tokenizer, dtype)
        final_metrics = {**last_train, **last_eval}
        if runtime.is_main:
            record.update(
                status="stopped_early" if stopped else "finished",
                ended_at=now(),
                steps=step,
                best={"metric": early, "step": best["step"]} if early else None,
                timing={
                    "total_s": time.perf_counter() - started,
                    "train_s": train_seconds,  # optimizer steps only: no set-up, evaluation or checkpoints
                    "eval_s": eval_seconds,
                },
                final_metrics=final_metrics,
            )
            write_run_record(out, record)
        runtime.print(end_summary(out, step, steps, stopped, best, early, record, train_seconds))
        return final_metrics
    except KeyboardInterrupt:
        raise interrupted(out, step, record, policy, optimizer, scheduler, settings, runtime, best) from None
    except BaseException as exc:
        if runtime.is_main:
            record.update(status="failed", ended_at=now(), steps=step, error=f"{type(exc).__name__}: {exc}")
            write_run_record(out, record)
        raise
    finally:
        teardown(runtime)


def interrupted(out, step, record, policy, optimizer, scheduler, settings, runtime, best) -> TrainingInterrupted:
    """Ctrl-C: save a checkpoint (one process; several may stand at different points), mark the run."""
    latest = checkpoint.latest_checkpoint(out)
    saved_step = int(latest.name.split("-")[1]) if latest else 0
    if not runtime.distributed and step > saved_step:
        latest = checkpoint.save_checkpoint(out, step, policy, optimizer, scheduler, settings.to_dict(), runtime,
                                            {"best": best})  # fmt: skip
    if runtime.is_main:
        record.update(status="interrupted", ended_at=now(), steps=step, checkpoint=str(latest) if latest else None)
        write_run_record(out, record)
    if latest is None:
        return TrainingInterrupted(f"interrupted at step {step}, before the first checkpoint; run the command again")
    return TrainingInterrupted(
        f"interrupted at step {step}; checkpoint {latest} holds step {int(latest.name.split('-')[1])}; "
        "continue with the same command plus --resume"
    )


def linear_schedule(warmup: int, steps: int, step: int) -> float:
    """Linear warm-up to the peak, then linear decay to 0: TRL's default (transformers' "linear")."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (steps - step) / max(1, steps - warmup))


def rows_used(plan: list[list[int]], steps: int, settings, world_size: int) -> list[int]:
    """The train rows that ``steps`` optimizer steps reach (all of them once an epoch is covered)."""
    total = sum(len(group) for group in plan)
    rows: set[int] = set()
    for step in range(steps):
        for rank in range(world_size):
            for idx in step_batches(plan, step, settings.grad_accum, world_size, rank, settings.seed, settings.shuffle):
                rows.update(idx)
        if len(rows) == total:
            break
    return sorted(rows)


def layout(objective, settings, used: dict[str, list[int]], generations: int) -> str:
    """What the cached sequences are: the objective's columns, the batches (KTO's KL pairs), the rows."""
    rows = hashlib.sha256(repr(used).encode()).hexdigest()[:16]
    return (
        f"{'pairs' if objective.paired else 'unpaired'}; batches {settings.batch_size} seed {settings.seed} "
        f"shuffle {settings.shuffle}; rows {rows}; samples {generations} x {settings.max_new_tokens} tokens"
    )


def chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(s, min(s + size, n))) for s in range(0, n, size)]


def lower_is_better(metric: str) -> bool:
    return metric.endswith("loss") or metric.endswith("kl") or metric.endswith("kl_ref")


def strip(metrics: dict) -> dict:
    return {k.removeprefix("eval/"): v for k, v in metrics.items()}


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def eval_line(metrics: dict, settings) -> str:
    m = strip(metrics)
    length = "no generations"
    if m.get("generation_length") is not None:
        budget = m["generation_at_budget"]
        length = (
            f"generation length {m['generation_length']:.1f} tokens (step 0: {fmt(m['ref_generation_length'])} tokens"
            + (f"; {budget:.0%} hit the {settings.max_new_tokens}-token budget" if budget else "")
            + ")"
        )
    chosen, rejected = fmt(m.get("logps/chosen_change")), fmt(m.get("logps/rejected_change"))
    drift = f", logp change chosen {chosen} / rejected {rejected} nats"
    kl = f", KL to reference {m['kl_ref']:.3g} nats" if m.get("kl_ref") is not None else ""
    modes = f" [{', '.join(m['failure_modes'])}]" if m["failure_modes"] else ""
    return (
        f"eval step {metrics['step']}: loss {m['loss']:.4f}, accuracy {m['rewards/accuracies']:.3f} "
        f"(length-controlled {fmt(m['accuracy_length_controlled'])}){drift}{kl}, {length}{modes}"
    )


def end_summary(out, step, steps, stopped, best, early, record, train_seconds) -> str:
    lines = [f"done: {out / 'final'} after {step}/{steps} steps ({train_seconds:.1f} s in training steps)"]
    if stopped:
        lines.append(f"stopped early: {early} did not improve for {record['settings']['patience']} evaluations")
    if early:
        lines.append(f"final/ holds the best evaluation's model (step {best['step']}, {early})")
    for mode, seen in record["failure_modes"].items():
        lines.append(f"warning: {seen['detail']} (first at step {seen['first_step']})")
    return "\n".join(lines)
