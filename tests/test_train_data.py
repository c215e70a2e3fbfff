"""Tokenisation, collation, batch planning, export reading and evaluation metrics."""

from __future__ import annotations

import json
import os

import pytest
import torch

from prefstream.errors import PrefstreamError, TokenizerError
from prefstream.tests.train_helpers import conversational, pair_export, pair_rows, shared_tiny_model, write_export
from prefstream.train.data import (
    batch_plan,
    chat_ids,
    collate,
    encode_split,
    kl_partners,
    step_batches,
    template_message,
    total_steps,
)
from prefstream.train.evaluate import label_accuracy, pair_accuracies, same_prompt_pairs
from prefstream.train.export import load_export, paired_rows, unpaired_rows

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shared_tiny_model(tmp_path_factory))


ROW = {"prompt": "How do I fix a bike?", "chosen": "Sure, first gather the tools.", "rejected": "I don't know."}


# ---- tokenisation ---------------------------------------------------------------------------


def test_plain_completions_end_with_eos_and_the_prompt_is_separate(tokenizer):
    encoded = encode_split([ROW], tokenizer, False, ("chosen", "rejected"), 1024)
    assert encoded.prompts[0] == tokenizer(ROW["prompt"])["input_ids"]
    assert encoded.prompts[0][0] == tokenizer.bos_token_id
    for column in ("chosen", "rejected"):
        ids = encoded.completions[column][0]
        assert ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids) == ROW[column] + tokenizer.eos_token


def test_an_existing_eos_is_not_doubled(tokenizer):
    row = {**ROW, "chosen": ROW["chosen"] + tokenizer.eos_token}
    encoded = encode_split([row], tokenizer, False, ("chosen",), 1024)
    assert encoded.completions["chosen"][0].count(tokenizer.eos_token_id) == 1


def test_conversational_rows_go_through_the_chat_template(tokenizer):
    (row,) = conversational([ROW])
    encoded = encode_split([row], tokenizer, True, ("chosen", "rejected"), 1024)
    expected_prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(encoded.prompts[0]) == expected_prompt
    assert expected_prompt.endswith("<|assistant|>\n")
    assert tokenizer.decode(encoded.completions["chosen"][0]) == ROW["chosen"] + tokenizer.eos_token


def test_text_parts_are_joined_and_other_message_fields_reach_the_template(tokenizer):
    parts = [{"type": "text", "text": "How do I "}, {"type": "text", "text": "fix a bike?"}]
    assert template_message({"role": "user", "content": parts, "name": "ann"}) == {
        "role": "user", "content": "How do I fix a bike?", "name": "ann"
    }  # fmt: skip
    # what a saved export gives back: every field of any message on every message, None where absent
    assert template_message({"role": "user", "content": "Hi", "name": None, "tool_call_id": None}) == {
        "role": "user", "content": "Hi"
    }  # fmt: skip
    plain = [{"role": "user", "content": "How do I fix a bike?"}]
    assert chat_ids(tokenizer, [[{"role": "user", "content": parts}]]) == chat_ids(tokenizer, [plain])

    tool_template = (
        "{% for m in messages %}{{ m['role'] }}{% if m.name %}:{{ m.name }}{% endif %}"
        "{% if m.tool_call_id %}#{{ m.tool_call_id }}{% endif %}"
        "{% for call in m.tool_calls or [] %}[{{ call.function.name }}]{% endfor %}={{ m.content }};{% endfor %}"
    )
    conversation = [
        {"role": "user", "content": parts, "name": "ann"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "manual"}}]},
        {"role": "tool", "content": [{"type": "text", "text": "page 3"}], "tool_call_id": "c1"},
    ]
    original, tokenizer.chat_template = tokenizer.chat_template, tool_template
    try:
        (ids,) = chat_ids(tokenizer, [conversation])
    finally:
        tokenizer.chat_template = original
    assert tokenizer.decode(ids) == "user:ann=How do I fix a bike?;assistant[manual]=;tool#c1=page 3;"


