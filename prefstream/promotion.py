"""Runs, comparisons and promotions as store records.

A run is a directory with ``run.json`` (``prefstream train``); it is registered in the
``runs`` table when the loop needs it (a round, ``compare``, ``promote``), under a run id
that its comparison requests also use as ``model_id``. A promotion records who approved
which run, why, and the evidence: its export's gate verdict and its comparison against the
run promoted before it. A run whose export was forced past the gate, or that lost that
comparison, needs an override reason. Rolling back is promoting an earlier run again; the
history is append-only.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefstream.errors import PrefstreamError

FINISHED = ("finished", "stopped_early")


@dataclass(frozen=True)
class Run:
    """A training run: its id, directory and ``run.json``."""

    run_id: str
    run_dir: Path
    record: dict

    @property
    def status(self) -> str:
        return self.record.get("status", "unknown")

    @property
    def export_id(self) -> str | None:
        return (self.record.get("export") or {}).get("export_id")

    @property
    def base_model(self) -> str | None:
        return (self.record.get("model") or {}).get("path")

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def read_run(run_dir: str | Path) -> Run:
    """The run in ``run_dir``; a one-line error when it holds no ``run.json``."""
    run_dir = Path(run_dir).resolve()
    path = run_dir / "run.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PrefstreamError(f"{run_dir} is not a run (no run.json); give a `prefstream train --out` directory or a run id") from None
    except json.JSONDecodeError as exc:
        raise PrefstreamError(f"{path} is not valid JSON ({exc.msg}); the run record is damaged") from None
    return Run(run_id_of(run_dir, record), run_dir, record)


def run_id_of(run_dir: Path, record: dict) -> str:
    """``run.json``'s ``run_id``, else the directory name and a digest of its start time (stable for the run)."""
    if record.get("run_id"):
        return str(record["run_id"])
    digest = hashlib.sha256(f"{record.get('started_at', '')}".encode()).hexdigest()[:8]
    return f"{run_dir.name}-{digest}"


def register_run(store, run: Run) -> None:
    """Record ``run`` (a new row only when its status changed since the last one)."""

    def write(con) -> None:
        last = con.execute(
            "SELECT status FROM runs WHERE run_id = ? ORDER BY recorded_at DESC LIMIT 1", [run.run_id]
        ).fetchall()
        if last and last[0][0] == run.status:
            return
        con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [run.run_id, str(run.run_dir), run.status, run.record.get("kind"), run.export_id, run.base_model, _now(), json.dumps(run.record)],
        )

    store.transact(write, what="register run")


def resolve_run(store, ref: str | Path) -> Run:
    """A run directory (registered on the way) or a registered run id; one-line error otherwise."""
    if (Path(ref) / "run.json").is_file():
        run = read_run(ref)
        register_run(store, run)
        return run
    rows = _rows(store, "SELECT run_id, run_dir, record FROM runs WHERE run_id = ? ORDER BY recorded_at DESC LIMIT 1", [str(ref)])
    if not rows:
        raise PrefstreamError(f"no run {ref}: not a run directory (with run.json) nor a registered run id; `prefstream runs list` shows them")
    run_id, run_dir, record = rows[0]
    if (Path(run_dir) / "run.json").is_file():  # the directory is the truth when it is still there
        run = read_run(run_dir)
        register_run(store, run)
        return run
    return Run(run_id, Path(run_dir), json.loads(record))


def model_id(store, ref: str) -> str:
    """What ``model_a`` / ``model_b`` call ``ref``: a run's id, a model directory's content id, or ``ref`` itself."""
    path = Path(ref)
    if (path / "run.json").is_file():
        return resolve_run(store, ref).run_id
    if (path / "config.json").is_file():
        from prefstream.train.reference import model_hash

        return f"sha256:{model_hash(path)[:16]}"  # what `prefstream generate` records for a plain model
    return ref  # a run id, or any model id the feedback names


