"""LoRA through peft: efficacy without a second model, base weights untouched, --merge, continuing an adapter."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from prefstream.cli import main
from prefstream.tests.test_train_run import evals, settings_for
from prefstream.tests.train_helpers import pair_export, shared_tiny_model
from prefstream.train import run

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return shared_tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    return {"dpo": pair_export(tmp_path_factory.mktemp("exports") / "dpo", n_train=64, n_test=32)}


def digest(directory: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())).hexdigest()


@pytest.mark.slow
def test_lora_training_learns_the_preference_with_one_model_in_memory(exports, tiny, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    loads = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args[0])
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(counting))
    before = digest(tiny)
    out = tmp_path / "run"
    run(settings_for("dpo", exports, tiny, out, tmp_path, lora_r=8, lr=5e-3))
    first, last = evals(out)[0], evals(out)[-1]
    assert 0.35 <= first["eval/rewards/accuracies"] <= 0.65
    assert last["eval/rewards/accuracies"] >= 0.9
    assert loads == [tiny]  # the reference is the policy with its adapters disabled, never a second copy
    assert digest(tiny) == before  # the base weights on disk are untouched
    assert (out / "final/adapter_model.safetensors").exists() and not (out / "final/model.safetensors").exists()
    record = json.loads((out / "run.json").read_text())
    assert set(record["model"]["lora_targets"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                    "down_proj"}  # fmt: skip


def test_merge_writes_base_plus_adapter_and_an_adapter_continues(exports, tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    run(settings_for("simpo", exports, tiny, out, tmp_path, lora_r=4, lr=5e-3, max_steps=2, merge=True,
                     eval_generations=0, gradient_checkpointing=True))  # fmt: skip
    base = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    expected = PeftModel.from_pretrained(base, out / "final").merge_and_unload().eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "final/merged", dtype=torch.float32).eval()
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, expected(ids).logits, atol=1e-5)
        untouched = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
        assert not torch.allclose(merged(ids).logits, untouched(ids).logits, atol=1e-3)

    # the adapter directory as --model continues that adapter on its base
    again = tmp_path / "again"
    run(settings_for("dpo", exports, tiny, again, tmp_path, model=str(out / "final"), max_steps=1,
                     eval_generations=0))  # fmt: skip
    assert json.loads((again / "run.json").read_text())["model"]["adapter"] == str(out / "final")

    # ... and one whose base is gone is a one-line error that names the fix
    orphan = tmp_path / "orphan"
    shutil.copytree(out / "final", orphan, ignore=shutil.ignore_patterns("merged"))
    config = json.loads((orphan / "adapter_config.json").read_text())
    (orphan / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "/nowhere/base"}))
    result = CliRunner().invoke(main, ["train", "dpo", "--data", str(exports["dpo"]), "--model", str(orphan),
                                       "--out", str(tmp_path / "never")])  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and "LoRA adapter whose base model (/nowhere/base)" in result.stderr
    assert not (tmp_path / "never").exists()
