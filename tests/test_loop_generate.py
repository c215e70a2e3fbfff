"""prefstream generate: production prompts from the store -> candidates -> requests on a topic, recorded."""

from __future__ import annotations

import json

from prefstream.judge import read_requests_topic
from tests.store_helpers import land, query, run


def _thumbs(n):
    return [{"schema_version": 1, "kind": "thumbs", "event_id": f"t{i}", "ts": "2026-11-01T10:00:00Z", "prompt": f"How do I fix thing {i % n}?",
             "annotator_id": f"u{i}", "response": "Like this.", "rating": "up"} for i in range(2 * n)]  # fmt: skip


def test_generate_from_store_prompts_to_a_topic(tmp_path, broker, make_topic):
    import torch

    from prefstream.train.tiny_model import build_tiny_model

    torch.set_num_threads(1)
    model = build_tiny_model(tmp_path / "tiny")
    store = land(tmp_path, _thumbs(5), expect_all_valid=True)
    topic = make_topic(1)
    args = ["generate", "--model", model, "--store", store, "--max-prompts", 3, "-k", 4, "--max-new-tokens", 8, "--seed", 1]
    result = run(*args, "--topic", topic, "--bootstrap", broker.bootstrap)
    assert result.exit_code == 0, result.output
    requests = read_requests_topic(broker.bootstrap, topic)
    assert 1 <= len(requests) <= 6 and f"{len(requests)} comparison requests from 3 prompts" in result.output
    assert {r.prompt for r in requests} <= {f"How do I fix thing {i}?" for i in range(5)}
    assert all(r.a.model_id == r.b.model_id and r.a.model_id.startswith("sha256:") for r in requests)
    recorded = query(store, "SELECT request_id FROM comparison_requests ORDER BY 1")
    assert [r[0] for r in recorded] == sorted(r.request_id for r in requests)

    again = run(*args, "--out", tmp_path / "again.jsonl")  # same seed: the same requests, the same order to show them
    lines = [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert again.exit_code == 0 and [(r["request_id"], r["shown_first"]) for r in lines] == [(r.request_id, r.shown_first) for r in requests]

    for extra, message in (([], "give a destination"), (["--out", tmp_path / "again.jsonl"], "exists")):
        result = run(*args, *extra)
        assert result.exit_code == 2 and message in result.output, result.output
    result = run("generate", "--model", model, "--out", tmp_path / "x.jsonl")
    assert result.exit_code == 2 and "give one prompt source" in result.output