def record_comparison(store, result: dict, snapshot: int | None) -> str:
    """Store a :func:`prefstream.quality.compare.compare` result; its comparison id."""
    comparison_id = f"cmp-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    result["comparison_id"] = comparison_id
    store.transact(
        lambda con: con.execute(
            "INSERT INTO comparisons VALUES (?, ?, ?, ?, ?, ?)",
            [comparison_id, result["model_a"], result["model_b"], snapshot, _now(), json.dumps(result)],
        ),
        what="record comparison",
    )
    return comparison_id


def compare_and_record(store, model_a: str, model_b: str, *, n_boot: int = 2000, seed: int = 0, con=None) -> dict:
    """Compare two model ids on the current snapshot (or ``con``'s) and store the result with its snapshot."""
    from prefstream.quality.compare import compare
    from prefstream.store import snapshot_of

    with _reading(store, con) as con:
        result = compare(con, model_a, model_b, n_boot=n_boot, seed=seed)
        result["snapshot"] = snapshot_of(con)
    record_comparison(store, result, result["snapshot"])
    return result


def history(store, con=None) -> list[dict]:
    """Every promotion, oldest first (the last one is the run in production)."""
    with _reading(store, con) as con:
        rows = con.execute(
            "SELECT promotion_id, run_id, promoted_by, note, override_reason, previous_run_id, promoted_at, evidence FROM promotions ORDER BY promoted_at"
        ).fetchall()
    keys = ("promotion_id", "run_id", "promoted_by", "note", "override_reason", "previous_run_id", "promoted_at", "evidence")
    return [dict(zip(keys, r)) | {"evidence": json.loads(r[-1]), "promoted_at": r[6].isoformat()} for r in rows]


