"""On-policy rounds: export -> train -> generate against the previous policy -> (judge -> land -> compare).

One :func:`next_round` call is one round (DESIGN.md, "The loop"):

1. export the feedback that landed since the previous round (gated like ``prefstream export``);
2. train from the previous round's policy (round 1: the configured base model, "round 0");
3. generate candidates from the new and the previous policy on held-out prompts and pair
   them into comparison requests (A = previous, B = new), written to a JSONL file (and a
   Kafka topic when configured) and recorded in ``comparison_requests``;
4. with a judge command: judge, land the judgements, compare B with A. Without one the round
   stops at "requested" and :func:`status` shows what is awaited; people answer with
   ``pairwise`` events carrying ``metadata.request_id``.

Each step appends a row to ``rounds`` (state ``exported`` / ``trained`` / ``requested`` /
``compared``, or ``failed`` with the error), and the record links the round's export, run,
requests, judgements and comparison. A failed round is retried under the same number.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from prefstream.errors import PrefstreamError
from prefstream.schemas.requests import ComparisonRequest

# ---- prompts and requests (also used by `prefstream generate`) -----------------------------


def prompts_from_file(path: str | Path) -> list:
    """Prompts from JSONL: each line a JSON string, a message list, or an object with ``prompt``."""
    path = Path(path)
    if not path.is_file():
        raise PrefstreamError(f"no such prompts file: {path}")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            raise PrefstreamError(f"{path}:{number} is not JSON; write one prompt a line as a JSON string or {{\"prompt\": ...}}") from None
        prompt = value.get("prompt") if isinstance(value, dict) else value
        if not isinstance(prompt, (str, list)) or not prompt:
            raise PrefstreamError(f"{path}:{number} holds no prompt (a non-empty string or message list)")
        prompts.append(prompt)
    return prompts


def prompts_from_export(path: str | Path, split: str = "test") -> list:
    """The distinct prompts of an export's split (the test split: held out from its training)."""
    from prefstream.train.export import load_export

    rows = getattr(load_export(path), split)
    return _distinct(row["prompt"] for row in rows)


def prompts_from_store(store, *, since=None, until=None, limit: int | None = None, snapshot: int | None = None) -> list:
    """Distinct production prompts (thumbs and pairwise feedback) with ``ts`` in [since, until), in a
    deterministic order (by prompt hash): a sample of the window that does not depend on arrival order."""
    from prefstream.times import parse_time

    since, until = parse_time(since, "since"), parse_time(until, "until")
    con = store.read(snapshot)
    try:
        rows = con.execute(
            f"""SELECT any_value(prompt) FROM (SELECT prompt, prompt_hash, ts FROM thumbs UNION ALL SELECT prompt, prompt_hash, ts FROM pairwise)
                WHERE ($since IS NULL OR ts >= $since) AND ($until IS NULL OR ts < $until)
                GROUP BY prompt_hash ORDER BY prompt_hash {'LIMIT ' + str(int(limit)) if limit else ''}""",
            {"since": since, "until": until},
        ).fetchall()
    finally:
        con.close()
    return [json.loads(r[0]) for r in rows]


