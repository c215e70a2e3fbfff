"""Deterministic, leakage-free train / test splits keyed by the prompt."""

from __future__ import annotations

import hashlib

import polars as pl

_BUCKETS = 1_000_000


def _bucket(key: str, seed: int) -> int:
    # sha256 rather than polars' hash: polars does not promise stable hashes across versions.
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") % _BUCKETS


def stable_rank(keys: pl.Expr, seed: int) -> pl.Expr:
    """A seeded, version-stable pseudo-random number per key (for deterministic sampling)."""
    return keys.map_elements(lambda k: _bucket(k, seed), return_dtype=pl.Int64)


def assign_split(rows: pl.DataFrame, eval_fraction: float, seed: int) -> pl.DataFrame:
    """Add ``split`` ("train" / "test"): every row of one prompt lands in the same split."""
    prompts = rows.select("prompt_hash").unique()
    buckets = prompts.with_columns(bucket=stable_rank(pl.col("prompt_hash"), seed))
    buckets = buckets.with_columns(
        split=pl.when(pl.col("bucket") < int(eval_fraction * _BUCKETS)).then(pl.lit("test")).otherwise(pl.lit("train"))
    )
    return rows.join(buckets.select("prompt_hash", "split"), on="prompt_hash", how="left", maintain_order="left")
