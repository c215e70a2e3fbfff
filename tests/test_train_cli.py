"""`prefstream train` / `prefstream tiny-model` through the CLI: bad input is one line, exit 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from prefstream.cli import main
from prefstream.tests.train_helpers import kto_export, pair_export, pair_rows, shared_tiny_model, write_export

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return shared_tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def dpo_export(tmp_path_factory) -> Path:
    return pair_export(tmp_path_factory.mktemp("exports") / "dpo", n_train=16, n_test=8)


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def train_args(kind, data, model, out, tmp_path, *extra):
    return ["train", kind, "--data", data, "--model", model, "--out", out, "--lr", "5e-4", "--batch-size", "4",
            "--max-steps", "2", "--eval-generations", "2", "--max-new-tokens", "8", "--cache-dir", tmp_path / "cache",
            *extra]  # fmt: skip


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefstream: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_thumbs_export_for_dpo_names_the_export_command(tiny, tmp_path):
    export = kto_export(tmp_path / "kto", n_train=8, n_test=4)
    assert_one_line_error(cli(*train_args("dpo", export, tiny, tmp_path / "run", tmp_path)), "prefstream export dpo")


def test_pairs_are_unpaired_for_kto_with_a_notice(tiny, dpo_export, tmp_path):
    result = cli(*train_args("kto", dpo_export, tiny, tmp_path / "run", tmp_path))
    assert result.exit_code == 0, result.output
    assert "notice:" in result.stderr and "one desirable (chosen) and one undesirable (rejected)" in result.stderr
    assert json.loads((tmp_path / "run/run.json").read_text())["data"]["train_examples"] == 32


def test_a_model_dir_that_is_not_a_causal_lm(dpo_export, tmp_path):
    from transformers import BertConfig, BertModel

    bert = tmp_path / "bert"
    BertModel(
        BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(bert)
    assert_one_line_error(
        cli(*train_args("dpo", dpo_export, bert, tmp_path / "a", tmp_path)), "BertModel", "tiny-model"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(cli(*train_args("dpo", dpo_export, empty, tmp_path / "b", tmp_path)), "no config.json")


def test_sequences_over_max_length_are_truncated_and_counted(tiny, dpo_export, tmp_path):
    result = cli(*train_args("dpo", dpo_export, tiny, tmp_path / "run", tmp_path, "--max-length", "20"))
    assert result.exit_code == 0, result.output
    truncated = json.loads((tmp_path / "run/run.json").read_text())["data"]["truncated"]
    assert truncated["train"] > 0 and truncated["test"] > 0
    assert f"notice: {truncated['train']} train / {truncated['test']} test sequences were longer than" in result.stderr


def test_an_empty_split_is_an_error(tiny, tmp_path):
    train, _ = pair_rows(8, 0)
    export = write_export(tmp_path / "e", "dpo", train, [])
    assert_one_line_error(cli(*train_args("dpo", export, tiny, tmp_path / "run", tmp_path)), "test split is empty")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda(tiny, dpo_export, tmp_path):
    result = cli(*train_args("dpo", dpo_export, tiny, tmp_path / "run", tmp_path, "--device", "cuda"))
    assert_one_line_error(result, "--device cpu")


def test_a_used_run_dir_needs_resume_and_the_same_settings(tiny, dpo_export, tmp_path):
    out = tmp_path / "run"
    assert (
        cli(*train_args("dpo", dpo_export, tiny, out, tmp_path, "--max-steps", "4", "--eval-every", "2")).exit_code == 0
    )
    again = cli(*train_args("dpo", dpo_export, tiny, out, tmp_path, "--max-steps", "4", "--eval-every", "2"))
    assert_one_line_error(again, "--resume", "new --out")
    changed = cli(
        *train_args(
            "dpo", dpo_export, tiny, out, tmp_path, "--max-steps", "4", "--eval-every", "2", "--beta", "0.5", "--resume"
        )
    )
    assert_one_line_error(changed, "beta: 0.1 -> 0.5")
    nothing = cli(*train_args("dpo", dpo_export, tiny, tmp_path / "fresh", tmp_path, "--resume"))
    assert_one_line_error(nothing, "no checkpoint", "without --resume")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [(["--batch-size", "1"], "--batch-size 2 or more"), (["--beta", "0"], "--beta must be positive")],
)
def test_bad_settings(tiny, tmp_path, extra, fragment):
    export = kto_export(tmp_path / "kto", n_train=8, n_test=4)
    assert_one_line_error(cli(*train_args("kto", export, tiny, tmp_path / "run", tmp_path), *extra), fragment)


def test_tiny_model_round_trips_offline(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = tmp_path / "events.jsonl"
    events = [
        {"kind": "thumbs", "prompt": f"How do I fix thing {i}?", "response": f"Sure, step {i} first.", "rating": "up"}
        for i in range(50)
    ]
    corpus.write_text("\n".join(json.dumps(e) for e in events) + "\nplain text lines work too\n")
    result = cli("tiny-model", "--out", tmp_path / "tiny", "--corpus", corpus)
    assert result.exit_code == 0, result.output
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tiny")
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|bos|>", "<|eos|>", "<|pad|>")
    assert "Sure" in tokenizer.get_vocab()  # learnt from the corpus
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert chat == "<|bos|><|user|>\nHi<|eos|><|assistant|>\n"
    ids = tokenizer("How do I fix thing 3?", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


def test_default_tiny_model_has_a_vocabulary_near_1k(tiny):
    from transformers import AutoTokenizer

    assert 500 <= len(AutoTokenizer.from_pretrained(tiny)) <= 2048


# ---- bad input: one line naming the fix, exit 2, nothing written to --out ---------------------


@pytest.mark.parametrize(
    ("kind", "extra", "fragments"),
    [
        ("dpo", ["--lora-r", "8", "--lora-targets", "query,value"], ["--lora-targets query,value", "q_proj"]),
        ("dpo", ["--fsdp"], ["--fsdp", "torchrun --nproc_per_node"]),
        ("dpo", ["--max-length", "4"], ["--max-length 4 (tokens)", "raise --max-length"]),
        ("dpo", ["--merge"], ["--merge", "--lora-r"]),
        ("dpo", ["--early-stop", "--lora-r", "-1"], ["--lora-r >= 0"]),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_out(tiny, dpo_export, tmp_path, kind, extra, fragments):
    out = tmp_path / "run"
    assert_one_line_error(cli(*train_args(kind, dpo_export, tiny, out, tmp_path, *extra)), *fragments)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["simpo", "orpo"])
def test_reference_free_objectives_need_pairs(tiny, tmp_path, kind):
    export = kto_export(tmp_path / "kto", n_train=8, n_test=4)
    out = tmp_path / "run"
    assert_one_line_error(cli(*train_args(kind, export, tiny, out, tmp_path)), kind.upper(), "prefstream export dpo")
    assert not out.exists()


def test_bf16_on_a_cpu_without_bf16(tiny, dpo_export, tmp_path, monkeypatch):
    from prefstream.train import runtime

    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: False)  # inject the missing capability
    out = tmp_path / "run"
    result = cli(*train_args("dpo", dpo_export, tiny, out, tmp_path, "--dtype", "bf16", "--device", "cpu"))
    assert_one_line_error(result, "--dtype bf16", "--dtype fp32")
    assert not out.exists()


def test_an_unwritable_out(tiny, dpo_export, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert_one_line_error(cli(*train_args("dpo", dpo_export, tiny, blocker / "run", tmp_path)), "cannot create --out")


# ---- what a run says and leaves ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_every_export_format_trains_and_files_follow_the_umask(tiny, tmp_path, fmt):
    train, test = pair_rows(16, 8)
    export = write_export(tmp_path / fmt, "dpo", train, test, fmt=fmt)
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        result = cli(*train_args("orpo", export, tiny, out, tmp_path, "--eval-every", "1"))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["export"]["format"] == fmt
    files = [p for p in [*out.rglob("*"), *(tmp_path / "cache").rglob("*")] if p.is_file()]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {"0o644"}
    # lengths carry their unit, and a generation that filled its budget says so
    assert "max length 1024 tokens" in result.stdout
    assert "generation length 8.0 tokens" in result.stdout and "hit the 8-token budget" in result.stdout


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tiny, dpo_export, tmp_path, monkeypatch):
    original = torch.optim.AdamW.step
    calls = []

    def interrupted_third_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", interrupted_third_step)
    out = tmp_path / "run"
    args = train_args("dpo", dpo_export, tiny, out, tmp_path, "--max-steps", "4", "--eval-every", "10")
    result = cli(*args)
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert "interrupted at step 2" in result.stderr and "--resume" in result.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted" and record["checkpoint"].endswith("step-00000002")
    monkeypatch.undo()
    resumed = cli(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
