"""A judge command answers comparison requests; its answers become ordinary ``pairwise`` events.

The command (an LLM-as-judge script, a reward model) reads one request JSON object a line on
stdin and writes one ``{"request_id": ..., "choice": "a" | "b" | "tie"}`` line per request on
stdout; ``a`` and ``b`` are the request's candidates, whatever order it says to show them in.
It runs without a shell (wrap it in ``sh -c '...'`` for pipes).

All or nothing: a judge that exits non-zero, outlives its timeout, writes a line that is not
a valid answer, or leaves a request unanswered produces no events at all. Each bad line (and
the failure itself) is returned as a dead letter with its reason, for the caller to write.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from prefstream.errors import PrefstreamError
from prefstream.schemas.requests import REQUEST_ADAPTER, ComparisonRequest

CHOICES = ("a", "b", "tie")


class JudgeFailed(PrefstreamError):
    """The judge command failed; ``dead_letters`` say how (one per bad line, or one for the failure)."""

    def __init__(self, message: str, dead_letters: list[dict]):
        super().__init__(message)
        self.dead_letters = dead_letters


@dataclass(frozen=True)
class Judge:
    """A judge command, the annotator id its events carry, and how long it may run."""

    command: str
    judge_id: str | None = None
    timeout_s: float = 600.0

    @property
    def annotator_id(self) -> str:
        return self.judge_id or f"judge:{self.command}"


def read_requests(path: str | Path) -> list[ComparisonRequest]:
    """Comparison requests from a JSONL file; a line that is not one is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise PrefstreamError(f"no such requests file: {path}; write one with `prefstream generate --out FILE`")
    requests, seen = [], set()
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                request = REQUEST_ADAPTER.validate_json(line)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "line"
                raise PrefstreamError(f"{path}:{number} is not a comparison request ({where}: {first['msg']})") from None
            if request.request_id in seen:
                raise PrefstreamError(f"{path}:{number} repeats request_id {request.request_id}")
            seen.add(request.request_id)
            requests.append(request)
    return requests


