"""Pairing candidates into requests, the request schema, and round.toml's one-line errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from prefstream.errors import PrefstreamError
from prefstream.rounds import RoundConfig, pair_requests, prompts_from_file
from prefstream.schemas import ComparisonRequest, request_json_schema
from tests.store_helpers import run


def _cand(model, prompt_index, sample_index, text):
    return SimpleNamespace(candidate_id=f"{model}-{prompt_index}-{sample_index}", model_id=model, prompt_index=prompt_index,
                           prompt=f"prompt {prompt_index}", sample_index=sample_index, text=text)  # fmt: skip


def test_two_models_meet_sample_by_sample_and_bad_pairs_are_skipped():
    a = [_cand("A", p, s, f"a{p}{s}") for p in range(2) for s in range(2)]
    b = [_cand("B", p, s, f"b{p}{s}") for p in range(2) for s in range(2)]
    b[1].text, b[2].text, b[3].text = "a01", "nul\x00", "  "  # identical, NUL, blank
    requests, skipped = pair_requests(a, b, seed=3)
    assert skipped == 3 and len(requests) == 1
    (req,) = requests
    assert (req["a"]["candidate_id"], req["b"]["candidate_id"], req["a"]["model_id"], req["b"]["model_id"]) == ("A-0-0", "B-0-0", "A", "B")
    assert ComparisonRequest.model_validate(req).request_id == req["request_id"]
    again, _ = pair_requests(a, b, seed=3)
    assert again[0]["request_id"] == req["request_id"] and again[0]["shown_first"] == req["shown_first"]


def test_one_model_pairs_consecutive_candidates_and_the_shown_order_is_balanced():
    cands = [_cand("A", p, s, f"text {p} {s}") for p in range(200) for s in range(4)]
    requests, skipped = pair_requests(cands, seed=0)
    assert skipped == 0 and len(requests) == 400
    assert {(r["a"]["candidate_id"][-1], r["b"]["candidate_id"][-1]) for r in requests} == {("0", "1"), ("2", "3")}
    first_b = sum(r["shown_first"] == "b" for r in requests)
    assert 160 < first_b < 240  # randomised, not fixed


def test_request_schema_is_exported_and_refuses_unknown_fields():
    schema = request_json_schema()
    assert set(schema["required"]) >= {"request_id", "ts", "prompt", "a", "b", "shown_first"}
    result = run("schema", "--requests")
    assert result.exit_code == 0 and json.loads(result.output)["title"].startswith("prefstream comparison request")
    with pytest.raises(ValueError):
        ComparisonRequest.model_validate({"request_id": "r", "ts": "2026-12-01T00:00:00Z", "prompt": "p", "shown_first": "a", "colour": "red",
                                          "a": {"candidate_id": "1", "model_id": "m", "text": "x"}, "b": {"candidate_id": "2", "model_id": "n", "text": "y"}})  # fmt: skip


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('name = "x"\nstore = "s"\nworkdir = "w"\n', "lacks 'base_model'"),
        ('name = "x"\nstore = "s"\nworkdir = "w"\nbase_model = "m"\ncolour = 1\n', "unknown key 'colour'"),
        ('name = "x"\nstore = "s"\nworkdir = "w"\nbase_model = "m"\n[train]\nlearning_rate = 1\n', "[train] has no setting 'learning_rate'"),
        ('name = "x"\nstore = "s"\nworkdir = "w"\nbase_model = "m"\n[judge]\nid = "j"\n', "[judge] needs command"),
        ('name = "x"\nstore = "s"\nworkdir = "w"\nbase_model = "m"\nreference = "best"\n', "reference must be"),
        ('name = "x"\nstore = "s"\nworkdir = "w"\nbase_model = "m"\nreference = "original"\n', "needs LoRA"),
        ("name = ", "not valid TOML"),
    ],
)
def test_round_config_errors_name_the_key(tmp_path, toml, message):
    path = tmp_path / "round.toml"
    path.write_text(toml)
    with pytest.raises(PrefstreamError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RoundConfig.load(path)
    result = run("round", "next", "--config", path)
    assert result.exit_code == 2 and message in result.output


def test_prompt_files_take_strings_messages_and_objects(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('"plain"\n[{"role": "user", "content": "hi"}]\n\n{"prompt": "obj"}\n')
    assert prompts_from_file(path) == ["plain", [{"role": "user", "content": "hi"}], "obj"]
    path.write_text('{"text": "no prompt"}\n')
    with pytest.raises(PrefstreamError, match="p.jsonl:1 holds no prompt"):
        prompts_from_file(path)
