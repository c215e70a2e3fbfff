"""prefstream judge: a scripted judge's answers become pairwise events; a bad judge records nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from prefstream.judge import Judge, JudgeFailed, judge_requests, read_requests, write_jsonl
from prefstream.schemas import parse
from prefstream.schemas.requests import ComparisonRequest
from tests.store_helpers import run

# Prefers the candidate containing "blue" (a, when neither or both do); each branch below spoils it.
JUDGE = """
import json, sys, time
mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
for n, line in enumerate(sys.stdin):
    req = json.loads(line)
    choice = "b" if "blue" in req["b"]["text"] and "blue" not in req["a"]["text"] else "a"
    if mode == "crash" and n == 1:
        print("judge model out of memory", file=sys.stderr)
        sys.exit(3)
    if mode == "hang":
        time.sleep(60)
    if mode == "garbage" and n == 1:
        print("I think B is better")
        print(json.dumps({"request_id": req["request_id"], "choice": "maybe"}))
        continue
    if mode == "skip" and n == 2:
        continue
    print(json.dumps({"request_id": req["request_id"], "choice": choice}), flush=True)
"""


def _requests(n=3):
    return [
        {
            "request_id": f"req-{i}",
            "ts": "2026-12-01T10:00:00Z",
            "prompt": f"Name a colour ({i})",
            "a": {"candidate_id": f"c{i}a", "model_id": "run-0", "text": "red"},
            "b": {"candidate_id": f"c{i}b", "model_id": "run-1", "text": "blue sky" if i % 2 == 0 else "green"},
            "shown_first": "b" if i % 2 else "a",
        }
        for i in range(n)
    ]


@pytest.fixture
def setup(tmp_path):
    script = tmp_path / "judge.py"
    script.write_text(JUDGE)
    requests = write_jsonl(tmp_path / "requests.jsonl", [ComparisonRequest.model_validate(r).model_dump(mode="json") for r in _requests()])
    return tmp_path, f"{sys.executable} {script}", requests


def test_judge_answers_become_valid_pairwise_events(setup):
    tmp_path, command, requests = setup
    result = run("judge", "--requests", requests, "--judge-cmd", command, "--judge-id", "judge:blue", "--out", tmp_path / "judged.jsonl")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in (tmp_path / "judged.jsonl").read_text().splitlines()]
    assert [e["choice"] for e in events] == ["b", "a", "b"]
    assert [e["shown_first"] for e in events] == ["a", "b", "a"]
    first = events[0]
    assert (first["model_a"], first["model_b"], first["annotator_id"], first["annotator_kind"]) == ("run-0", "run-1", "judge:blue", "model")
    assert first["metadata"] == {"request_id": "req-0", "candidate_a": "c0a", "candidate_b": "c0b"}
    for event in events:
        parsed = parse(json.dumps(event).encode())
        assert getattr(parsed, "kind", None) == "pairwise", parsed


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("crash", "judge exited with code 3: judge model out of memory"),
        ("hang", "judge timed out after 2s"),
        ("garbage", "stdout line 2: not JSON"),
        ("skip", "request req-2 was not answered"),
    ],
)
def test_a_bad_judge_records_nothing_and_dead_letters_why(setup, mode, reason):
    tmp_path, command, requests = setup
    out = tmp_path / "judged.jsonl"
    result = run("judge", "--requests", requests, "--judge-cmd", f"{command} {mode}", "--timeout", 2, "--out", out)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "nothing recorded" in result.output
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))
    dead = [json.loads(line) for line in (tmp_path / "judged.dead-letters.jsonl").read_text().splitlines()]
    assert any(d["reason"].startswith(reason) for d in dead), dead
    if mode == "garbage":
        assert [d["reason"] for d in dead] == [
            "stdout line 2: not JSON",
            "stdout line 3: choice must be one of a, b, tie; got 'maybe'",
            "request req-1 was not answered",
        ]
        assert dead[0]["raw"] == "I think B is better"


def test_bad_request_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"request_id": "x"}\n')
    with pytest.raises(Exception, match=r"bad.jsonl:1 is not a comparison request"):
        read_requests(bad)
    result = run("judge", "--requests", tmp_path / "missing.jsonl", "--judge-cmd", "true", "--out", tmp_path / "o.jsonl")
    assert result.exit_code == 2 and "no such requests file" in result.output
    result = run("judge", "--requests", bad, "--judge-cmd", "no-such-judge-program", "--out", tmp_path / "o.jsonl")
    assert result.exit_code == 2


def test_unstartable_judge_is_a_one_line_error(setup):
    tmp_path, _, requests = setup
    with pytest.raises(Exception, match="cannot start judge 'no-such-judge-program'"):
        judge_requests(Judge("no-such-judge-program"), read_requests(requests), tmp_path / "dead.jsonl")
    with pytest.raises(JudgeFailed):
        judge_requests(Judge("false"), read_requests(requests), tmp_path / "dead.jsonl")
    assert Path(tmp_path / "dead.jsonl").exists()


def test_requests_from_a_topic_judged_to_a_topic(setup, broker, make_topic, group_id):
    from prefstream.ingest.produce import produce
    from tests.kafka_helpers import ingest

    tmp_path, command, requests = setup
    source, target = make_topic(2), make_topic(1)
    lines = [json.loads(line) for line in requests.read_text().splitlines()]
    produce(broker.bootstrap, source, lines + lines[:1])  # and a producer retry
    result = run("judge", "--requests-topic", source, "--bootstrap", broker.bootstrap, "--judge-cmd", command, "--topic", target,
                 "--dead-letters", tmp_path / "dead.jsonl")  # fmt: skip
    assert result.exit_code == 0 and "judged 3 requests" in result.output, result.output
    landed, opened = ingest(broker, [target], group_id, tmp_path / "store")
    opened.close()
    assert landed.counts.pairwise == 3, landed
    assert run("judge", "--requests-topic", "no-such-topic", "--bootstrap", broker.bootstrap, "--judge-cmd", command, "--topic", target).exit_code == 2
    missing = run("judge", "--requests", requests, "--judge-cmd", command, "--topic", "no-such-feedback", "--bootstrap", broker.bootstrap)
    assert missing.exit_code == 2 and "no topic 'no-such-feedback'" in missing.output
