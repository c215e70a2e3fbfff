"""Lean fixed costs: the model hash is cached by size and mtime; the reference scores only the rows a run reaches."""

from __future__ import annotations

import hashlib
import os

import pytest

from prefstream.train.data import batch_plan
from prefstream.train.loop import rows_used
from prefstream.train.reference import model_hash
from prefstream.train.settings import TrainSettings


def test_model_hash_reads_each_file_once_until_it_changes(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights" * 1000)
    cache = tmp_path / "cache"
    first = model_hash(model, cache)
    assert first == model_hash(model)  # the same digest without a cache

    reads = []
    original = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda fh, name: reads.append(fh.name) or original(fh, name))
    assert model_hash(model, cache) == first and reads == []  # nothing read again
    (model / "model.safetensors").write_bytes(b"other" * 1000)
    os.utime(model / "model.safetensors", ns=(1, 1))
    assert model_hash(model, cache) != first and reads == [str(model / "model.safetensors")]


@pytest.mark.parametrize(("steps", "world_size", "expected"), [(2, 1, 16), (2, 2, 32), (100, 1, 64)])
def test_reference_rows_are_those_the_steps_reach(steps, world_size, expected):
    settings = TrainSettings(kind="dpo", data="d", model="m", out="o", batch_size=8)
    plan = batch_plan(64, 8, seed=42, shuffle=True)
    used = rows_used(plan, steps, settings, world_size)
    assert len(used) == expected and len(set(used)) == expected