def promote(store, ref: str, *, by: str, note: str, override: str | None = None) -> dict:
    """Record an approval of ``ref`` with its evidence; refuse (one line, exit 2) what needs ``override``."""
    run = resolve_run(store, ref)
    if not run.finished:
        raise PrefstreamError(f"run {run.run_id} did not finish (status {run.status}); only a finished run can be promoted")
    with _reading(store) as con:
        past = history(store, con)
        current = past[-1] if past else None
        if current and current["run_id"] == run.run_id:
            raise PrefstreamError(f"run {run.run_id} is already the promoted run (since {current['promoted_at']}, by {current['promoted_by']})")
        rollback = any(p["run_id"] == run.run_id for p in past)
        evidence = {"export": export_evidence(store, run, con), "comparison": None, "rollback": rollback}
        if current:
            evidence["comparison"] = _comparison_evidence(store, con, current["run_id"], run.run_id)
    needs = []
    if evidence["export"].get("forced"):
        needs.append(f"its export {run.export_id} was forced past the quality gate ({evidence['export'].get('force_reason') or 'no reason given'})")
    if evidence["comparison"] and evidence["comparison"]["verdict"] == "lost" and not rollback:
        needs.append(f"it lost its comparison against the promoted run {current['run_id']} ({evidence['comparison']['summary']})")
    if needs and not override:
        raise PrefstreamError(f"promoting {run.run_id} needs --override REASON: " + "; ".join(needs))
    promotion = {
        "promotion_id": f"promo-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}",
        "run_id": run.run_id,
        "promoted_by": by,
        "note": note,
        "override_reason": override if needs else None,
        "previous_run_id": current["run_id"] if current else None,
        "promoted_at": _now(),
        "evidence": evidence | {"needed_override": needs},
    }
    store.transact(
        lambda con: con.execute("INSERT INTO promotions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [*list(promotion.values())[:-1], json.dumps(promotion["evidence"])]),
        what="record promotion",
    )
    return promotion


def export_evidence(store, run: Run, con=None) -> dict:
    """The gate verdict of the run's export: from the ``exports`` table, else its manifest on disk."""
    rows = []
    if run.export_id:
        with _reading(store, con) as con:
            rows = con.execute("SELECT manifest FROM exports WHERE export_id = ? LIMIT 1", [run.export_id]).fetchall()
    manifest = json.loads(rows[0][0]) if rows else _manifest_on_disk(run)
    if manifest is None:
        return {"export_id": run.export_id, "found": False}
    quality = manifest.get("quality") or {}
    return {
        "export_id": manifest.get("export_id"),
        "found": True,
        "report_id": quality.get("report_id"),
        "gate_passed": quality.get("passed"),
        "forced": bool(quality.get("forced")),
        "force_reason": quality.get("force_reason"),
        "snapshot": manifest.get("snapshot"),
    }


def _manifest_on_disk(run: Run) -> dict | None:
    path = (run.record.get("export") or {}).get("path")
    try:
        return json.loads((Path(path) / "manifest.json").read_text()) if path else None
    except (OSError, json.JSONDecodeError):
        return None


def _comparison_evidence(store, con, promoted: str, candidate: str) -> dict:
    """The candidate (B) against the promoted run (A), computed now on ``con``'s snapshot."""
    from prefstream.quality.compare import b_won, rate

    try:
        result = compare_and_record(store, promoted, candidate, con=con)
    except PrefstreamError as exc:
        return {"verdict": "none", "summary": str(exc)}
    won = b_won(result)
    figures = result["by_kind"]["all"]
    return {
        "verdict": {True: "won", False: "lost", None: "inconclusive"}[won],
        "comparison_id": result["comparison_id"],
        "summary": f"win rate {rate(figures['win_rate'])}, length-controlled {rate(figures['length_controlled']['lc_win_rate'])} "
        f"over {result['judgements']} judgements",
    }


def list_runs(store) -> list[dict]:
    """Every registered run (latest state) with its export's gate, promotion state and latest comparison."""
    with _reading(store) as con:
        rows = con.execute(
            """SELECT run_id, run_dir, status, kind, export_id, recorded_at FROM runs
               QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY recorded_at DESC) = 1 ORDER BY recorded_at"""
        ).fetchall()
        past = history(store, con)
        current = past[-1]["run_id"] if past else None
        comparisons = con.execute("SELECT model_a, model_b, result FROM comparisons ORDER BY recorded_at").fetchall()
        out = []
        for run_id, run_dir, status, kind, export_id, _ in rows:
            run = Run(run_id, Path(run_dir), {"status": status, "kind": kind, "export": {"export_id": export_id}})
            latest = next((json.loads(r) for a, b, r in reversed(comparisons) if run_id in (a, b)), None)
            out.append(
                {
                    "run_id": run_id,
                    "run_dir": run_dir,
                    "status": status,
                    "kind": kind,
                    "export": export_evidence(store, run, con) if export_id else None,
                    "promoted": "current" if run_id == current else "earlier" if any(p["run_id"] == run_id for p in past) else None,
                    "comparison": _brief(latest, run_id) if latest else None,
                }
            )
    return out


def _brief(result: dict, run_id: str) -> dict:
    """A stored comparison seen from ``run_id``'s side."""
    figures = result["by_kind"]["all"]
    as_b = result["model_b"] == run_id

    def mine(value):
        return value if as_b or value is None else 1 - value

    return {"against": result["model_a"] if as_b else result["model_b"], "win_rate": mine(figures["win_rate"]),
            "lc_win_rate": mine(figures["length_controlled"]["lc_win_rate"]), "judgements": result["judgements"],
            "comparison_id": result.get("comparison_id")}  # fmt: skip


@contextmanager
def _reading(store, con=None):
    """``con`` when the caller holds one (one snapshot, one attach), else a new reader closed after."""
    if con is not None:
        yield con
        return
    con = store.read()
    try:
        yield con
    finally:
        con.close()


def _rows(store, sql: str, params=None) -> list[tuple]:
    with _reading(store) as con:
        return con.execute(sql, params or []).fetchall()


def _now() -> str:
    return datetime.now(UTC).isoformat()


__all__ = [
    "Run", "read_run", "run_id_of", "register_run", "resolve_run", "model_id", "record_comparison", "compare_and_record",
    "history", "promote", "export_evidence", "list_runs",
]
