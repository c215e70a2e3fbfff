"""Prompt format and train / test split of ``_prep_rows``, into ``_prep_export``.

One Arrow type per column: if any prompt is a chat message list, the export is
conversational and plain prompts become ``[{"role": "user", "content": p}]``; completions
become one assistant message (TRL's conversational format). Otherwise everything is text.

The split is a seeded md5 of the prompt *as exported*, so every row of a prompt lands in
the same split, and a plain prompt ``"X"`` and the chat prompt ``[user: "X"]`` (equal once
converted) do too. md5 rather than DuckDB's ``hash()``: its values are not promised to stay
the same across versions, and a split must not move when DuckDB is upgraded.
"""

from __future__ import annotations

BUCKETS = 1_000_000
MESSAGES_TYPE = '[{"role":"VARCHAR","content":"VARCHAR"}]'

# The store keeps prompts as DuckDB's canonical JSON (``to_json``): a string is ``"X"``, a chat
# ``[{"role":"user","content":"X"}]``. Wrapping the string's JSON text gives byte for byte the
# canonical JSON of the single-message chat, without parsing anything.
_AS_CHAT = """CASE WHEN starts_with(prompt, '[') THEN prompt ELSE '[{"role":"user","content":' || prompt || '}]' END"""


def is_conversational(con) -> bool:
    return bool(con.execute("SELECT coalesce(bool_or(starts_with(prompt, '[')), false) FROM _prep_rows").fetchall()[0][0])


def build_export_table(con, family: str, conversational: bool, eval_fraction: float, seed: int) -> None:
    """``_prep_export``: ``split``, ``row_order`` and the export's columns in their final types."""
    prompt_key = _AS_CHAT if conversational else "prompt"
    prompt_out = f"from_json(k.split_key, '{MESSAGES_TYPE}')" if conversational else "json_extract_string(k.prompt, '$')"
    texts = ("completion",) if family == "kto" else ("chosen", "rejected")
    text_out = ", ".join(
        (f"[{{'role': 'assistant', 'content': {c}}}] AS {c}" if conversational else c) for c in texts
    )
    tail = "label, weight, agreement, n_annotators, source_event_ids" if family == "kto" else (
        "weight, agreement, n_annotators, source_event_ids, pair_id"
    )
    # The md5 is taken once per distinct prompt (far fewer than rows); rows are ordered by their
    # key, itself an md5 (pair_id / item_id), so prompts are interleaved and the order is fixed.
    # ``prompt_key`` (DuckDB's hash) only counts distinct prompts within this run.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _prep_export AS
        WITH k AS (SELECT *, {prompt_key} AS split_key FROM _prep_rows),
        b AS (SELECT split_key, md5_number(? || ':' || split_key) % {BUCKETS} < ? AS test FROM (SELECT DISTINCT split_key FROM k))
        SELECT CASE WHEN b.test THEN 'test' ELSE 'train' END AS split,
               k.row_key AS row_order,
               hash(k.split_key) AS prompt_key,
               {prompt_out} AS prompt, {text_out}, {tail}
        FROM k JOIN b USING (split_key)""",
        [str(seed), round(eval_fraction * BUCKETS)],
    )


def split_counts(con) -> dict[str, dict[str, int]]:
    """``{split: {"rows": n, "prompts": n}}`` for train and test (zeros included)."""
    found = {s: (r, p) for s, r, p in con.execute(
        "SELECT split, count(*), count(DISTINCT prompt_key) FROM _prep_export GROUP BY split"
    ).fetchall()}
    return {s: {"rows": int(found.get(s, (0, 0))[0]), "prompts": int(found.get(s, (0, 0))[1])} for s in ("train", "test")}