def test_content_parts_other_than_text_are_one_line_errors(tokenizer):
    image = {"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "url": "x"}]}
    with pytest.raises(TokenizerError, match=r"content parts of types \['image_url', 'text'\]") as info:
        chat_ids(tokenizer, [[image]])
    assert "\n" not in str(info.value)


def test_a_tokenizer_without_a_chat_template_is_one_line(tokenizer):
    original, tokenizer.chat_template = tokenizer.chat_template, None
    try:
        with pytest.raises(TokenizerError, match="has no chat template"):
            chat_ids(tokenizer, [[{"role": "user", "content": "Hi"}]])
    finally:
        tokenizer.chat_template = original


def test_truncation_keeps_the_start_and_is_counted(tokenizer):
    prompt_len = len(tokenizer(ROW["prompt"])["input_ids"])
    max_length = prompt_len + 3
    encoded = encode_split([ROW], tokenizer, False, ("chosen", "rejected"), max_length)
    full = encoded.completions["chosen"][0]
    assert encoded.truncated == 2 and encoded.dropped == 0  # both sequences are longer
    batch = collate(encoded.prompts, encoded.completions["chosen"], tokenizer.pad_token_id, max_length)
    assert batch.input_ids.shape == (1, max_length)
    assert batch.input_ids[0].tolist() == encoded.prompts[0] + full[:3]
    assert batch.completion_mask[0].tolist() == [0] * prompt_len + [1] * 3


def test_a_prompt_that_fills_max_length_drops_the_example(tokenizer):
    prompt_len = len(tokenizer(ROW["prompt"])["input_ids"])
    short = {"prompt": "Hi", "chosen": "Sure.", "rejected": "No."}
    encoded = encode_split([ROW, short], tokenizer, False, ("chosen", "rejected"), prompt_len)
    assert encoded.dropped == 1 and encoded.rows == [1]


def test_collate_pads_to_the_longest_row_only():
    batch = collate([[1, 2, 3], [7, 8]], [[4, 5], [9]], pad_id=0, max_length=100)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch.completion_mask.tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 0, 0]]
    assert batch.tokens == 8


# ---- batches --------------------------------------------------------------------------------


def test_batch_plan_covers_every_example_once_and_depends_on_the_seed():
    plan = batch_plan(10, 4, seed=1, shuffle=True)
    assert sorted(i for g in plan for i in g) == list(range(10))
    assert plan == batch_plan(10, 4, seed=1, shuffle=True)
    assert plan != batch_plan(10, 4, seed=2, shuffle=True)
    assert batch_plan(10, 4, seed=1, shuffle=False) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_lone_trailing_example_joins_the_previous_batch():
    assert batch_plan(5, 2, seed=0, shuffle=False) == [[0, 1], [2, 3, 4]]


def test_kl_partners_rotate_within_each_batch():
    assert kl_partners([[0, 1, 2], [3, 4]]) == [2, 0, 1, 4, 3]


def test_step_batches_are_a_function_of_the_step():
    plan = batch_plan(12, 2, seed=3, shuffle=True)  # 6 batches
    first_epoch = [step_batches(plan, s, 1, 1, 0, 3, True)[0] for s in range(6)]
    assert sorted(map(tuple, first_epoch)) == sorted(map(tuple, plan))
    second_epoch = [step_batches(plan, s, 1, 1, 0, 3, True)[0] for s in range(6, 12)]
    assert second_epoch != first_epoch  # reshuffled
    assert step_batches(plan, 7, 1, 1, 0, 3, True) == step_batches(plan, 7, 1, 1, 0, 3, True)