def read_requests_topic(bootstrap: str, topic: str, *, idle_s: float = 3.0) -> list[ComparisonRequest]:
    """Every comparison request on a Kafka topic, from the beginning to its end at the time of reading.

    No consumer group: nothing is committed, so reading never takes requests away from others.
    The end is each partition's high watermark as fetch responses report it (``end_offsets``
    is not reliable on every Kafka-compatible broker); a partition that stays silent for
    ``idle_s`` counts as read.
    """
    import time

    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, allow_auto_create_topics=False)
    except KafkaError as exc:
        raise PrefstreamError(f"cannot reach Kafka at {bootstrap} ({type(exc).__name__})") from None
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise PrefstreamError(f"no topic {topic!r} at {bootstrap}; topics: {', '.join(sorted(consumer.topics())) or 'none'}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        requests, last = [], time.monotonic()
        while time.monotonic() - last < idle_s:
            for tp, messages in consumer.poll(timeout_ms=200).items():
                last = time.monotonic()
                for m in messages:
                    try:
                        requests.append(REQUEST_ADAPTER.validate_json(m.value))
                    except ValidationError as exc:
                        raise PrefstreamError(f"{topic}[{tp.partition}]@{m.offset} is not a comparison request ({exc.errors()[0]['msg']})") from None
            if all(consumer.highwater(tp) is not None and consumer.position(tp) >= consumer.highwater(tp) for tp in tps):
                break
    finally:
        consumer.close()
    return list({r.request_id: r for r in requests}.values())  # a producer retry is the same request


def run_judge(judge: Judge, requests: list[ComparisonRequest]) -> dict[str, str]:
    """Run the judge over ``requests``; ``{request_id: choice}`` for every request, or :class:`JudgeFailed`."""
    try:
        argv = shlex.split(judge.command)
    except ValueError as exc:
        raise PrefstreamError(f"cannot parse --judge-cmd {judge.command!r}: {exc}") from None
    if not argv:
        raise PrefstreamError("--judge-cmd is empty; give the program to run")
    payload = b"".join(req.model_dump_json().encode() + b"\n" for req in requests)
    try:
        # Its own session, so a timeout kills the judge and anything it started.
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise PrefstreamError(f"cannot start judge {argv[0]!r}: {exc.strerror or exc}") from None
    try:
        stdout, stderr = proc.communicate(payload, timeout=judge.timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        reason = f"judge timed out after {judge.timeout_s:g}s"
        raise JudgeFailed(f"{reason} (`{judge.command}`); nothing recorded", [_dead(b"", reason, judge)]) from None
    if proc.returncode != 0:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no stderr"]
        reason = f"judge exited with code {proc.returncode}: {tail[0][:300]}"
        raise JudgeFailed(f"{reason} (`{judge.command}`); nothing recorded", [_dead(stderr[-4000:], reason, judge)])
    return _parse_answers(stdout, requests, judge)


def _parse_answers(stdout: bytes, requests: list[ComparisonRequest], judge: Judge) -> dict[str, str]:
    wanted = {req.request_id for req in requests}
    choices: dict[str, str] = {}
    dead = []
    for number, line in enumerate(stdout.splitlines(), start=1):
        if not line.strip():
            continue
        reason = None
        try:
            answer = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            reason = "not JSON"
        else:
            if not isinstance(answer, dict):
                reason = "not a JSON object"
            elif answer.get("request_id") not in wanted:
                reason = f"unknown request_id {answer.get('request_id')!r}"
            elif answer.get("choice") not in CHOICES:
                reason = f"choice must be one of a, b, tie; got {answer.get('choice')!r}"
            elif answer["request_id"] in choices:
                reason = f"a second answer for request_id {answer['request_id']}"
            else:
                choices[answer["request_id"]] = answer["choice"]
        if reason:
            dead.append(_dead(line, f"stdout line {number}: {reason}", judge))
    dead += [_dead(rid.encode(), f"request {rid} was not answered", judge) for rid in sorted(wanted - choices.keys())]
    if dead:
        raise JudgeFailed(f"judge `{judge.command}` gave {len(dead)} bad or missing answers (first: {dead[0]['reason']}); nothing recorded", dead)
    return choices


def _dead(raw: bytes, reason: str, judge: Judge) -> dict:
    return {"raw": raw.decode("utf-8", "replace"), "reason": reason, "judge": judge.annotator_id, "ts": _now()}


def judgement_events(requests: list[ComparisonRequest], choices: dict[str, str], judge: Judge) -> list[dict]:
    """One ``pairwise`` wire event per answered request (``annotator_kind: "model"``).

    The event id is a digest of the request and the judge, so a re-run of the same judge is a
    producer retry (counted in ``duplicates``), not a second vote.
    """
    ts = _now()
    events = []
    for req in requests:
        digest = hashlib.sha256(f"{req.request_id}\0{judge.annotator_id}".encode()).hexdigest()[:24]
        events.append(
            {
                "schema_version": 1,
                "kind": "pairwise",
                "event_id": f"judge-{digest}",
                "ts": ts,
                "prompt": req.model_dump(mode="json")["prompt"],
                "annotator_id": judge.annotator_id,
                "annotator_kind": "model",
                "response_a": req.a.text,
                "response_b": req.b.text,
                "choice": choices[req.request_id],
                "shown_first": req.shown_first,
                "model_a": req.a.model_id,
                "model_b": req.b.model_id,
                "metadata": {"request_id": req.request_id, "candidate_a": req.a.candidate_id, "candidate_b": req.b.candidate_id},
            }
        )
    return events


def judge_requests(judge: Judge, requests: list[ComparisonRequest], dead_letters: Path) -> list[dict]:
    """Run the judge and return its events; on failure append the dead letters to ``dead_letters`` and raise."""
    try:
        return judgement_events(requests, run_judge(judge, requests), judge)
    except JudgeFailed as exc:
        dead_letters.parent.mkdir(parents=True, exist_ok=True)
        with dead_letters.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(d) + "\n" for d in exc.dead_letters)
        raise JudgeFailed(f"{exc}; dead letters in {dead_letters}", exc.dead_letters) from None


def write_jsonl(path: Path, records: list[dict]) -> Path:
    """Write ``records`` one a line to a new file ``path``, all or nothing (temporary file, then rename)."""
    if path.exists():
        raise PrefstreamError(f"{path} exists; choose another output file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)
    return path


def send(records: list[dict], *, out: Path | None = None, topic: str | None = None, bootstrap: str | None = None) -> str:
    """Write ``records`` to a new JSONL file and / or produce them to a Kafka topic; say where."""
    from prefstream.ingest.produce import produce, topic_exists

    if topic and not topic_exists(bootstrap, topic):  # producing would create it: a typo must not
        raise PrefstreamError(f"no topic {topic!r} at {bootstrap}; create it first (e.g. `prefstream broker --topic {topic}:1`) or fix the name")
    where = []
    if out is not None:
        where.append(str(write_jsonl(out, records)))
    if topic:
        produce(bootstrap, topic, records)
        where.append(f"topic {topic} at {bootstrap}")
    return ", ".join(where)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


__all__ = ["Judge", "JudgeFailed", "read_requests", "read_requests_topic", "run_judge", "judgement_events", "judge_requests", "write_jsonl", "send"]
