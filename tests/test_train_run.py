"""Whole runs through the one loop: efficacy, exact resume, the reference cache, DDP through torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prefstream.tests.train_helpers import (
    conversational,
    kto_export,
    pair_export,
    pair_rows,
    shared_tiny_model,
    write_export,
)
from prefstream.train import TrainSettings, run

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return shared_tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    return {
        "dpo": pair_export(root / "dpo", n_train=64, n_test=32),
        "kto": kto_export(root / "kto", n_train=64, n_test=32),
    }


def settings_for(kind, exports, tiny, out, tmp_path, **overrides) -> TrainSettings:
    base = dict(
        kind=kind, data=str(exports["kto" if kind == "kto" else "dpo"]), model=str(tiny), out=str(out),
        lr=5e-4, batch_size=8, epochs=2, eval_every=8, eval_generations=4, max_new_tokens=16,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    return TrainSettings(**{**base, **overrides})


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def evals(out: Path) -> list[dict]:
    return [m for m in read_metrics(out) if "eval/loss" in m]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dpo", "ipo", "kto"])
def test_held_out_reward_accuracy_rises_from_chance(kind, exports, tiny, tmp_path):
    out = tmp_path / "run"
    final = run(settings_for(kind, exports, tiny, out, tmp_path))
    first, last = evals(out)[0], evals(out)[-1]
    assert first["step"] == 0 and 0.35 <= first["eval/rewards/accuracies"] <= 0.65
    assert last["eval/rewards/accuracies"] >= 0.9
    # the preference, not length: the chosen response wins where it is the shorter one too
    shorter = "eval/pairs/accuracies_chosen_shorter" if kind == "kto" else "eval/rewards/accuracies_chosen_shorter"
    assert last[shorter] >= 0.8
    assert final["eval/rewards/accuracies"] == last["eval/rewards/accuracies"]
    train_lines = [m for m in read_metrics(out) if "loss" in m]
    expected_keys = {"step", "loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                     "logps/chosen", "logps/rejected", "lr", "tokens_per_s"}  # fmt: skip
    if kind == "kto":
        expected_keys.add("kl")
    assert expected_keys <= set(train_lines[0])
    assert [m["step"] for m in train_lines] == list(range(1, len(train_lines) + 1))
    assert {"eval/generation_length", "eval/ref_generation_length"} <= set(last)


def test_run_outputs_record_what_produced_the_model(exports, tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    run(settings_for("dpo", exports, tiny, out, tmp_path, max_steps=3, eval_every=2))
    record = json.loads((out / "run.json").read_text())
    manifest = json.loads((exports["dpo"] / "manifest.json").read_text())
    assert record["status"] == "finished" and record["steps"] == 3
    assert record["export"]["export_id"] == manifest["export_id"]
    assert record["export"]["content_hash"] == manifest["content_hash"]
    assert record["model"]["path"] == str(tiny) and len(record["model"]["hash"]) == 64
    assert record["settings"]["lr"] == 5e-4 and record["settings"]["max_steps"] == 3
    assert record["packages"]["torch"] == torch.__version__
    assert record["started_at"] <= record["ended_at"]
    assert record["final_metrics"]["step"] == 3
    # only the newest is kept, and a finished run needs none past its last evaluation
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002"]
    kept = out / "checkpoints/step-00000002"
    assert json.loads((kept / "settings.json").read_text())["lr"] == 5e-4
    # weights and optimizer state, nothing recomputable (no tokenizer, no reference log-probs)
    assert sorted(p.name for p in kept.iterdir()) == ["settings.json", "training_state.pt", "weights"]
    AutoModelForCausalLM.from_pretrained(out / "final")
    AutoTokenizer.from_pretrained(out / "final")


@pytest.mark.parametrize("kind", ["dpo", "kto"])
def test_resume_after_a_crash_matches_an_uninterrupted_run(kind, exports, tiny, tmp_path, monkeypatch):
    from prefstream.train import checkpoint

    whole = tmp_path / "whole"
    run(settings_for(kind, exports, tiny, whole, tmp_path, max_steps=8, eval_every=4, grad_accum=2))

    broken = tmp_path / "broken"
    original = checkpoint.save_checkpoint

    def crash_after_first_checkpoint(out, step, *args, **kwargs):
        original(out, step, *args, **kwargs)
        raise RuntimeError("injected crash")

    monkeypatch.setattr(checkpoint, "save_checkpoint", crash_after_first_checkpoint)
    settings = settings_for(kind, exports, tiny, broken, tmp_path, max_steps=8, eval_every=4, grad_accum=2)
    with pytest.raises(RuntimeError, match="injected crash"):
        run(settings)
    monkeypatch.undo()
    failed = json.loads((broken / "run.json").read_text())
    assert failed["status"] == "failed" and "injected crash" in failed["error"]
    run(settings, resume=True)

    strip = lambda rows: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]  # noqa: E731
    assert strip(read_metrics(broken)) == strip(read_metrics(whole))
    assert [m["step"] for m in read_metrics(broken) if "loss" in m] == list(range(1, 9))
    from safetensors.torch import load_file

    a, b = load_file(whole / "final/model.safetensors"), load_file(broken / "final/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((broken / "run.json").read_text())["resumed"][0]["from_step"] == 4


def test_a_second_run_reuses_reference_logps_without_a_reference_pass(exports, tiny, tmp_path, monkeypatch):
    from prefstream.train import reference

    first = run_record_of(run_and_out("kto", exports, tiny, tmp_path, "first", max_steps=2))
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    # the reference scored the rows 2 steps reach (16 examples), not the whole train split (128)
    assert first["data"]["reference_train_rows"] == 16 and first["data"]["train_examples"] == 128

    def no_reference_pass(*args, **kwargs):
        raise AssertionError("the reference pass ran although the cache had its log-probs")

    monkeypatch.setattr(reference, "reference_pass", no_reference_pass)
    assert run_record_of(run_and_out("kto", exports, tiny, tmp_path, "second", max_steps=2))["reference_cache"]["hit"]
    # a different max length is a different cache entry
    with pytest.raises(AssertionError, match="reference pass ran"):
        run(settings_for("kto", exports, tiny, tmp_path / "third", tmp_path, max_steps=2, max_length=64))


def run_and_out(kind, exports, tiny, tmp_path, name, **overrides) -> Path:
    run(settings_for(kind, exports, tiny, tmp_path / name, tmp_path, **overrides))
    return tmp_path / name


def run_record_of(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def test_conversational_exports_train(tiny, tmp_path):
    train, test = pair_rows(16, 8)
    export = write_export(tmp_path / "chat", "dpo", conversational(train), conversational(test), "conversational")
    out = tmp_path / "run"
    final = run(TrainSettings(kind="dpo", data=str(export), model=str(tiny), out=str(out), lr=5e-4, batch_size=4,
                              eval_generations=2, max_new_tokens=8, cache_dir=str(tmp_path / "cache")))  # fmt: skip
    assert final["step"] == 4 and final["loss"] < 0.6931


def test_two_process_ddp_run_on_cpu_matches_one_process(exports, tiny, tmp_path):
    """Training, the reference pass and evaluation, each split across 2 processes, give 1 process's numbers."""
    args = ["dpo", "--data", str(exports["dpo"]), "--model", str(tiny), "--lr", "5e-4", "--max-steps", "4",
            "--eval-every", "4", "--no-shuffle", "--device", "cpu", "--eval-generations", "4",
            "--max-new-tokens", "16", "--cache-dir", str(tmp_path / "cache-ddp")]  # fmt: skip
    ddp = tmp_path / "ddp"
    result = torchrun(2, "prefstream.train", *args, "--batch-size", "4", "--out", str(ddp))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((ddp / "run.json").read_text())["processes"] == 2
    assert result.stdout.count("step 4/4") == 1  # progress lines come from the main process only

    # 2 processes x 4 pairs, gradients averaged == 1 process x 8 pairs (same pairs with --no-shuffle)
    single = tmp_path / "single"
    run(settings_for("dpo", exports, tiny, single, tmp_path, max_steps=4, eval_every=4, shuffle=False, device="cpu"))
    ddp_lines = [m for m in read_metrics(ddp) if "loss" in m]
    single_lines = [m for m in read_metrics(single) if "loss" in m]
    for key in ("loss", "rewards/margins", "logps/chosen", "grad_norm"):
        assert [m[key] for m in ddp_lines] == pytest.approx([m[key] for m in single_lines], rel=1e-4, abs=1e-5)
    # evaluation (scoring, generation, the KL estimate) split across the ranks, then gathered
    for ours, theirs in zip(evals(ddp), evals(single), strict=True):
        for key in ("eval/loss", "eval/rewards/accuracies", "eval/logps/chosen", "eval/generation_length",
                    "eval/kl_ref"):  # fmt: skip
            assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-5), key
    # the reference pass, split the same way: the cached tensors agree entry by entry
    (ddp_cache,), (single_cache,) = (list((tmp_path / c).glob("*.pt")) for c in ("cache-ddp", "cache"))
    a, b = (torch.load(p, weights_only=True)["tensors"] for p in (ddp_cache, single_cache))
    assert set(a) == set(b)
    for key in a:
        assert torch.allclose(a[key].double(), b[key].double(), atol=1e-4, equal_nan=True), key


def torchrun(processes: int, module: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", module, *args]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