def test_processes_and_accumulation_split_the_batches():
    plan = batch_plan(16, 2, seed=0, shuffle=False)  # 8 batches
    rank0 = step_batches(plan, 0, 2, 2, 0, 0, False)
    rank1 = step_batches(plan, 0, 2, 2, 1, 0, False)
    assert rank0 == [[0, 1], [4, 5]] and rank1 == [[2, 3], [6, 7]]
    assert total_steps(len(plan), epochs=3, grad_accum=2, world_size=2, max_steps=None) == 6
    with pytest.raises(PrefstreamError, match="lower --batch-size or --grad-accum"):
        total_steps(1, epochs=1, grad_accum=2, world_size=1, max_steps=None)


# ---- exports ----------------------------------------------------------------------------------


def test_load_export_reads_rows_and_tolerates_extra_manifest_keys(tmp_path):
    export = load_export(pair_export(tmp_path / "e", n_train=6, n_test=3))
    assert (export.kind, export.conversational, len(export.train), len(export.test)) == ("dpo", False, 6, 3)
    assert export.manifest["created_by"] == "tests"
    assert paired_rows(export, "ipo") == (export.train, export.test)


def test_pairs_become_desirable_and_undesirable_rows_for_kto_with_a_notice(tmp_path):
    export = load_export(pair_export(tmp_path / "e", n_train=6, n_test=3))
    notices = []
    train, test = unpaired_rows(export, notices.append)
    assert len(train) == 12 and len(test) == 6 and len(notices) == 1
    assert train[0] == {"prompt": export.train[0]["prompt"], "completion": export.train[0]["chosen"], "label": True,
                        "weight": 1.0, "pair_id": "p0"}  # fmt: skip
    assert train[1]["completion"] == export.train[0]["rejected"] and train[1]["label"] is False


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "manifest.json").unlink(), "no manifest.json"),
        (lambda p: (p / "manifest.json").write_text("{"), "not valid JSON"),
        (lambda p: (p / "manifest.json").write_text(json.dumps({"kind": "dpo"})), "lacks export_id"),
    ],
)
def test_broken_exports_are_one_line_errors(tmp_path, damage, message):
    path = pair_export(tmp_path / "e", n_train=4, n_test=2)
    damage(path)
    with pytest.raises(PrefstreamError, match=message) as info:
        load_export(path)
    assert "\n" not in str(info.value)


def test_empty_split_and_wrong_format_are_errors(tmp_path):
    train, test = pair_rows(4, 2)
    with pytest.raises(PrefstreamError, match="test split is empty"):
        load_export(write_export(tmp_path / "empty", "dpo", train, []))
    with pytest.raises(PrefstreamError, match="not conversational format"):
        load_export(write_export(tmp_path / "fmt", "dpo", train, test, prompt_format="conversational"))


# ---- evaluation metrics ------------------------------------------------------------------------


def test_pair_accuracies_split_by_length_and_count_ties_half():
    chosen = torch.tensor([1.0, 0.0, 2.0, -1.0])
    rejected = torch.tensor([0.0, 0.0, 3.0, -2.0])
    chosen_len = torch.tensor([10, 10, 3, 5])
    rejected_len = torch.tensor([5, 20, 8, 5])
    assert pair_accuracies(chosen, rejected, chosen_len, rejected_len) == {
        "rewards/accuracies": (1 + 0.5 + 0 + 1) / 4,
        "rewards/accuracies_chosen_longer": 1.0,  # pair 0
        "rewards/accuracies_chosen_shorter": 0.25,  # pairs 1 (tie) and 2 (wrong)
        "pairs_chosen_longer": 1,
        "pairs_chosen_shorter": 2,
    }


def test_label_accuracy_and_same_prompt_pairs():
    rewards = torch.tensor([0.5, -0.2, 0.0, 0.3])
    labels = torch.tensor([True, False, True, False])
    assert label_accuracy(rewards, labels) == (1 + 1 + 0.5 + 0) / 4
    assert same_prompt_pairs(["a", "a", "b", "a", "c"], [True, False, True, False, False]) == ([0, 0], [1, 3])
