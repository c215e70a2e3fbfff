"""Lineage: any artefact (run, export, quality report, round) back to the store snapshot and the
Kafka offsets / backfilled file lines behind it, and forward to everything built on it.

Everything is read from the store's records (``exports``, ``quality_reports``, ``runs``,
``rounds``, ``comparison_requests``, ``comparisons``, ``promotions``) and the export
manifests' ``source`` key; a run trained from another run's model links back to that run.
A node is ``{"kind", "id", "label", "children"}``; :func:`render` draws the tree.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefstream.errors import PrefstreamError


def lineage(store, ref: str) -> dict:
    """``{"node": ..., "back": [...], "forward": [...]}`` for ``ref``: an id, a run directory or an export directory."""
    if (Path(ref) / "run.json").is_file():  # a run directory is traced whether or not the loop met it before
        from prefstream.promotion import read_run, register_run

        register_run(store, read_run(ref))
    con = store.read()
    try:
        walk = _Walk(con)
        kind, key = walk.identify(ref)
        return {"node": walk.node(kind, key), "back": walk.node_back(kind, key), "forward": walk.forward(kind, key)}
    finally:
        con.close()


def render(tree: dict) -> list[str]:
    """The lineage as terminal lines: the artefact, then its back and forward trees."""
    lines = [tree["node"]["label"]]
    sections = [("back (what it was built from)", tree["back"]), ("forward (what was built on it)", tree["forward"])]
    for i, (title, nodes) in enumerate(sections):
        last = i == len(sections) - 1
        lines.append(f"{'└─' if last else '├─'} {title}" + ("" if nodes else ": nothing"))
        lines += _draw(nodes, "   " if last else "│  ")
    return lines


def _draw(nodes: list[dict], prefix: str) -> list[str]:
    out = []
    for i, node in enumerate(nodes):
        last = i == len(nodes) - 1
        out.append(f"{prefix}{'└─' if last else '├─'} {node['label']}")
        out += _draw(node.get("children", []), prefix + ("   " if last else "│  "))
    return out


def _leaf(kind: str, id_: str, label: str, children=None) -> dict:
    return {"kind": kind, "id": id_, "label": label, "children": children or []}


class _Walk:
    """One snapshot's records, walked without revisiting a node (a run chain is a path, not a cycle)."""

    def __init__(self, con):
        self.con = con
        self.seen: set[tuple[str, str]] = set()

    def one(self, sql: str, params: list) -> tuple | None:
        rows = self.con.execute(sql, params).fetchall()
        return rows[0] if rows else None

    # ---- what is it -----------------------------------------------------------------------

    def identify(self, ref: str) -> tuple[str, str]:
        path = Path(ref)
        if (path / "run.json").is_file():
            from prefstream.promotion import read_run

            return "run", read_run(path).run_id
        if (path / "manifest.json").is_file():
            return "export", json.loads((path / "manifest.json").read_text())["export_id"]
        for kind, table, column in (
            ("run", "runs", "run_id"), ("export", "exports", "export_id"), ("report", "quality_reports", "report_id"),
            ("round", "rounds", "round_id"), ("comparison", "comparisons", "comparison_id"),
        ):  # fmt: skip
            if self.one(f"SELECT 1 FROM {table} WHERE {column} = ? LIMIT 1", [ref]):
                return kind, ref
        raise PrefstreamError(f"no run, export, report, round or comparison {ref} in this store (runs are registered by rounds, compare and promote)")

    def node(self, kind: str, key: str) -> dict:
        return {"run": self.run_node, "export": self.export_node, "report": self.report_node, "round": self.round_node,
                "comparison": self.comparison_node}[kind](key, expand=False)  # fmt: skip

    # ---- back ------------------------------------------------------------------------------

    def node_back(self, kind: str, key: str) -> list[dict]:
        self.seen.add((kind, key))
        if kind == "run":
            return self.run_back(key)
        if kind == "export":
            return self.export_back(key)
        if kind == "report":
            row = self.one("SELECT snapshot FROM quality_reports WHERE report_id = ?", [key])
            return [_leaf("snapshot", str(row[0]), f"store snapshot {row[0]}")] if row else []
        if kind == "round":
            return self.round_back(key)
        if kind == "comparison":
            row = self.one("SELECT model_a, model_b, snapshot FROM comparisons WHERE comparison_id = ?", [key])
            return [_leaf("snapshot", str(row[2]), f"store snapshot {row[2]}"), *[self.model_node(m) for m in row[:2]]] if row else []
        return []

    def run_node(self, run_id: str, expand: bool = True) -> dict:
        row = self.one("SELECT status, kind, export_id, base_model, run_dir FROM runs WHERE run_id = ? ORDER BY recorded_at DESC LIMIT 1", [run_id])
        if row is None:
            return _leaf("model", run_id, f"model {run_id} (not a registered run)")
        status, kind, _, _, run_dir = row
        node = _leaf("run", run_id, f"run {run_id} ({kind}, {status}) in {run_dir}")
        if expand and ("run", run_id) not in self.seen:
            node["children"] = self.node_back("run", run_id)
        return node

    def run_back(self, run_id: str) -> list[dict]:
        row = self.one("SELECT export_id, base_model FROM runs WHERE run_id = ? ORDER BY recorded_at DESC LIMIT 1", [run_id])
        if row is None:
            return []
        export_id, base = row
        out = [self.export_node(export_id)] if export_id else []
        if base:
            parent = self.run_owning(base)
            out.append(self.run_node(parent) if parent else _leaf("model", base, f"base model {base}"))
        return out

    def run_owning(self, model_path: str) -> str | None:
        """The registered run whose directory holds ``model_path`` (a run's ``final/``), if any."""
        path = Path(model_path).resolve()
        for run_id, run_dir in self.con.execute(
            "SELECT run_id, any_value(run_dir) FROM runs GROUP BY run_id"
        ).fetchall():
            if path == Path(run_dir) or path.is_relative_to(Path(run_dir)):
                return run_id
        return None

    def model_node(self, model: str) -> dict:
        return self.run_node(model) if self.one("SELECT 1 FROM runs WHERE run_id = ? LIMIT 1", [model]) else _leaf("model", model, f"model {model}")

    def export_node(self, export_id: str, expand: bool = True) -> dict:
        row = self.one("SELECT kind, snapshot, gate_passed, forced, out_path FROM exports WHERE export_id = ?", [export_id])
        if row is None:
            return _leaf("export", export_id, f"export {export_id} (not recorded in this store)")
        kind, snapshot, passed, forced, out = row
        gate = "forced past a failed gate" if forced else "gate passed" if passed else "gate not passed"
        node = _leaf("export", export_id, f"export {export_id} ({kind}, snapshot {snapshot}, {gate}) at {out}")
        if expand and ("export", export_id) not in self.seen:
            node["children"] = self.node_back("export", export_id)
        return node

    def export_back(self, export_id: str) -> list[dict]:
        row = self.one("SELECT snapshot, report_id, manifest FROM exports WHERE export_id = ?", [export_id])
        if row is None:
            return []
        snapshot, report_id, manifest = row
        out = [_leaf("snapshot", str(snapshot), f"store snapshot {snapshot}")]
        if report_id:
            out.append(self.report_node(report_id))
        return out + source_nodes(json.loads(manifest).get("source") or {})

    def report_node(self, report_id: str, expand: bool = True) -> dict:
        row = self.one("SELECT passed, snapshot, since, \"until\" FROM quality_reports WHERE report_id = ?", [report_id])
        if row is None:
            return _leaf("report", report_id, f"quality report {report_id} (not in this store)")
        passed, snapshot, since, until = row
        window = f", window {since or '…'} – {until or '…'}" if since or until else ""
        return _leaf("report", report_id, f"quality report {report_id} ({'passed' if passed else 'failed'}, snapshot {snapshot}{window})")

    def round_node(self, round_id: str, expand: bool = True) -> dict:
        row = self.one("SELECT number, state FROM rounds WHERE round_id = ? ORDER BY recorded_at DESC LIMIT 1", [round_id])
        node = _leaf("round", round_id, f"round {round_id} (#{row[0]}, {row[1]})" if row else f"round {round_id}")
        if expand and ("round", round_id) not in self.seen:
            node["children"] = self.node_back("round", round_id)
        return node

    def round_back(self, round_id: str) -> list[dict]:
        row = self.one("SELECT run_id, export_id, comparison_id, record FROM rounds WHERE round_id = ? ORDER BY recorded_at DESC LIMIT 1", [round_id])
        if row is None:
            return []
        run_id, export_id, comparison_id, record = row
        out = [self.run_node(run_id)] if run_id else [self.export_node(export_id)] if export_id else []
        requests = self.one("SELECT count(*), any_value(model_a), any_value(model_b) FROM comparison_requests WHERE round_id = ?", [round_id])
        if requests and requests[0]:
            judged = judged_sources(self.con, round_id)
            out.append(_leaf("requests", round_id, f"{requests[0]} comparison requests ({requests[2]} vs {requests[1]})", [
                _leaf("judgements", round_id, f"{judged.get('events', 0)} judgements landed", source_nodes(judged))
            ]))  # fmt: skip
        if comparison_id:
            out.append(self.comparison_node(comparison_id))
        return out

    def comparison_node(self, comparison_id: str, expand: bool = True) -> dict:
        row = self.one("SELECT model_a, model_b, snapshot, result FROM comparisons WHERE comparison_id = ?", [comparison_id])
        if row is None:
            return _leaf("comparison", comparison_id, f"comparison {comparison_id}")
        from prefstream.quality.compare import rate

        figures = json.loads(row[3])["by_kind"]["all"]
        label = f"comparison {comparison_id}: {row[1]} over {row[0]}, win rate {rate(figures['win_rate'])}, LC {rate(figures['length_controlled']['lc_win_rate'])} (snapshot {row[2]})"
        return _leaf("comparison", comparison_id, label)

    # ---- forward ---------------------------------------------------------------------------

    def forward(self, kind: str, key: str) -> list[dict]:
        if kind == "report":
            ids = [r[0] for r in self.con.execute("SELECT export_id FROM exports WHERE report_id = ? ORDER BY created_at", [key]).fetchall()]
            return [self.export_node(i, expand=False) | {"children": self.forward("export", i)} for i in ids]
        if kind == "export":
            runs = [r[0] for r in self.con.execute("SELECT DISTINCT run_id FROM runs WHERE export_id = ? ORDER BY run_id", [key]).fetchall()]
            rounds = [r[0] for r in self.con.execute("SELECT DISTINCT round_id FROM rounds WHERE export_id = ? AND run_id IS NULL", [key]).fetchall()]
            return [self.run_node(r, expand=False) | {"children": self.forward("run", r)} for r in runs] + [self.round_node(r, expand=False) for r in rounds]
        if kind == "run":
            return self.run_forward(key)
        if kind == "round":
            row = self.one("SELECT run_id FROM rounds WHERE round_id = ? AND run_id IS NOT NULL LIMIT 1", [key])
            return self.run_forward(row[0]) if row else []
        return []

    def run_forward(self, run_id: str) -> list[dict]:
        if ("forward", run_id) in self.seen:
            return []
        self.seen.add(("forward", run_id))
        out = []
        rounds = self.con.execute("SELECT DISTINCT round_id FROM rounds WHERE run_id = ? ORDER BY round_id", [run_id]).fetchall()
        out += [self.round_node(r[0], expand=False) for r in rounds]
        for cid, in self.con.execute("SELECT comparison_id FROM comparisons WHERE ? IN (model_a, model_b) ORDER BY recorded_at", [run_id]).fetchall():
            out.append(self.comparison_node(cid))
        for pid, by, at in self.con.execute("SELECT promotion_id, promoted_by, promoted_at FROM promotions WHERE run_id = ? ORDER BY promoted_at", [run_id]).fetchall():
            out.append(_leaf("promotion", pid, f"promoted by {by} at {at.isoformat()} ({pid})"))
        row = self.one("SELECT run_dir FROM runs WHERE run_id = ? LIMIT 1", [run_id])
        if row:
            for child, base in self.con.execute("SELECT run_id, any_value(base_model) FROM runs WHERE run_id <> ? GROUP BY run_id ORDER BY min(recorded_at)", [run_id]).fetchall():
                if base and Path(base).resolve().is_relative_to(Path(row[0])):
                    out.append(self.run_node(child, expand=False) | {"children": self.run_forward(child)})
        return out


