"""Train / test split by prompt, and the export table ``_prep_export`` (split, order, final columns).

A prompt's bucket is the first 8 bytes of ``sha256("{seed}:{key}")`` read as an unsigned
big-endian integer, modulo 1,000,000; buckets below ``eval_fraction * 1,000,000`` are the
test split. sha256 and that reading are the same on every platform and library version
(DuckDB's ``hash()`` is not promised to be, and an md5 read as a number was signed on older
DuckDB), and the tests pin literal assignments.

The key is the prompt's canonical text as stored, never its exported form, so nothing else
in the window (a first chat event, other prompts) moves a prompt between splits: a plain
prompt keys on its text; a chat that is one user message of plain text (a string, or one
text part) keys on that text too, being the same prompt once exported as a conversation;
any other chat keys on its stored canonical JSON.
"""

from __future__ import annotations

from prefstream.prep.chat import Form

BUCKETS = 1_000_000

SPLIT_KEY = """CASE WHEN json_type(prompt) = 'VARCHAR' THEN prompt ->> '$' ELSE coalesce(
    CASE WHEN json_array_length(prompt) = 1 AND (prompt ->> '$[0].role') = 'user' AND list_sort(json_keys(prompt, '$[0]')) = ['content', 'role'] THEN
        CASE json_type(prompt, '$[0].content')
            WHEN 'VARCHAR' THEN prompt ->> '$[0].content'
            WHEN 'ARRAY' THEN CASE WHEN json_array_length(prompt, '$[0].content') = 1 AND (prompt ->> '$[0].content[0].type') = 'text'
                                    AND list_sort(json_keys(prompt, '$[0].content[0]')) = ['text', 'type']
                               THEN prompt ->> '$[0].content[0].text' END END END,
    prompt) END"""

# The bucket of a key, as the module docstring defines it (the tests pin its values).
BUCKET = f"('0x' || left(sha256(? || ':' || split_key), 16))::UBIGINT % {BUCKETS}"


def build_export_table(con, family: str, form: Form, eval_fraction: float, seed: int) -> None:
    """``_prep_export``: ``split``, ``row_order``, ``split_key`` and the export's columns in their final types."""
    texts = ("completion",) if family == "kto" else ("chosen", "rejected")
    text_out = ", ".join(f"{form.completion_sql('k.' + c)} AS {c}" for c in texts)
    tail = "label, weight, agreement, n_annotators, source_event_ids" if family == "kto" else (
        "weight, agreement, n_annotators, source_event_ids, pair_id"
    )
    # The key and bucket are computed once per distinct prompt (far fewer than rows); rows are
    # ordered by their own key, itself an md5 (pair_id / item_id): interleaved and fixed.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _prep_export AS
        WITH p AS (SELECT prompt, {SPLIT_KEY} AS split_key FROM (SELECT DISTINCT prompt FROM _prep_rows)),
        b AS (SELECT prompt, split_key, {BUCKET} < ? AS test FROM p)
        SELECT CASE WHEN b.test THEN 'test' ELSE 'train' END AS split, k.row_key AS row_order, b.split_key,
               {form.prompt_sql('k.prompt')} AS prompt, {text_out}, {tail}
        FROM _prep_rows k JOIN b USING (prompt)""",
        [str(seed), round(eval_fraction * BUCKETS)],
    )


def split_counts(con) -> dict[str, dict[str, int]]:
    """``{split: {"rows": n, "prompts": n}}`` for train and test (zeros included)."""
    found = {s: (r, p) for s, r, p in con.execute(
        "SELECT split, count(*), count(DISTINCT split_key) FROM _prep_export GROUP BY split"
    ).fetchall()}
    return {s: {"rows": int(found.get(s, (0, 0))[0]), "prompts": int(found.get(s, (0, 0))[1])} for s in ("train", "test")}
