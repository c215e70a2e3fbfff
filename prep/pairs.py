"""Pairs from thumbs, pairs as unpaired KTO rows, and length balancing."""

from __future__ import annotations

import polars as pl

from prefstream.prep.splits import stable_rank

PAIR_COLUMNS = ["prompt_hash", "prompt", "chosen", "rejected", "agreement", "n_annotators", "source_event_ids", "pair_id"]
KTO_COLUMNS = ["prompt_hash", "prompt", "completion", "label", "agreement", "n_annotators", "source_event_ids", "item_id"]


def pairs_from_thumbs(kto_rows: pl.DataFrame, max_per_prompt: int, seed: int) -> pl.DataFrame:
    """Pair an up-rated and a down-rated response to the same prompt (which TRL cannot do).

    Every (good, bad) combination of one prompt is a candidate; at most ``max_per_prompt``
    are kept, chosen by a seeded hash so the selection is deterministic. The pair's
    agreement is the lower of its two items' agreements.
    """
    good = kto_rows.filter(pl.col("label")).select("prompt_hash", "prompt", "item_id", "completion", "agreement", "n_annotators", "source_event_ids")
    bad = kto_rows.filter(~pl.col("label")).select("prompt_hash", "item_id", "completion", "agreement", "n_annotators", "source_event_ids")
    joined = good.join(bad, on="prompt_hash", suffix="_bad")
    pairs = joined.select(
        "prompt_hash",
        "prompt",
        chosen=pl.col("completion"),
        rejected=pl.col("completion_bad"),
        agreement=pl.min_horizontal("agreement", "agreement_bad"),
        n_annotators=pl.col("n_annotators") + pl.col("n_annotators_bad"),
        source_event_ids=pl.concat_list("source_event_ids", "source_event_ids_bad").list.sort(),
        pair_id=pl.concat_str("item_id", "item_id_bad", separator="+"),
    )
    pairs = pairs.with_columns(rank=stable_rank(pl.col("pair_id"), seed)).sort("prompt_hash", "rank")
    return pairs.filter(pl.int_range(pl.len()).over("prompt_hash") < max_per_prompt).drop("rank").select(PAIR_COLUMNS)


def pairs_to_kto(pairs: pl.DataFrame) -> pl.DataFrame:
    """Each decided pair as two unpaired rows: chosen -> True, rejected -> False."""
    common = ["prompt_hash", "prompt", "agreement", "n_annotators", "source_event_ids"]
    chosen = pairs.select(*common, completion=pl.col("chosen"), label=pl.lit(True), item_id=pl.col("pair_id") + ":chosen")
    rejected = pairs.select(*common, completion=pl.col("rejected"), label=pl.lit(False), item_id=pl.col("pair_id") + ":rejected")
    return pl.concat([chosen, rejected]).select(KTO_COLUMNS)


def _length_difference() -> pl.Expr:
    # len_chars is unsigned: cast before subtracting, or shorter-minus-longer wraps around.
    return pl.col("chosen").str.len_chars().cast(pl.Int64) - pl.col("rejected").str.len_chars().cast(pl.Int64)


def longer_wins_share(pairs: pl.DataFrame) -> float | None:
    """Share of pairs of unequal length where the chosen response is the longer."""
    diff = pairs.select(_length_difference()).to_series()
    unequal = int((diff != 0).sum())
    return int((diff > 0).sum()) / unequal if unequal else None


def balance_length(pairs: pl.DataFrame, seed: int) -> tuple[pl.DataFrame, int]:
    """Drop pairs from the over-represented side so "longer wins" is as close to 50% as counts allow.

    DPO learns whatever separates chosen from rejected; if that is length, it learns to
    ramble. Which pairs go is decided by a seeded hash of ``pair_id`` (deterministic).
    """
    diff = _length_difference()
    marked = pairs.with_columns(side=pl.when(diff > 0).then(1).when(diff < 0).then(-1).otherwise(0))
    longer, shorter = int((marked["side"] == 1).sum()), int((marked["side"] == -1).sum())
    excess, side = (longer - shorter, 1) if longer > shorter else (shorter - longer, -1)
    if excess == 0:
        return pairs, 0
    ranked = marked.with_columns(rank=stable_rank(pl.col("pair_id"), seed))
    drop = ranked.filter(pl.col("side") == side).sort("rank").head(excess).select("pair_id")
    return pairs.join(drop, on="pair_id", how="anti", maintain_order="left"), excess