def _distinct(prompts) -> list:
    seen, out = set(), []
    for p in prompts:
        key = json.dumps(p, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def pair_requests(candidates_a: list, candidates_b: list | None = None, *, seed: int = 0, metadata: dict | None = None) -> tuple[list[dict], int]:
    """Comparison requests from generated candidates; ``(requests, skipped)``.

    With two lists (two models, same prompts and k), candidate i of a prompt from A meets
    candidate i from B. With one list, consecutive candidates of a prompt meet (0-1, 2-3, ...).
    A pair is skipped when a text is empty or holds a NUL character (the feedback wire rejects
    it, so no judgement of it could land) or when both texts are the same. The order to show
    them in comes from the request id and ``seed``: random across requests, reproducible.
    """
    if candidates_b is None:
        by_prompt: dict[int, list] = {}
        for c in candidates_a:
            by_prompt.setdefault(c.prompt_index, []).append(c)
        pairs = [(cs[i], cs[i + 1]) for cs in by_prompt.values() for i in range(0, len(cs) - 1, 2)]
    else:
        if [(c.prompt_index, c.sample_index) for c in candidates_a] != [(c.prompt_index, c.sample_index) for c in candidates_b]:
            raise PrefstreamError("the two models' candidates do not line up (same prompts and k needed)")
        pairs = list(zip(candidates_a, candidates_b))
    created = datetime.now(UTC).isoformat(timespec="milliseconds")
    requests, skipped = [], 0
    for a, b in pairs:
        if not a.text.strip() or not b.text.strip() or "\x00" in a.text + b.text or a.text == b.text:
            skipped += 1
            continue
        request_id = "req-" + hashlib.sha256(f"{a.candidate_id}\0{b.candidate_id}".encode()).hexdigest()[:24]
        flip = hashlib.sha256(f"{request_id}\0{seed}".encode()).digest()[0] & 1
        request = ComparisonRequest.model_validate(
            {
                "request_id": request_id,
                "ts": created,
                "prompt": a.prompt,
                "a": {"candidate_id": a.candidate_id, "model_id": a.model_id, "text": a.text},
                "b": {"candidate_id": b.candidate_id, "model_id": b.model_id, "text": b.text},
                "shown_first": "b" if flip else "a",
                "metadata": metadata or {},
            }
        )
        requests.append(request.model_dump(mode="json"))
    return requests, skipped


def record_requests(store, requests: list[dict], round_id: str | None = None) -> None:
    """Record emitted requests in ``comparison_requests`` (what `round status` counts answers against)."""
    if not requests:
        return
    rows = [
        [r["request_id"], round_id, r["a"]["model_id"], r["b"]["model_id"], r["a"]["candidate_id"], r["b"]["candidate_id"], r["ts"], json.dumps(r)]
        for r in requests
    ]
    store.transact(lambda con: con.executemany("INSERT INTO comparison_requests VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows), what="record requests")


def policy_dir(model: str | Path) -> Path:
    """The weights to load for a run directory (its ``final/``) or a model directory (itself)."""
    path = Path(model)
    if not (path / "run.json").is_file():
        return path
    return path / "final" / "merged" if (path / "final" / "merged").is_dir() else path / "final"


def model_id_for(store, model: str | Path) -> str | None:
    """The model id candidates carry: a run's id (registering it), else None (generation's content id)."""
    if (Path(model) / "run.json").is_file():
        from prefstream.promotion import read_run, register_run

        run = read_run(model)
        if store is not None:
            register_run(store, run)
        return run.run_id
    return None


# ---- the round's configuration ----------------------------------------------------------------


@dataclass(frozen=True)
class RoundConfig:
    """``round.toml``. Paths are as on the command line (relative to the working directory).

    \b
        name = "demo"                 # the loop's name: rounds demo-1, demo-2, ...
        store = "lake"                # and data_path = ... for a catalog URL
        workdir = "loop"              # each round's export, run and requests go in a folder here
        base_model = "models/tiny"    # round 0's policy
        reference = "previous"        # or "original" (needs LoRA: the base with adapters disabled)
        [export]                      # ExportSettings fields, plus force / force_reason (seed: + the round number)
        kind = "dpo"
        [train]                       # TrainSettings fields (lr, max_steps, beta, lora_r, ...)
        lr = 5e-4
        [generate]
        prompts = "export-test"       # or "store" (production prompts since the last round) or a JSONL path
        max_prompts = 64
        k = 2
        [judge]                       # optional: without it the round stops at "requested"
        command = "python judge.py"
        [requests]                    # optional: also produce the requests to Kafka
        topic = "requests"
        bootstrap = "127.0.0.1:9092"
    """

    name: str
    store: str
    workdir: Path
    base_model: str  # a model directory or a run directory (its final model)
    data_path: str | None = None
    reference: Literal["previous", "original"] = "previous"
    export: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    generate: dict = field(default_factory=dict)
    judge: dict | None = None
    requests: dict | None = None

    @classmethod
    def load(cls, path: str | Path) -> "RoundConfig":
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PrefstreamError(f"round config {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise PrefstreamError(f"round config {path} is not valid TOML: {exc}") from None
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise PrefstreamError(f"round config {path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        missing = [k for k in ("name", "store", "workdir", "base_model") if k not in raw]
        if missing:
            raise PrefstreamError(f"round config {path} lacks {missing[0]!r}")
        if raw.get("reference", "previous") not in ("previous", "original"):
            raise PrefstreamError(f"round config {path}: reference must be \"previous\" or \"original\"")
        for table, allowed in _tables().items():
            value = raw.get(table, {})
            if not isinstance(value, dict):
                raise PrefstreamError(f"round config {path}: [{table}] must be a table")
            wrong = sorted(set(value) - allowed)
            if wrong:
                raise PrefstreamError(f"round config {path}: [{table}] has no setting {wrong[0]!r} (known: {', '.join(sorted(allowed))})")
        if raw.get("reference") == "original" and not raw.get("train", {}).get("lora_r"):
            raise PrefstreamError(
                f"round config {path}: reference = \"original\" needs LoRA ([train] lora_r > 0): the trainer's reference is the "
                "model it starts from, or with an adapter the base model with its adapters disabled"
            )
        if "judge" in raw and not raw["judge"].get("command"):
            raise PrefstreamError(f"round config {path}: [judge] needs command = \"...\" (or leave the table out)")
        raw["workdir"] = Path(raw["workdir"])
        return cls(**raw)


def _tables() -> dict[str, set[str]]:
    """The settings each table of round.toml accepts (the round sets the rest itself)."""
    from prefstream.prep.settings import ExportSettings
    from prefstream.train.settings import TrainSettings

    return {
        "export": set(ExportSettings.__dataclass_fields__) - {"since", "until"} | {"force", "force_reason"},
        "train": set(TrainSettings.__dataclass_fields__) - {"kind", "data", "model", "out"},
        "generate": set(GENERATE_DEFAULTS),
        "judge": {"command", "id", "timeout"},
        "requests": {"topic", "bootstrap"},
    }


GENERATE_DEFAULTS = {"prompts": "export-test", "max_prompts": 64, "k": 2, "temperature": 1.0, "top_p": 1.0,
                     "max_new_tokens": 64, "seed": 0, "batch_size": 16, "device": None}  # fmt: skip


# ---- the round ---------------------------------------------------------------------------------


def rounds(store, name: str, *, include_failed: bool = False) -> list[dict]:
    """The loop's rounds, latest record of each, by number (failed attempts left out unless asked)."""
    con = store.read()
    try:
        rows = con.execute(
            """SELECT record FROM rounds WHERE json_extract_string(record, '$.name') = ?
               QUALIFY row_number() OVER (PARTITION BY round_id ORDER BY recorded_at DESC) = 1 ORDER BY number, recorded_at""",
            [name],
        ).fetchall()
    finally:
        con.close()
    records = [json.loads(row[0]) for row in rows]
    done = {r["number"] for r in records if r["state"] != "failed"}
    # a failed attempt stays visible (with its error) until its number is done
    return [r for r in records if r["state"] != "failed" or (include_failed and r["number"] not in done)]


def _save(store, record: dict) -> None:
    record["updated_at"] = datetime.now(UTC).isoformat()
    values = [record["round_id"], record["number"], record["state"], (record.get("export") or {}).get("export_id"),
              (record.get("run") or {}).get("run_id"), record.get("previous_model"), (record.get("comparison") or {}).get("comparison_id"),
              record["updated_at"], json.dumps(record, default=str)]  # fmt: skip
    store.transact(lambda con: con.execute("INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values), what="record round")


def next_round(config: RoundConfig, *, quality_config: dict | None = None, say=print) -> dict:
    """Run one round; its final record. A failing step records the round as failed and re-raises."""
    from prefstream.store import StoreLocation, open_store

    with open_store(StoreLocation(config.store, config.data_path), create=False) as store:
        done = rounds(store, config.name)
        previous = done[-1] if done else None
        number = previous["number"] + 1 if previous else 1
        round_id = f"{config.name}-{number}-{uuid.uuid4().hex[:6]}"
        folder = (config.workdir / round_id).resolve()  # absolute: records and run.json are read from anywhere
        until = datetime.now(UTC).isoformat()
        record = {
            "round_id": round_id, "name": config.name, "number": number, "state": "started", "folder": str(folder),
            "window": {"since": (previous or {}).get("window", {}).get("until"), "until": until},
            "reference": config.reference, "config": _jsonable(config),
        }  # fmt: skip
        try:
            _run(store, config, record, previous, folder, quality_config or {}, say)
        except BaseException as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            if record["state"] in ("started", "exported", "trained"):  # retried under the same number
                record["failed_at"], record["state"] = record["state"], "failed"
            elif record["state"] == "judge_failed":  # the requests stand; people (or a re-run judge) can answer them
                record["state"] = "requested"
            _save(store, record)
            raise
        return record


def _run(store, config: RoundConfig, record: dict, previous: dict | None, folder: Path, quality_config: dict, say) -> None:
    from prefstream.ingest.backfill import ingest_files
    from prefstream.judge import Judge, judge_requests, send
    from prefstream.prep import ExportSettings, Output
    from prefstream.prep import export as run_export
    from prefstream.promotion import compare_and_record, read_run, register_run
    from prefstream.quality.compare import rate
    from prefstream.train import TrainSettings
    from prefstream.train import run as train
    from prefstream.train.generate import generate_candidates

    number = record["number"]
    target = config.requests or {}
    if target.get("topic"):  # fail before the work, not after it
        from prefstream.ingest.produce import topic_exists

        if not topic_exists(target.get("bootstrap", "127.0.0.1:9092"), target["topic"]):
            raise PrefstreamError(f"[requests] topic {target['topic']!r} does not exist at {target.get('bootstrap', '127.0.0.1:9092')}; create it first")
    # 1. export what landed since the last round
    options = dict(config.export)
    force, force_reason = options.pop("force", False), options.pop("force_reason", None)
    # Each round splits with its own seed: the held-out prompts a round generates on (its test
    # split) would otherwise land in the test split again, and their judgements never train.
    options["seed"] = options.get("seed", 0) + number
    settings = ExportSettings(since=record["window"]["since"], until=record["window"]["until"], **{"kind": "dpo", **options})
    say(f"round {number}: exporting {settings.kind} feedback since {record['window']['since'] or 'the beginning'}")
    manifest = run_export(store, settings, Output(out=folder / "export", force=force, force_reason=force_reason, quality_config=quality_config))
    quality = manifest["quality"]
    record["export"] = {"export_id": manifest["export_id"], "path": str(folder / "export"), "rows": manifest["rows"],
                        "snapshot": manifest["snapshot"], "gate_passed": quality.get("passed"), "forced": quality.get("forced")}  # fmt: skip
    record["state"] = "exported"
    _save(store, record)

    # 2. train from the previous policy (the run's folder name makes its id readable: run-NAME-N-<digest>)
    run_dir = folder / f"run-{config.name}-{number}"
    start, previous_id = _starting_point(store, config, previous)
    train_options = {**config.train, "merge": True} if config.train.get("lora_r") and config.reference == "previous" else dict(config.train)
    say(f"round {number}: training {settings.kind} from {start}")
    train(TrainSettings(kind=settings.kind, data=str(folder / "export"), model=str(start.resolve()), out=str(run_dir), **train_options))
    run = read_run(run_dir)
    register_run(store, run)
    record["run"] = {"run_id": run.run_id, "run_dir": str(run.run_dir), "status": run.status, "started_from": str(start)}
    record["previous_model"] = previous_id
    record["state"] = "trained"
    _save(store, record)

    # 3. candidates from the new policy (B) and the previous one (A) on held-out prompts
    g = {**GENERATE_DEFAULTS, **config.generate}
    if g["prompts"] == "export-test":
        prompts = prompts_from_export(folder / "export")
    elif g["prompts"] == "store":
        prompts = prompts_from_store(store, since=record["window"]["since"], until=record["window"]["until"])
    else:
        prompts = prompts_from_file(g["prompts"])
    prompts = prompts[: g["max_prompts"]]
    # Both policies share the round's seed (common random numbers: the same noise for A and B);
    # each round gets its own, so its requests are fresh draws.
    sampling = {k: g[k] for k in ("temperature", "top_p", "max_new_tokens", "batch_size", "device")} | {"seed": g["seed"] + number}
    say(f"round {number}: generating {g['k']} candidates for {len(prompts)} prompts from {run.run_id} and {previous_id}")
    new = generate_candidates(policy_dir(run_dir), prompts, g["k"], model_id=run.run_id, **sampling)
    old = generate_candidates(policy_dir(previous["run"]["run_dir"] if previous else config.base_model), prompts, g["k"], model_id=previous_id, **sampling)
    requests, skipped = pair_requests(old, new, seed=sampling["seed"], metadata={"round_id": record["round_id"]})
    if not requests:
        raise PrefstreamError(f"round {number}: every candidate pair was empty or identical ({skipped}); raise temperature or max_new_tokens")
    where = send(requests, out=folder / "requests.jsonl", topic=target.get("topic"), bootstrap=target.get("bootstrap", "127.0.0.1:9092"))
    record_requests(store, requests, record["round_id"])
    record["requests"] = {"path": str(folder / "requests.jsonl"), "count": len(requests), "skipped": skipped, "topic": target.get("topic"),
                          "model_a": previous_id, "model_b": run.run_id, "prompts": len(prompts)}  # fmt: skip
    record["state"] = "requested"
    _save(store, record)
    say(f"round {number}: {len(requests)} comparison requests to {where}")
    if not config.judge:
        return

    # 4. judge, land, compare
    judge = Judge(config.judge["command"], config.judge.get("id"), float(config.judge.get("timeout", 600)))
    record["state"] = "judge_failed"  # until the judgements have landed
    events = judge_requests(judge, [ComparisonRequest.model_validate(r) for r in requests], folder / "judged.dead-letters.jsonl")
    send(events, out=folder / "judged.jsonl")
    counts = ingest_files(store, [folder / "judged.jsonl"])
    record["judgements"] = {"path": str(folder / "judged.jsonl"), "count": len(events), "landed": counts.landed, "judge": judge.annotator_id}
    record["state"] = "judged"
    _save(store, record)
    result = compare_and_record(store, previous_id, run.run_id)
    figures = result["by_kind"]["all"]
    record["comparison"] = {"comparison_id": result["comparison_id"], "win_rate": figures["win_rate"], "ci": figures["ci"],
                            "lc_win_rate": figures["length_controlled"]["lc_win_rate"], "lc_se": figures["length_controlled"]["se"],
                            "judgements": result["judgements"]}  # fmt: skip
    record["state"] = "compared"
    _save(store, record)
    say(f"round {number}: {run.run_id} over {previous_id}: win rate {figures['win_rate']:.3f} "
        f"[{figures['ci'][0]:.3f}, {figures['ci'][1]:.3f}], length-controlled {rate(record['comparison']['lc_win_rate'])}")  # fmt: skip


def _starting_point(store, config: RoundConfig, previous: dict | None) -> tuple[Path, str]:
    """The model this round trains from, and the model id of the previous policy (what B is compared with)."""
    if previous is None:
        from prefstream.promotion import model_id

        return policy_dir(config.base_model), model_id(store, config.base_model)
    final = Path(previous["run"]["run_dir"]) / "final"
    # "original" continues the previous adapter, whose reference is the base with adapters disabled
    start = final / "merged" if config.train.get("lora_r") and config.reference == "previous" else final
    return start, previous["run"]["run_id"]


def status(store, name: str) -> list[dict]:
    """Each round with what it awaits: for a requested round, requests answered and still open."""
    out = []
    con = store.read()
    try:
        for record in rounds(store, name, include_failed=True):
            answered = con.execute(
                """SELECT count(DISTINCT json_extract_string(metadata, '$.request_id')), count(*) FROM pairwise
                   WHERE json_extract_string(metadata, '$.request_id') IN (SELECT request_id FROM comparison_requests WHERE round_id = ?)""",
                [record["round_id"]],
            ).fetchall()[0]
            total = (record.get("requests") or {}).get("count", 0)
            out.append(record | {"answered": int(answered[0]), "judgements_landed": int(answered[1]), "awaited": max(total - int(answered[0]), 0)})
    finally:
        con.close()
    return out


def _jsonable(config: RoundConfig) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in config.__dict__.items()}


__all__ = [
    "RoundConfig", "next_round", "rounds", "status", "pair_requests", "record_requests", "prompts_from_file",
    "prompts_from_export", "prompts_from_store", "policy_dir", "model_id_for",
]
