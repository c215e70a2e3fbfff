"""Sampling candidates for on-policy rounds: K per prompt, seeded, batch-invariant, chat prompts."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from prefstream.errors import PrefstreamError
from prefstream.tests.train_helpers import shared_tiny_model
from prefstream.train.generate import _SeededSampler, candidate_id, default_model_id, generate_candidates
from prefstream.train.tiny_model import build_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "How do I fix a bike?",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I bake a cake?"}],
    "Hi",
    [{"role": "user", "content": [{"type": "text", "text": "Can you help me wire a lamp?"}]}],
]
SAMPLING = {"temperature": 1.0, "top_p": 0.9, "max_new_tokens": 10, "model_id": "m1"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return shared_tiny_model(tmp_path_factory)


def texts(candidates):
    return [c.text for c in candidates]


def test_k_candidates_per_prompt_in_prompt_then_sample_order(tiny):
    candidates = generate_candidates(tiny, PROMPTS, 3, seed=0, batch_size=5, **SAMPLING)
    assert [(c.prompt_index, c.sample_index) for c in candidates] == [(i, s) for i in range(4) for s in range(3)]
    assert [c.prompt for c in candidates[::3]] == PROMPTS
    assert {c.model_id for c in candidates} == {"m1"} and {c.seed for c in candidates} == {0}
    assert len({c.candidate_id for c in candidates}) == 12
    assert len(set(texts(candidates))) > 6  # sampled: the k draws of a prompt differ
    for c in candidates:
        assert c.finish_reason in ("stop", "length") and 1 <= c.num_tokens <= 10


def test_the_seed_fixes_the_draws_and_another_seed_changes_them(tiny):
    first = generate_candidates(tiny, PROMPTS, 2, seed=7, **SAMPLING)
    assert first == generate_candidates(tiny, PROMPTS, 2, seed=7, **SAMPLING)
    assert texts(first) != texts(generate_candidates(tiny, PROMPTS, 2, seed=8, **SAMPLING))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_batched_and_unbatched_give_the_same_candidates(tiny, temperature):
    settings = {**SAMPLING, "temperature": temperature}
    batched = generate_candidates(tiny, PROMPTS, 2, seed=3, batch_size=8, **settings)
    assert batched == generate_candidates(tiny, PROMPTS, 2, seed=3, batch_size=1, **settings)
    # each candidate is a function of its prompt alone, not of the other prompts in its batch
    alone = generate_candidates(tiny, PROMPTS[2:3], 2, seed=3, batch_size=1, **settings)
    assert texts(alone) == texts(batched[4:6])


def test_greedy_matches_plain_model_generate_on_chat_and_text_prompts(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    candidates = generate_candidates(tiny, PROMPTS[:3], 2, temperature=0.0, max_new_tokens=8, batch_size=6,
                                     model_id="m1")  # fmt: skip
    for i, prompt in enumerate(PROMPTS[:3]):
        if isinstance(prompt, list):
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)["input_ids"]  # fmt: skip
        else:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        assert texts(candidates[2 * i : 2 * i + 2]) == [expected, expected]  # greedy: k identical


def test_chat_prompts_work_with_a_real_template_and_no_pad_token(tmp_path):
    llama3 = build_tiny_model(tmp_path / "llama3", family="llama3", vocab_size=400)
    candidates = generate_candidates(llama3, PROMPTS, 2, seed=1, batch_size=3, **SAMPLING)
    assert len(candidates) == 8 and all(isinstance(c.text, str) for c in candidates)


def test_the_models_stop_tokens_end_a_candidate_and_its_sampling_defaults_are_ignored(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    ids = tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    greedy = AutoModelForCausalLM.from_pretrained(tiny).generate(ids, max_new_tokens=8, do_sample=False)
    stop = greedy[0, ids.shape[1] + 2].item()  # the third token greedy decoding emits
    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    config = json.loads((copy / "generation_config.json").read_text())
    config.update(eos_token_id=[tokenizer.eos_token_id, stop], do_sample=True, temperature=0.3, top_k=2)
    (copy / "generation_config.json").write_text(json.dumps(config))

    (c,) = generate_candidates(copy, PROMPTS[:1], 1, temperature=0.0, max_new_tokens=8, model_id="m1")
    first_stop = greedy[0, ids.shape[1] :].tolist().index(stop)
    assert (c.finish_reason, c.num_tokens) == ("stop", first_stop + 1)
    sampled = {**SAMPLING, "max_new_tokens": 2}  # short: ends before the stop token, so texts compare
    assert generate_candidates(copy, PROMPTS, 2, **sampled) == generate_candidates(tiny, PROMPTS, 2, **sampled)


def test_the_seeded_sampler_draws_from_the_distribution():
    probabilities = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])  # the last as if top-p had cut it
    scores = probabilities.log().repeat(4000, 1)
    chosen = _SeededSampler(list(range(4000)))(None, scores).argmax(dim=-1)
    frequencies = torch.bincount(chosen, minlength=5) / 4000
    assert torch.allclose(frequencies, probabilities, atol=0.025) and frequencies[4] == 0


def test_candidate_id_is_the_documented_hash(tiny):
    (c,) = generate_candidates(tiny, PROMPTS[:1], 1, seed=5, **SAMPLING)
    settings = {"temperature": 1.0, "top_p": 0.9, "max_new_tokens": 10}
    assert c.candidate_id == candidate_id("m1", PROMPTS[0], 0, 5, **settings)
    assert c.candidate_id != candidate_id("m2", PROMPTS[0], 0, 5, **settings)
    assert c.candidate_id != candidate_id("m1", PROMPTS[0], 0, 5, **{**settings, "top_p": 1.0})


def test_the_default_model_id_is_the_directory_content_hash(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFSTREAM_CACHE", str(tmp_path))  # where file digests are cached
    (c,) = generate_candidates(tiny, PROMPTS[:1], 1, temperature=0.0, max_new_tokens=2)
    assert c.model_id == default_model_id(tiny) and len(c.model_id) == len("sha256:") + 16
    assert c.model_id.startswith("sha256:")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": 0}, "k must be at least 1"),
        ({"prompts": []}, "no prompts given"),
        ({"top_p": 0.0}, "top_p must be in (0, 1]"),
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"model_dir": "/nonexistent"}, "is not a directory"),
    ],
)
def test_bad_settings_are_one_line_errors(tiny, change, message):
    args = {"model_dir": tiny, "prompts": PROMPTS[:1], "k": 1, "temperature": 1.0, "top_p": 1.0, **change}
    with pytest.raises(PrefstreamError) as info:
        generate_candidates(args.pop("model_dir"), args.pop("prompts"), args.pop("k"), **args)
    assert message in str(info.value) and "\n" not in str(info.value)
