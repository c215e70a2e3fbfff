"""FSDP2 on CPU (gloo, an explicit CPU mesh): 2 sharded processes match 1 plain process, and resume sharded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from prefstream.tests.test_train_run import evals, read_metrics, settings_for, torchrun
from prefstream.tests.train_helpers import pair_export, shared_tiny_model
from prefstream.train import run

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return shared_tiny_model(tmp_path_factory)


@pytest.mark.slow
def test_fsdp_two_processes_match_one_and_resume_from_sharded_checkpoints(tiny, tmp_path):
    from safetensors.torch import load_file

    exports = {"dpo": pair_export(tmp_path / "dpo", n_train=64, n_test=16)}
    args = ["dpo", "--data", str(exports["dpo"]), "--model", str(tiny), "--lr", "5e-4", "--max-steps", "5",
            "--eval-every", "3", "--no-shuffle", "--device", "cpu", "--eval-generations", "2", "--max-new-tokens", "8",
            "--cache-dir", str(tmp_path / "cache"), "--batch-size", "4", "--out", str(tmp_path / "fsdp"),
            "--fsdp"]  # fmt: skip
    # steps 1-3, a sharded checkpoint at step 3, then every process crashes
    crashed = torchrun(2, "prefstream.tests.train_helpers", *args)
    assert crashed.returncode != 0 and "injected crash" in crashed.stderr
    weights = tmp_path / "fsdp/checkpoints/step-00000003/weights"
    assert sorted(p.name for p in weights.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]  # one shard each
    resumed = torchrun(2, "prefstream.train", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((tmp_path / "fsdp/run.json").read_text())
    assert record["parallelism"] == "fsdp2" and record["resumed"][0]["from_step"] == 3

    single = tmp_path / "single"
    run(settings_for("dpo", exports, tiny, single, tmp_path, max_steps=5, eval_every=3, shuffle=False,
                     device="cpu", eval_generations=2, max_new_tokens=8))  # fmt: skip
    sharded = [m for m in read_metrics(tmp_path / "fsdp") if "loss" in m]
    plain = [m for m in read_metrics(single) if "loss" in m]
    assert [m["step"] for m in sharded] == [1, 2, 3, 4, 5]
    for key in ("loss", "rewards/margins", "logps/chosen", "grad_norm"):
        assert [m[key] for m in sharded] == pytest.approx([m[key] for m in plain], rel=1e-4, abs=1e-4), key
    assert evals(tmp_path / "fsdp")[-1]["eval/loss"] == pytest.approx(evals(single)[-1]["eval/loss"], abs=1e-4)
    # final/ is one consolidated model, equal to the single process's
    a, b = load_file(tmp_path / "fsdp/final/model.safetensors"), load_file(single / "final/model.safetensors")
    assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
