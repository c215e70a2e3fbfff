"""The rows of an export, from the aggregated items: pairs for DPO / IPO, unpaired rows for KTO.

Every function defines the temp view ``_prep_rows`` (or redefines it) on the caller's
connection, in SQL:

* :func:`dpo_rows`: decided pairs, optionally with pairs built from thumbs (an up-rated and a
  down-rated response to the same prompt, which TRL cannot do), then optional length balancing.
* :func:`kto_rows`: decided thumbs (ties dropped or kept as both labels), optionally with each
  decided pair as a desirable (chosen) and an undesirable (rejected) row.

``_prep_rows`` columns: ``row_key`` (stable id of the row, for ordering and sampling),
``prompt`` (the stored prompt JSON text), the TRL text columns, ``label`` (KTO), ``weight``,
``agreement``, ``n_annotators``, ``source_event_ids`` and ``pair_id`` (DPO).
"""

from __future__ import annotations

from prefstream.prep.aggregate import THUMBS_REASONS, drop_counts

# A pair made from thumbs gets the sink's pair_id formula (prompt + the unordered pair), so
# it is recognised when the same two responses were also compared head to head.
_PAIR_ID = "md5(prompt || chr(31) || least(chosen, rejected) || chr(31) || greatest(chosen, rejected))"


_PAIR_COLUMNS = "row_key, prompt, chosen, rejected, weight, agreement, n_annotators, source_event_ids, pair_id"


def dpo_rows(con, *, include_thumbs: bool, max_pairs_per_prompt: int, seed: int) -> dict[str, int]:
    """``_prep_rows`` for DPO / IPO; returns drop counts of the thumbs pairing (if used)."""
    decided = f"SELECT pair_id AS {_PAIR_COLUMNS} FROM _prep_pairs WHERE drop_reason IS NULL"
    if not include_thumbs:
        con.execute(f"CREATE OR REPLACE TEMP VIEW _prep_rows AS {decided}")
        return {}
    # Within a prompt, the k-th up-rated item (in a seeded hash order) pairs with the k-th
    # down-rated one: every response is used at most once (one popular response cannot
    # dominate the set) and the work stays linear, unlike all up x down combinations.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _prep_thumb_pairs AS
        WITH ranked AS (
            SELECT *, row_number() OVER (PARTITION BY prompt, label ORDER BY md5(? || ':' || item_id)) AS rk
            FROM _prep_thumbs WHERE drop_reason IS NULL),
        matched AS (
            SELECT u.prompt, u.completion AS chosen, d.completion AS rejected,
                   u.weight * d.weight AS weight, least(u.agreement, d.agreement) AS agreement,
                   u.n_annotators + d.n_annotators AS n_annotators,
                   list_sort(list_concat(u.source_event_ids, d.source_event_ids)) AS source_event_ids
            FROM ranked u JOIN ranked d ON u.prompt = d.prompt AND u.rk = d.rk
            WHERE u.label AND NOT d.label AND u.rk <= ?)
        SELECT *, {_PAIR_ID} AS pair_id, {_PAIR_ID} IN (SELECT pair_id FROM _prep_pair_votes) AS compared FROM matched""",
        [str(seed), max_pairs_per_prompt],
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW _prep_rows AS {decided}
        UNION ALL SELECT pair_id AS {_PAIR_COLUMNS} FROM _prep_thumb_pairs WHERE NOT compared"""
    )
    items = con.execute("SELECT count(*) FROM _prep_thumbs WHERE drop_reason IS NULL").fetchall()[0][0]
    paired, compared = con.execute("SELECT count(*), count(*) FILTER (WHERE compared) FROM _prep_thumb_pairs").fetchall()[0]
    return {
        **drop_counts(con, "_prep_thumbs", THUMBS_REASONS, "thumbs"),
        "thumbs_unpaired": int(items - 2 * paired),
        "thumbs_already_compared": int(compared),
    }


def kto_rows(con, *, ties: str, include_pairwise: bool) -> None:
    """``_prep_rows`` for KTO (a view: the rows are materialised once, with their split)."""
    parts = ["SELECT item_id AS row_key, prompt, completion, label, weight, agreement, n_annotators, source_event_ids FROM _prep_thumbs WHERE drop_reason IS NULL"]
    if ties == "keep":
        # A split vote says "it depends": keep both readings, each at its share of the votes.
        parts += [
            """SELECT item_id || ':up', prompt, completion, true, su / (su + sd), vu / n_annotators, n_annotators, source_event_ids
               FROM _prep_thumbs WHERE drop_reason = 'tie'""",
            """SELECT item_id || ':down', prompt, completion, false, sd / (su + sd), vd / n_annotators, n_annotators, source_event_ids
               FROM _prep_thumbs WHERE drop_reason = 'tie'""",
        ]
    if include_pairwise:
        parts += [
            """SELECT pair_id || ':chosen', prompt, chosen, true, weight, agreement, n_annotators, source_event_ids
               FROM _prep_pairs WHERE drop_reason IS NULL""",
            """SELECT pair_id || ':rejected', prompt, rejected, false, weight, agreement, n_annotators, source_event_ids
               FROM _prep_pairs WHERE drop_reason IS NULL""",
        ]
    con.execute("CREATE OR REPLACE TEMP VIEW _prep_rows AS " + " UNION ALL ".join(parts))


def length_stats(con) -> dict:
    """How often the chosen response is the longer one (characters), among pairs of unequal length."""
    longer, shorter, equal = con.execute(
        """SELECT count(*) FILTER (WHERE length(chosen) > length(rejected)),
                  count(*) FILTER (WHERE length(chosen) < length(rejected)),
                  count(*) FILTER (WHERE length(chosen) = length(rejected))
           FROM _prep_rows"""
    ).fetchall()[0]
    unequal = longer + shorter
    return {"longer_wins": longer / unequal if unequal else None, "longer": longer, "shorter": shorter, "equal_length": equal}


def balance_length(con, seed: int) -> int:
    """Drop pairs from the over-represented side so "the longer response won" in exactly half the unequal pairs.

    DPO learns whatever separates chosen from rejected; when that is length, the model learns
    to ramble, so the majority side is cut to the minority's size. Which pairs go is a seeded
    hash of their key: deterministic, and unrelated to content. Returns how many were dropped.
    """
    before = con.execute("SELECT count(*) FROM _prep_rows").fetchall()[0][0]
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _prep_balanced AS
        WITH s AS (SELECT *, sign(length(chosen) - length(rejected)) AS side FROM _prep_rows),
        c AS (SELECT least(count(*) FILTER (WHERE side = 1), count(*) FILTER (WHERE side = -1)) AS keep FROM s),
        r AS (SELECT *, row_number() OVER (PARTITION BY side ORDER BY md5(? || ':' || row_key)) AS rk FROM s)
        SELECT r.* EXCLUDE (side, rk) FROM r, c WHERE side = 0 OR rk <= c.keep""",
        [str(seed)],
    )
    con.execute("CREATE OR REPLACE TEMP VIEW _prep_rows AS SELECT * FROM _prep_balanced")
    return int(before - con.execute("SELECT count(*) FROM _prep_rows").fetchall()[0][0])
