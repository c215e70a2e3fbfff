"""Run health: failure modes fire on a run forced to inflate length, stay quiet on a healthy one; early stop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from prefstream.tests.test_train_run import evals
from prefstream.tests.train_helpers import pair_rows, sft_copy, shared_tiny_model, write_export
from prefstream.train import TrainSettings, run
from prefstream.train.health import failure_modes, kl_estimate

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"logps/chosen_change": -6.0, "logps/rejected_change": -9.0}, ["likelihood_displacement"]),
        ({"logps/chosen_change": 1.0, "logps/rejected_change": -30.0}, []),  # the rejected alone falling is the aim
        ({"generation_length": 16.0, "ref_generation_length": 10.0}, ["length_inflation"]),
        ({"generation_length": 14.0, "ref_generation_length": 10.0}, []),
        ({"generation_length": 5.0, "ref_generation_length": 0.0}, []),  # no reference length to compare with
    ],
)
def test_failure_modes_against_thresholds(metrics, expected):
    assert failure_modes(metrics, displacement_nats=5.0, inflation_pct=50.0) == expected


def test_kl_estimate_is_zero_for_the_reference_and_never_negative():
    ref = torch.tensor([-3.0, -7.0, -2.0])
    assert kl_estimate(ref, ref) == 0.0
    assert kl_estimate(torch.tensor([-2.0, -9.0, -2.5]), ref) > 0


@pytest.fixture(scope="module")
def short_answers(tmp_path_factory) -> tuple[Path, list[dict], list[dict]]:
    """A tiny model that answers "Sure." and stops (3 tokens), and the pairs' prompts."""
    tiny = shared_tiny_model(tmp_path_factory)
    train, test = pair_rows(32, 16)
    texts = [(r["prompt"], "Sure.") for r in train[:16]]
    return sft_copy(tiny, tmp_path_factory.getbasetemp() / "tiny-short", texts, steps=30), train, test


def settings(model: Path, export: Path, out: Path, tmp_path: Path, **overrides) -> TrainSettings:
    base = dict(kind="dpo", data=str(export), model=str(model), out=str(out), batch_size=8, eval_every=4,
                eval_generations=4, max_new_tokens=48, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    return TrainSettings(**{**base, **overrides})


@pytest.mark.slow
def test_length_inflation_is_named_on_a_run_forced_to_inflate(short_answers, tmp_path, capsys):
    model, train, test = short_answers
    def longer(rows):
        return [{**r, "chosen": f"{r['chosen']} {r['chosen']}", "rejected": "Sure."} for r in rows]

    export = write_export(tmp_path / "longer", "dpo", longer(train), longer(test))
    out = tmp_path / "run"
    run(settings(model, export, out, tmp_path, lr=5e-3, max_steps=8))
    first, last = evals(out)[0], evals(out)[-1]
    assert first["eval/failure_modes"] == [] and first["eval/generation_length"] < 8
    assert "length_inflation" in last["eval/failure_modes"]
    assert last["eval/kl_ref"] > first["eval/kl_ref"] == 0.0
    record = json.loads((out / "run.json").read_text())
    assert "length_inflation" in record["failure_modes"]
    printed = capsys.readouterr().out
    assert "warning: length_inflation: generations +" in printed and "tokens; threshold +50%" in printed


@pytest.mark.slow
def test_a_healthy_run_stays_quiet_and_early_stop_keeps_the_best_model(short_answers, tmp_path):
    from safetensors.torch import load_file

    model, train, test = short_answers
    def same_length(rows):
        return [{**r, "chosen": "Sure.", "rejected": "No."} for r in rows]

    export = write_export(tmp_path / "short", "dpo", same_length(train), same_length(test))
    out = tmp_path / "run"
    # kl_ref is 0 at step 0 and grows as the policy moves: the best evaluation is step 0's
    run(settings(model, export, out, tmp_path, lr=5e-4, max_steps=40, eval_every=2, early_stop="kl_ref", patience=2))
    lines = evals(out)
    assert all(m["eval/failure_modes"] == [] for m in lines)
    assert [m["step"] for m in lines] == [0, 2, 4]  # stopped after 2 evaluations without improvement
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "stopped_early" and record["best"]["step"] == 0 and record["failure_modes"] == {}
    start, final = load_file(model / "model.safetensors"), load_file(out / "final/model.safetensors")
    assert all(torch.equal(start[k], final[k]) for k in start)  # final/ is the best (step 0) model, not step 4's
