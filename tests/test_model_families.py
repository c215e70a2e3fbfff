"""Tiny Llama-3, Qwen2 and Gemma-2 models: their templates, training on them, and what they refuse."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from prefstream.cli import main
from prefstream.errors import TokenizerError
from prefstream.tests.train_helpers import conversational, pair_rows, write_export
from prefstream.train.data import chat_ids, encode_split, pad_token_id
from prefstream.train.tiny_model import build_tiny_model, corpus_lines

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL_TYPES = {"llama3": "llama", "qwen2": "qwen2", "gemma2": "gemma2"}
FAMILIES = tuple(MODEL_TYPES)
ROW = {"prompt": "How do I fix a bike?", "chosen": "Sure, first gather the tools.", "rejected": "I don't know."}

# What each real template renders for ROW: (prompt with the generation prompt, chosen completion).
RENDERED = {
    "llama3": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHow do I fix a bike?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "Sure, first gather the tools.<|eot_id|>",
    ),
    "qwen2": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHow do I fix a bike?<|im_end|>\n"
        "<|im_start|>assistant\n",
        "Sure, first gather the tools.<|im_end|>\n",
    ),
    "gemma2": (
        "<bos><start_of_turn>user\nHow do I fix a bike?<end_of_turn>\n<start_of_turn>model\n",
        "Sure, first gather the tools.<end_of_turn>\n",
    ),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {family: build_tiny_model(root / family, family=family) for family in FAMILIES}


@pytest.fixture(scope="module")
def tokenizers(models):
    from transformers import AutoTokenizer

    return {family: AutoTokenizer.from_pretrained(path) for family, path in models.items()}


@pytest.fixture(scope="module")
def chat_export(tmp_path_factory):
    train, test = pair_rows(8, 4)
    path = tmp_path_factory.mktemp("exports") / "chat"
    return write_export(path, "dpo", conversational(train), conversational(test), prompt_format="conversational")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefstream: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# ---- the families -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "special", "stops"),
    [
        ("llama3", ("<|begin_of_text|>", "<|eot_id|>", None), ["<|end_of_text|>", "<|eot_id|>"]),
        ("qwen2", (None, "<|im_end|>", "<|endoftext|>"), ["<|im_end|>", "<|endoftext|>"]),
        ("gemma2", ("<bos>", "<eos>", "<pad>"), ["<eos>", "<end_of_turn>"]),
    ],
)
def test_each_family_copies_its_model(models, tokenizers, family, special, stops):
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(models[family])
    tokenizer = tokenizers[family]
    assert config.model_type == MODEL_TYPES[family] and config.num_key_value_heads < config.num_attention_heads
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == special
    generation = GenerationConfig.from_pretrained(models[family])
    assert tokenizer.convert_ids_to_tokens(generation.eos_token_id) == stops


@pytest.mark.parametrize("family", FAMILIES)
def test_the_real_template_renders_a_conversational_export(tokenizers, family):
    tokenizer = tokenizers[family]
    (row,) = conversational([ROW])
    encoded = encode_split([row], tokenizer, True, ("chosen", "rejected"), 1024)
    prompt, chosen = RENDERED[family]
    assert tokenizer.decode(encoded.prompts[0]) == prompt
    assert tokenizer.decode(encoded.completions["chosen"][0]) == chosen


@pytest.mark.parametrize("family", FAMILIES)
def test_dpo_trains_end_to_end_on_each_family(models, chat_export, tmp_path, family):
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    result = cli("train", "dpo", "--data", chat_export, "--model", models[family], "--out", run, "--max-steps", 3,
                 "--batch-size", 4, "--lr", "5e-4", "--eval-generations", 2, "--max-new-tokens", 4,
                 "--cache-dir", tmp_path / "cache")  # fmt: skip
    assert result.exit_code == 0, result.output
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert [s["step"] for s in steps][-1] == 3 and all(s["loss"] == s["loss"] for s in steps)  # no NaN
    assert AutoModelForCausalLM.from_pretrained(run / "final").config.model_type == MODEL_TYPES[family]


# ---- what the tokenizer or template refuses: one line, exit 2 --------------------------------------


def test_gemma2_refuses_a_system_message_in_one_line(models, tmp_path):
    train, test = pair_rows(8, 4)
    rows = [{**r, "prompt": [{"role": "system", "content": "Be brief."}, *r["prompt"]]} for r in conversational(train)]
    export = write_export(tmp_path / "sys", "dpo", rows, conversational(test), prompt_format="conversational")
    result = cli("train", "dpo", "--data", export, "--model", models["gemma2"], "--out", tmp_path / "run",
                 "--max-steps", 1, "--cache-dir", tmp_path / "cache")  # fmt: skip
    assert_one_line_error(result, "rejects the system role", "System role not supported", "first user message")
    assert not (tmp_path / "run" / "final").exists()


TOOL_CALL = {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "f"}}]}


@pytest.mark.parametrize(
    ("family", "messages", "fragment"),
    [
        ("gemma2", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "roles must alternate"),
        ("gemma2", [{"role": "user", "content": "a"}, TOOL_CALL | {"content": "calling f"},
                    {"role": "tool", "content": "42", "tool_call_id": "c1"}], "roles user/assistant/tool"),
        ("qwen2", [{"role": "user", "content": "a"}, TOOL_CALL], "has no attribute 'content'"),
    ],
)  # fmt: skip
def test_a_template_that_cannot_render_the_messages_is_one_line(tokenizers, family, messages, fragment):
    good = [{"role": "user", "content": "fine"}]
    with pytest.raises(TokenizerError, match="cannot render row 1 ") as info:
        chat_ids(tokenizers[family], [good, messages])
    assert fragment in str(info.value) and "use a model whose template takes these" in str(info.value)
    assert "\n" not in str(info.value)


def test_no_pad_token_falls_back_to_eos_and_neither_is_one_line(tokenizers):
    llama3 = tokenizers["llama3"]  # like Meta's tokenizer: no pad token, and it trains (test above)
    assert llama3.pad_token is None and pad_token_id(llama3) == llama3.eos_token_id

    class Bare:
        pad_token_id = eos_token_id = None

    with pytest.raises(TokenizerError, match="neither a pad token nor an EOS token") as info:
        pad_token_id(Bare())
    assert "\n" not in str(info.value)


# ---- tiny-model --out ---------------------------------------------------------------------------


def test_tiny_model_refuses_to_overwrite_a_model_without_overwrite(tmp_path):
    out = tmp_path / "m"
    assert cli("tiny-model", "--out", out, "--family", "qwen2").exit_code == 0
    weights = (out / "model.safetensors").read_bytes()
    assert_one_line_error(cli("tiny-model", "--out", out), "already holds a model", "--overwrite")
    assert (out / "model.safetensors").read_bytes() == weights
    result = cli("tiny-model", "--out", out, "--family", "gemma2", "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["model_type"] == "gemma2"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging folder left behind


def test_tiny_model_refuses_a_folder_that_is_not_a_model_even_with_overwrite(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    assert_one_line_error(cli("tiny-model", "--out", tmp_path / "notes", "--overwrite"), "holds no model")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_an_unwritable_out_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")  # a path under a file cannot be created, even by root
    assert_one_line_error(cli("tiny-model", "--out", tmp_path / "file" / "m"), "cannot write --out")


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_tiny_model_files_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        out = build_tiny_model(tmp_path / "m", family="llama3", vocab_size=300)
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == dir_mode
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {p.name: file_mode for p in out.iterdir()}


def test_the_tokenizer_corpus_reads_text_parts_of_chat_events(tmp_path):
    event = {"kind": "thumbs", "response": "Sure.", "prompt": [
        {"role": "user", "content": [{"type": "text", "text": "How do I "}, {"type": "text", "text": "fix it?"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "f"}}]},
    ]}  # fmt: skip
    (tmp_path / "events.jsonl").write_text(json.dumps(event) + "\nplain line\n")
    assert corpus_lines(tmp_path / "events.jsonl") == ["How do I fix it?", "Sure.", "plain line"]
