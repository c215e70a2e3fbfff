"""The split key, its hash and the conversational form, in DuckDB SQL against literal tables."""

from __future__ import annotations

import hashlib
import json

import duckdb
import pyarrow as pa
import pytest

from prefstream.prep import chat, splits


@pytest.fixture
def con():
    con = duckdb.connect()
    yield con
    con.close()


def keys_and_buckets(con, prompts: list[str], seed: int = 0) -> list[tuple[str, int]]:
    con.execute("CREATE OR REPLACE TEMP TABLE t AS SELECT unnest(?::VARCHAR[]) AS prompt, generate_subscripts(?::VARCHAR[], 1) AS i", [prompts, prompts])
    return con.execute(f"SELECT split_key, {splits.BUCKET} FROM (SELECT i, {splits.SPLIT_KEY} AS split_key FROM t) ORDER BY i", [str(seed)]).fetchall()


def test_the_bucket_is_the_first_8_bytes_of_sha256_as_an_unsigned_integer(con):
    # Literal values: any platform, any DuckDB or Python version must give these.
    assert int.from_bytes(hashlib.sha256(b"0:How?").digest()[:8], "big") == 13253350743938123149
    assert keys_and_buckets(con, ['"How?"']) == [("How?", 123149)]
    assert keys_and_buckets(con, ['"How?"'], seed=1) == [("How?", 910984)]
    assert keys_and_buckets(con, [json.dumps("café ü")]) == [("café ü", 887512)]  # UTF-8 bytes, not escapes


def test_the_key_is_the_canonical_prompt_not_its_exported_form(con):
    chat_json = '[{"content":"s","role":"system"},{"content":"How?","role":"user"}]'
    got = keys_and_buckets(con, [
        '"How?"',
        '[{"content":"How?","role":"user"}]',  # the same prompt once exported as a conversation
        '[{"content":[{"text":"How?","type":"text"}],"role":"user"}]',  # ... with content as one text part
        chat_json,  # any other chat keys on its canonical JSON
        '[{"content":"How?","name":"bob","role":"user"}]',
        '[{"content":[{"text":"How","type":"text"},{"text":"?","type":"text"}],"role":"user"}]',
    ])
    assert got[:3] == [("How?", 123149)] * 3
    assert got[3] == (chat_json, 192260)
    assert [k for k, _ in got[4:]] == ['[{"content":"How?","name":"bob","role":"user"}]', '[{"content":[{"text":"How","type":"text"},{"text":"?","type":"text"}],"role":"user"}]']


def exported(con, prompts: list[str], completion: str = "ok") -> tuple[chat.Form, list[dict]]:
    con.execute("CREATE OR REPLACE TEMP TABLE r AS SELECT unnest(?::VARCHAR[]) AS prompt, ? AS completion", [prompts, completion])
    form = chat.detect(con, "r")
    table = con.sql(f"SELECT {form.prompt_sql('prompt')} AS prompt, {form.completion_sql('completion')} AS completion FROM r").fetch_arrow_table()
    if form.conversational:
        table = table.cast(pa.schema([("prompt", form.message_type()), ("completion", form.message_type())]))
    return form, table.to_pylist()


def test_plain_prompts_stay_text_until_a_chat_arrives(con):
    form, rows = exported(con, ['"How?"'])
    assert form == chat.Form() and rows == [{"prompt": "How?", "completion": "ok"}]
    form, rows = exported(con, ['"How?"', '[{"content":"Hi","role":"user"}]'])
    assert form == chat.Form(conversational=True)
    assert rows == [
        {"prompt": [{"role": "user", "content": "How?"}], "completion": [{"role": "assistant", "content": "ok"}]},
        {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "ok"}]},
    ]


def test_every_chat_variant_keeps_trls_message_keys(con):
    tool_call = {"function": {"arguments": {"city": "Oslo"}, "name": "weather"}, "id": "c1", "type": "function"}
    prompt = [
        {"content": "Be brief.", "name": "policy", "role": "system"},
        {"content": [{"text": "Weather in ", "type": "text"}, {"text": "Oslo?", "type": "text"}], "role": "user"},
        {"role": "assistant", "tool_calls": [tool_call]},
        {"content": "7C", "role": "tool", "tool_call_id": "c1"},
    ]
    form, rows = exported(con, [json.dumps(prompt, separators=(",", ":")), '"Plain?"'])
    assert form == chat.Form(conversational=True, parts=True, keys=("name", "tool_calls", "tool_call_id"))
    none = {"name": None, "tool_calls": None, "tool_call_id": None}
    text = lambda s: [{"type": "text", "text": s}]  # noqa: E731
    assert rows[0]["prompt"] == [
        {**none, "role": "system", "content": text("Be brief."), "name": "policy"},
        {**none, "role": "user", "content": text("Weather in ") + text("Oslo?")},
        {**none, "role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}]},
        {**none, "role": "tool", "content": text("7C"), "tool_call_id": "c1"},
    ]
    assert rows[1]["prompt"] == [{**none, "role": "user", "content": text("Plain?")}]
    assert rows[0]["completion"] == [{**none, "role": "assistant", "content": text("ok")}]


def test_non_text_parts_are_recognised(con):
    prompts = ['"Plain"', '[{"content":[{"text":"a","type":"text"}],"role":"user"}]',
               '[{"content":[{"text":"What is this?","type":"text"},{"image_url":{"url":"https://x/y.png"},"type":"image_url"}],"role":"user"}]',
               '[{"content":[{"input_audio":{"data":"..."},"type":"input_audio"}],"role":"user"}]']
    con.execute("CREATE OR REPLACE TEMP TABLE p AS SELECT unnest(?::VARCHAR[]) AS prompt", [prompts])
    assert [r[0] for r in con.execute(f"SELECT {chat.HAS_NON_TEXT} FROM p").fetchall()] == [False, False, True, True]