def source_nodes(source: dict) -> list[dict]:
    """Kafka offset ranges and backfilled file lines from a manifest's ``source``."""
    nodes = [
        _leaf("kafka", f"{k['topic']}[{k['partition']}]", f"kafka {k['topic']}[{k['partition']}] offsets {k['first_offset']}–{k['last_offset']} ({k['events']} events)")
        for k in source.get("kafka", [])
    ]
    nodes += [
        _leaf("file", f["path"], f"file {f['path']} lines {f['first_line']}–{f['last_line']} ({f['events']} events)")
        for f in source.get("files", [])
    ]
    return nodes


def judged_sources(con, round_id: str) -> dict:
    """Where the judgements of a round's requests landed from: Kafka offset ranges and file lines."""
    used = """SELECT topic, "partition", "offset", source FROM pairwise
              WHERE json_extract_string(metadata, '$.request_id') IN (SELECT request_id FROM comparison_requests WHERE round_id = ?)"""
    events = con.execute(f"SELECT count(*) FROM ({used})", [round_id]).fetchall()[0][0]
    kafka = con.execute(
        f"""SELECT topic, "partition", min("offset"), max("offset"), count(*) FROM ({used}) WHERE topic IS NOT NULL GROUP BY ALL ORDER BY ALL""",
        [round_id],
    ).fetchall()
    files = con.execute(
        f"""WITH f AS (SELECT string_split(source, ':')[-1] AS line, source FROM ({used}) WHERE topic IS NULL)
            SELECT left(source, length(source) - length(line) - 1) AS path, min(try_cast(line AS BIGINT)), max(try_cast(line AS BIGINT)), count(*)
            FROM f GROUP BY path ORDER BY path""",
        [round_id],
    ).fetchall()
    return {
        "events": int(events),
        "kafka": [dict(zip(("topic", "partition", "first_offset", "last_offset", "events"), r)) for r in kafka],
        "files": [dict(zip(("path", "first_line", "last_line", "events"), r)) for r in files],
    }


__all__ = ["lineage", "render", "source_nodes", "judged_sources"]
