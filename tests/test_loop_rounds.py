"""Three on-policy rounds on a tiny model with a scripted judge: the policy gets better by the judge's lights.

The judge prefers the response in which the letter "e" is the larger share of the characters
(ties when equal): deterministic, independent of length (a count would reward length, and
a policy that learns to be brief would lose), and a preference DPO learns in a few steps. Round 0 is the base model; seed feedback is
the base model's own candidates, judged. Each round trains on what landed since the last one.
"""

from __future__ import annotations

import json
import sys

import pytest

from prefstream.promotion import read_run
from tests.store_helpers import query, run

pytestmark = pytest.mark.slow

JUDGE = """
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    a, b = (r[k]["text"].count("e") / len(r[k]["text"]) for k in "ab")
    print(json.dumps({"request_id": r["request_id"], "choice": "a" if a > b else "b" if b > a else "tie"}))
"""

ROUND = """
name = "t"
store = "store"
workdir = "loop"
base_model = "models/tiny"
[export]
kind = "dpo"
force = true
force_reason = "one scripted judge: agreement cannot be measured"
[train]
lr = 5e-3
max_steps = 30
batch_size = 8
max_length = 48
eval_every = 1000
eval_generations = 0
[generate]
prompts = "train.jsonl"
k = 4
max_new_tokens = 16
[judge]
command = "{python} judge.py"
id = "judge:e"
"""


def test_three_rounds_beat_round_0_by_the_judge(tmp_path, monkeypatch):
    import torch

    from prefstream.train.tiny_model import build_tiny_model

    torch.set_num_threads(1)  # two shared cores: more threads only contend
    monkeypatch.chdir(tmp_path)
    build_tiny_model(tmp_path / "models" / "tiny")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(f"Tell me about topic {i}") + "\n" for i in range(48)))
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps({"prompt": f"Explain item {i}"}) + "\n" for i in range(40)))
    (tmp_path / "judge.py").write_text(JUDGE)
    (tmp_path / "round.toml").write_text(ROUND.format(python=sys.executable))
    judge = ["--judge-cmd", f"{sys.executable} judge.py", "--judge-id", "judge:e"]
    sampling = ["--max-new-tokens", 16, "-k", 4, "--seed", 100]

    # seed feedback: the base model's own candidates, judged and landed
    result = run("generate", "--model", "models/tiny", "--prompts", "train.jsonl", *sampling, "--out", "seed.jsonl")
    assert result.exit_code == 0, result.output
    store = "store"
    result = run("judge", "--requests", "seed.jsonl", *judge, "--store", store)
    assert result.exit_code == 0 and "landed" in result.output, result.output

    for number in (1, 2, 3):
        result = run("round", "next", "--config", "round.toml")
        assert result.exit_code == 0, result.output
        assert f"round {number} (t-{number}-" in result.output and "compared" in result.output, result.output
    status = json.loads(run("round", "status", "--config", "round.toml", "--json").output)
    assert [r["state"] for r in status] == ["compared"] * 3 and all(r["awaited"] == 0 for r in status)
    run3 = status[-1]["run"]["run_dir"]

    # round 3 against round 0 on held-out prompts, judged by the same judge
    result = run("generate", "--model", run3, "--baseline", "models/tiny", "--prompts", "heldout.jsonl", "--max-new-tokens", 16, "-k", 2,
                 "--seed", 7, "--out", "final.jsonl")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert run("judge", "--requests", "final.jsonl", *judge, "--store", store).exit_code == 0
    result = run("compare", "--store", store, "--model-a", "models/tiny", "--model-b", run3, "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)["by_kind"]["model"]
    assert figures["win_rate"] > 0.5 and figures["ci"][0] > 0.5, figures

    # lineage: round 3's model back through its export to the lines of the judged events, and its run chain to round 0
    tree = json.loads(run("lineage", run3, "--store", store, "--json").output)
    export = next(n for n in tree["back"] if n["kind"] == "export")
    files = [n["id"] for n in export["children"] if n["kind"] == "file"]
    assert files == [str((tmp_path / status[1]["folder"] / "judged.jsonl").resolve())]
    chain, node = [], tree["back"]
    while (parent := next((n for n in node if n["kind"] in ("run", "model")), None)) is not None:
        chain.append(parent["kind"])
        node = parent["children"]
    assert chain == ["run", "run", "model"]  # round 2, round 1, the base model
    second = json.loads(run("lineage", status[1]["round_id"], "--store", store, "--json").output)
    (judged,) = next(n for n in second["back"] if n["kind"] == "requests")["children"]
    n = status[1]["requests"]["count"]
    assert judged["label"] == f"{n} judgements landed"
    assert [c["label"] for c in judged["children"]] == [f"file {files[0]} lines 1–{n} ({n} events)"]
    assert any(c["kind"] == "comparison" for c in second["back"])
    assert read_run(run3).finished
    rows = query(store, "SELECT count(*) FROM comparison_requests WHERE round_id IS NOT NULL")
    assert rows[0][0] == sum(r["requests"]["count"] for r in status)

    # a judge that crashes: one line, exit 2, the requests stand and nothing of the judge's is recorded
    (tmp_path / "crash.toml").write_text(ROUND.format(python=sys.executable).replace(" judge.py", " -c 'import sys; sys.exit(3)'"))
    result = run("round", "next", "--config", "crash.toml")
    assert result.exit_code == 2 and "judge exited with code 3" in result.output.splitlines()[-1], result.output
    fourth = json.loads(run("round", "status", "--config", "crash.toml", "--json").output)[-1]
    assert (fourth["number"], fourth["state"], fourth["answered"]) == (4, "requested", 0) and "code 3" in fourth["error"]
    assert not (tmp_path / fourth["folder"] / "judged.jsonl").exists()
    # answered later, outside the round (people through any tool would do the same): status counts them
    result = run("judge", "--requests", fourth["requests"]["path"], *judge, "--store", store, "--out", "late.jsonl")
    assert result.exit_code == 0, result.output
    fourth = json.loads(run("round", "status", "--config", "crash.toml", "--json").output)[-1]
    assert fourth["answered"] == fourth["requests"]["count"] and fourth["awaited"] == 0

    # without a judge, round 5 stops once its requests are out, and status shows them awaited
    (tmp_path / "wait.toml").write_text(ROUND.format(python=sys.executable).split("[judge]")[0])
    result = run("round", "next", "--config", "wait.toml")
    assert result.exit_code == 0 and "awaits judgements on" in result.output, result.output
    fifth = json.loads(run("round", "status", "--config", "wait.toml", "--json").output)[-1]
    assert (fifth["number"], fifth["state"], fifth["answered"]) == (5, "requested", 0)
    assert fifth["awaited"] == fifth["requests"]["count"] > 0
