"""TRL's conversational form, built in DuckDB SQL from the stored prompt JSON.

A message keeps ``role`` and ``content``, and ``name`` / ``tool_calls`` / ``tool_call_id``
when any message of the export has them (one Arrow type per column: a key one message has
is a null field in the others). ``content`` stays a string unless some message of the
export gives it as a list of parts; then every content is a list of text parts
``{"type": "text", "text": ...}`` (a string becomes one part). Tool-call ``arguments`` are
JSON text, as OpenAI sends them (an object given on the wire becomes its JSON): their keys
vary per tool, which no single Arrow type holds. Prompts with non-text parts (images,
audio) cannot go into a text export; their items are dropped before this (``non_text_content``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

OPTIONAL = ("name", "tool_calls", "tool_call_id")
PART = pa.struct([("type", pa.string()), ("text", pa.string())])
TOOL_CALL = pa.struct([
    ("id", pa.string()), ("type", pa.string()), ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())])),
])

# True when a stored prompt (JSON text) holds a content part that is not text.
HAS_NON_TEXT = (
    "(starts_with(prompt, '[') AND len(list_filter(json_extract_string(prompt, '$[*].content[*].type'), "
    "lambda t: t IS DISTINCT FROM 'text')) > 0)"
)


@dataclass(frozen=True)
class Form:
    """How an export's texts are shaped: plain strings, or messages with these fields."""

    conversational: bool = False
    parts: bool = False  # content as a list of text parts
    keys: tuple[str, ...] = ()  # the OPTIONAL keys some message has

    def message_type(self) -> pa.DataType:
        fields = [("role", pa.string()), ("content", pa.list_(PART) if self.parts else pa.string())]
        types = {"name": pa.string(), "tool_calls": pa.list_(TOOL_CALL), "tool_call_id": pa.string()}
        return pa.list_(pa.struct(fields + [(k, types[k]) for k in self.keys]))

    def prompt_sql(self, column: str) -> str:
        """``column`` (stored prompt JSON text) as exported."""
        if not self.conversational:
            return f"json_extract_string({column}, '$')"
        # A plain prompt is one user message: the JSON of that chat, without parsing the prompt.
        as_chat = f"""CASE WHEN starts_with({column}, '[') THEN {column} ELSE '[{{"role":"user","content":' || {column} || '}}]' END"""
        return self._messages(as_chat)

    def completion_sql(self, column: str) -> str:
        """``column`` (response text) as exported: one assistant message when conversational."""
        if not self.conversational:
            return column
        return self._messages(f"""'[{{"role":"assistant","content":' || to_json({column}) || '}}]'""")

    def _messages(self, chat_json: str) -> str:
        if self.parts:
            content = """CASE json_type(m, '$.content')
                WHEN 'ARRAY' THEN list_transform(json_extract(m, '$.content[*]'), lambda p: struct_pack(type := p ->> 'type', text := p ->> 'text'))
                WHEN 'VARCHAR' THEN [struct_pack(type := 'text', text := m ->> 'content')] END"""
        else:
            content = "m ->> 'content'"
        optional = {
            "name": "m ->> 'name'",
            "tool_calls": """CASE WHEN json_type(m, '$.tool_calls') = 'ARRAY' THEN list_transform(json_extract(m, '$.tool_calls[*]'),
                lambda t: struct_pack(id := t ->> 'id', type := t ->> 'type', function := struct_pack(
                    name := t ->> '$.function.name',
                    arguments := CASE WHEN json_type(t, '$.function.arguments') = 'VARCHAR' THEN t ->> '$.function.arguments'
                                      ELSE json_extract(t, '$.function.arguments')::VARCHAR END))) END""",
            "tool_call_id": "m ->> 'tool_call_id'",
        }
        fields = ", ".join(["role := m ->> 'role'", f"content := {content}"] + [f"{k} := {optional[k]}" for k in self.keys])
        return f"list_transform(json_extract({chat_json}, '$[*]'), lambda m: struct_pack({fields}))"


def detect(con, table: str) -> Form:
    """The form of ``table``'s ``prompt`` column (stored JSON text): one pass over its distinct chats."""
    any_chat, parts, keys = con.execute(
        f"""WITH chats AS (SELECT DISTINCT prompt FROM {table} WHERE starts_with(prompt, '['))
            SELECT count(*) > 0, coalesce(bool_or(list_contains(json_type(prompt, '$[*].content'), 'ARRAY')), false),
                   list_distinct(flatten(list(flatten(list_transform(json_extract(prompt, '$[*]'), lambda m: json_keys(m))))))
            FROM chats"""
    ).fetchall()[0]
    return Form(conversational=bool(any_chat), parts=bool(parts), keys=tuple(k for k in OPTIONAL if k in (keys or [])))
