"""Wire schemas: valid events, every dead-letter class, upcasting, JSON Schema, fuzzing."""

from __future__ import annotations

import json

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from prefstream.schemas import PairwiseEvent, Rejected, ThumbsEvent, json_schema, parse
from prefstream.schemas import upcasting

THUMBS = {
    "schema_version": 1, "kind": "thumbs", "event_id": "e1", "ts": "2026-11-01T10:00:00Z",
    "prompt": "How do I bake bread?", "annotator_id": "u1", "response": "Knead it.", "rating": "up",
}
PAIRWISE = {
    "schema_version": 1, "kind": "pairwise", "event_id": "e2", "ts": "2026-11-01T10:00:00+02:00",
    "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    "annotator_id": "u2", "annotator_kind": "expert", "response_a": "Hello!", "response_b": "Go away.",
    "choice": "a", "shown_first": "b", "model_a": "m1", "model_b": "m2",
}


def raw(obj) -> bytes:
    return orjson.dumps(obj)


def test_valid_thumbs_and_defaults():
    event = parse(raw(THUMBS))
    assert isinstance(event, ThumbsEvent)
    assert event.annotator_kind == "user" and event.metadata == {} and event.model_id is None
    assert event.ts.utcoffset().total_seconds() == 0


def test_valid_pairwise_chat_prompt():
    event = parse(raw(PAIRWISE))
    assert isinstance(event, PairwiseEvent)
    assert [m.role for m in event.prompt] == ["system", "user"]
    assert event.ts.utcoffset().total_seconds() == 7200


CHAT_VARIANTS = {
    "text parts": [{"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}],
    "name": [{"role": "user", "name": "alice", "content": "Hi"}],
    "tool call": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "-3C"},
    ],
    "image part": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}],
    "unknown message key": [{"role": "user", "content": "Hi", "x_trace": "abc"}],
}


@pytest.mark.parametrize("variant", list(CHAT_VARIANTS))
def test_chat_messages_as_chat_apis_send_them_are_valid(variant):
    event = parse(raw({**THUMBS, "prompt": CHAT_VARIANTS[variant]}))
    assert isinstance(event, ThumbsEvent), event


def test_chat_messages_are_stored_as_sent_with_canonical_hashes(tmp_path):
    from prefstream.tests.store_helpers import land, query

    messages = [{**THUMBS, "event_id": f"v{i}", "prompt": prompt} for i, prompt in enumerate(CHAT_VARIANTS.values())]
    # The same prompt with its keys in another order and different spacing is the same item.
    reordered = [{"content": "Hi", "name": "alice", "role": "user"}]
    messages.append({**THUMBS, "event_id": "v-reordered", "prompt": reordered})
    store = land(tmp_path, messages, expect_all_valid=True)
    rows = dict(query(store, "SELECT event_id, prompt::VARCHAR FROM thumbs"))
    for i, prompt in enumerate(CHAT_VARIANTS.values()):
        expected = [{k: v for k, v in m.items() if v is not None} for m in prompt]
        assert json.loads(rows[f"v{i}"]) == expected
    items = dict(query(store, "SELECT event_id, item_id FROM thumbs"))
    assert items["v-reordered"] == items["v1"]


def test_a_judge_model_is_an_annotator_kind():
    event = parse(raw({**THUMBS, "annotator_kind": "model"}))
    assert isinstance(event, ThumbsEvent) and event.annotator_kind == "model"


def test_unknown_fields_are_kept_in_metadata():
    event = parse(raw({**THUMBS, "metadata": {"app": "web"}, "latency_ms": 812, "locale": "de"}))
    assert isinstance(event, ThumbsEvent)
    assert event.metadata == {"app": "web", "extra_fields": {"latency_ms": 812, "locale": "de"}}


@pytest.mark.parametrize(
    "message, reason",
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "not a JSON object (got list)"),
        (b'"just a string"', "not a JSON object (got str)"),
        (raw({**THUMBS, "schema_version": 7}), "unknown schema_version 7"),
        (raw({**THUMBS, "schema_version": "1"}), "schema_version must be an integer"),
        (raw({k: v for k, v in THUMBS.items() if k != "schema_version"}), "missing required field 'schema_version'"),
        (raw({**THUMBS, "kind": "stars"}), "unknown kind 'stars'"),
        (raw({k: v for k, v in THUMBS.items() if k != "rating"}), "missing required field 'rating'"),
        (raw({**THUMBS, "rating": "sideways"}), "field 'rating'"),
        (raw({**THUMBS, "event_id": 17}), "field 'event_id'"),
        (raw({**THUMBS, "ts": 1700000000}), "RFC 3339"),
        (raw({**THUMBS, "ts": "2026-11-01T10:00:00"}), "timezone"),
        (raw({**THUMBS, "response": ""}), "field 'response'"),
        (raw({**THUMBS, "prompt": ""}), "field 'prompt"),
        (raw({**PAIRWISE, "prompt": []}), "field 'prompt"),
        (raw({**PAIRWISE, "choice": "c"}), "field 'choice'"),
        (b'{"schema_version": 1, "kind": "thumbs", "event_id": "\xff"}', "invalid UTF-8"),
        (raw(THUMBS)[:-1] + b', "x": "\x00"}', "NUL"),
        (raw({**THUMBS, "response": "a\u0000b"}), "NUL"),
        (None, "null value"),
    ],
)
def test_every_bad_input_class_is_rejected_with_a_reason(message, reason):
    result = parse(message)
    assert isinstance(result, Rejected)
    assert reason in result.reason


def test_oversize_limit_is_configurable():
    message = raw({**THUMBS, "response": "x" * 5000})
    assert isinstance(parse(message), ThumbsEvent)
    result = parse(message, max_bytes=1000)
    assert isinstance(result, Rejected) and result.reason.startswith("oversize message")


def test_upcaster_reads_an_older_version_beside_the_current(monkeypatch):
    def v0_to_v1(payload):
        vote = payload.pop("vote")
        return {**payload, "schema_version": 1, "rating": {"+": "up", "-": "down"}[vote]}

    monkeypatch.setitem(upcasting.UPCASTERS, 0, v0_to_v1)
    legacy = {k: v for k, v in THUMBS.items() if k != "rating"} | {"schema_version": 0, "vote": "-"}
    event = parse(raw(legacy))
    assert isinstance(event, ThumbsEvent) and event.rating == "down" and "extra_fields" not in event.metadata
    assert isinstance(parse(raw(THUMBS)), ThumbsEvent)


def test_json_schema_export_covers_both_kinds():
    schema = json_schema()
    kinds = {d["properties"]["kind"]["const"] for d in schema["$defs"].values() if "kind" in d.get("properties", {})}
    assert kinds == {"thumbs", "pairwise"}
    out = CliRunner().invoke(__import__("prefstream.cli", fromlist=["main"]).main, ["schema", "--json"])
    assert out.exit_code == 0 and json.loads(out.output) == schema


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_the_validator(data):
    result = parse(data)
    assert isinstance(result, (Rejected, ThumbsEvent, PairwiseEvent))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(THUMBS) + sorted(PAIRWISE) + ["x"]), json_values, max_size=12))
def test_arbitrary_json_objects_never_crash_the_validator(obj):
    result = parse(json.dumps(obj).encode())
    assert isinstance(result, (Rejected, ThumbsEvent, PairwiseEvent))
