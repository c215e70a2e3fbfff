"""One export, top to bottom: check the output location, pin a snapshot, gate, aggregate,
pair, balance, split, hash, write beside ``--out``, rename into place, record.

The whole export reads ONE snapshot of the store (``store.read``): ingest may keep landing
feedback meanwhile, and ``snapshot=N`` reproduces an earlier export byte for byte. Nothing is
half-written: every failure before the final rename leaves the output path as it was (the
staging folder is removed), and the ``exports`` row is written after the rename, which is
undone if recording fails.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from prefstream import __version__
from prefstream.errors import PrefstreamError
from prefstream.prep import aggregate, chat, dataset, lineage, pairs, splits
from prefstream.prep.gate import reliabilities, run_gate
from prefstream.prep.kto_weights import recommended_weights
from prefstream.prep.settings import ExportSettings, Output
from prefstream.store import Store, snapshot_of
from prefstream.store.lake import first_line


def export(store: Store, settings: ExportSettings, output: Output, *, snapshot: int | None = None, progress=lambda message: None) -> dict:
    """Export ``snapshot`` of ``store`` (default: the current one) into ``output.out``; return the manifest.

    The manifest is also written as ``manifest.json`` and recorded in the ``exports`` table.
    """
    out = _check_out(store, output)
    with _Staging(out) as staging:  # made first: an unwritable location fails before any work
        con = store.read(snapshot)
        try:
            con.execute("SET temp_directory = ?", [str(staging.scratch)])  # spills stay beside the export, and go with it
            con.execute("SET enable_progress_bar = false")  # progress is ours to report (a terminal line), not DuckDB's bar on stdout
            if output.memory_limit:
                con.execute("SET memory_limit = ?", [output.memory_limit])
            manifest, form = _export(store, con, settings, output, progress)
            progress(f"writing {manifest['rows']['train']:,} train / {manifest['rows']['test']:,} test rows ({output.fmt})")
            target = dataset.schema(settings.family, form)
            manifest["files"] = dataset.write_splits(con, target, staging.path, output.fmt, manifest["content_hash"][7:23], staging.scratch, progress)
        finally:
            con.close()
        staging.finish(manifest)
        staging.publish(lambda: _record(store, manifest, out))
    return manifest


def _export(store: Store, con, settings: ExportSettings, output: Output, progress) -> tuple[dict, chat.Form]:
    """The manifest (without ``files``) and the texts' form; leaves the rows in ``_prep_export``."""
    from prefstream.quality import Settings, plausible_sql

    snap = snapshot_of(con)
    quality_settings = Settings.from_config(output.quality_config)
    window = aggregate.Window(settings.since, settings.until, plausible_sql(quality_settings))
    uses_pairwise = settings.family == "dpo" or settings.include_pairwise
    uses_thumbs = settings.family == "kto" or settings.include_thumbs
    tables = [t for t, used in (("pairwise", uses_pairwise), ("thumbs", uses_thumbs)) if used]
    _check_window(con, window, tables)
    quality, report = run_gate(store, con, snap, settings, output, progress)
    weights = reliabilities(report) if settings.weighting == "reliability" else None
    default_weight = aggregate.register_weights(con, weights)
    vote = {"reliability": weights is not None, "default_weight": default_weight, "min_agreement": settings.min_agreement}

    progress("aggregating annotators per item")
    dropped: dict[str, int] = {}
    extra: dict = {}
    if uses_pairwise:
        aggregate.aggregate_pairs(con, window, **vote)
        dropped |= aggregate.drop_counts(con, "_prep_pairs", aggregate.PAIR_REASONS, "pairwise")
    if uses_thumbs:
        aggregate.aggregate_thumbs(con, window, **vote)
    if settings.family == "dpo":
        dropped |= pairs.dpo_rows(
            con, include_thumbs=settings.include_thumbs, max_pairs_per_prompt=settings.max_pairs_per_prompt, seed=settings.seed
        )
        extra["length"] = {"before_balancing": pairs.length_stats(con)}
        if settings.balance_length:
            progress("balancing length")
            dropped["length_balance"] = pairs.balance_length(con, settings.seed)
        extra["length"]["exported"] = pairs.length_stats(con)
    else:
        dropped |= aggregate.drop_counts(con, "_prep_thumbs", aggregate.THUMBS_REASONS, "thumbs")
        if settings.ties == "keep":
            extra["ties_kept"] = dropped.pop("thumbs_tie")
        pairs.kto_rows(con, ties=settings.ties, include_pairwise=settings.include_pairwise)
    inputs = _inputs(con, uses_pairwise, uses_thumbs)

    total = con.execute("SELECT count(*) FROM _prep_rows").fetchall()[0][0]
    if total == 0:
        raise PrefstreamError(
            f"no rows to export after filtering ({_describe_inputs(inputs)}; dropped: {_describe(dropped)}); "
            "widen --since / --until, lower --min-agreement, or land more feedback"
        )

    progress(f"splitting {total:,} rows by prompt")
    form = chat.detect(con, "_prep_rows")
    splits.build_export_table(con, settings.family, form, settings.eval_fraction, settings.seed)
    counts = splits.split_counts(con)
    source = lineage.sources(con, [f"_prep_{'pair' if t == 'pairwise' else 'thumb'}_events" for t in tables])
    aggregate.drop_temp(con, keep=("_prep_export",))  # the rows are materialised: free the votes
    for name, figures in counts.items():
        if figures["rows"] == 0:
            prompts = counts["train"]["prompts"] + counts["test"]["prompts"]
            raise PrefstreamError(
                f"the {name} split would be empty ({prompts} distinct prompts at --eval-fraction {settings.eval_fraction}); "
                "change --eval-fraction or --seed, or export more feedback"
            )

    progress("hashing rows")
    target = dataset.schema(settings.family, form)
    prompt_format = "conversational" if form.conversational else "plain"
    digests = dataset.split_digests(con, target)
    rows = {name: figures["rows"] for name, figures in counts.items()}
    content_hash = dataset.content_hash(settings.kind, prompt_format, settings.as_dict(), digests, rows)
    if settings.family == "kto":
        balance = _class_balance(con)
        extra["class_balance"] = balance
        # TRL's rule applies to what the trainer sees: the train split.
        extra["kto_weights"] = recommended_weights(balance["train"]["desirable"], balance["train"]["undesirable"])
    if weights is not None:
        extra["annotator_weights"] = {
            "reliability": {a: r for a, r in sorted(weights.items())},
            "unknown_annotators_weight": default_weight / aggregate.WEIGHT_SCALE,
        }

    created = datetime.now(timezone.utc)
    manifest = {
        "export_id": f"{settings.kind}-{created:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}",
        "kind": settings.kind,
        "prompt_format": prompt_format,
        "content_hash": content_hash,
        "rows": rows,
        "splits": {name: {**counts[name], "sha256": digests[name]} for name in ("train", "test")},
        "columns": target.names,
        "format": output.fmt,
        "window": {
            "since": _iso(settings.since),
            "until": _iso(settings.until),
            "plausible_ts": {"earliest": quality_settings.earliest().isoformat(), "max_future_hours": quality_settings.max_future_hours},
            "implausible_ts_excluded": aggregate.implausible_counts(con, window, tables),
        },
        "filters": {
            "min_agreement": settings.min_agreement,
            "weighting": settings.weighting,
            "ties": settings.ties,
            "include_pairwise": settings.include_pairwise,
            "include_thumbs": settings.include_thumbs,
            "balance_length": settings.balance_length,
        },
        "settings": settings.as_dict(),
        "input": inputs,
        "dropped": dropped,
        **extra,
        "quality": quality,
        "source": source,
        "snapshot": snap,
        "store": store.location.redacted(),
        "prefstream_version": __version__,
        "created_at": created.isoformat(),
        "content_hash_covers": "settings, kind, prompt_format and every row of each split (per split: sha256 over the sorted md5s of canonical JSON rows); "
        "not export_id, created_at, snapshot, quality, source or format",
    }
    return manifest, form


def _check_window(con, window: aggregate.Window, tables: list[str]) -> None:
    """Fail fast (before the audit) when the window holds no feedback of the kinds this export reads."""
    # Any event in the window means a current one in it too, unless every one was superseded
    # by a later event before the window's end; that rare case ends in the "no rows" check.
    # The raw table answers as well as the deduplicating view (any copy of an event will do), and at once.
    found = any(
        con.execute(f"SELECT EXISTS (SELECT 1 FROM {t}_raw WHERE ts >= ? AND ts < ? AND {window.plausible})", window.params()).fetchall()[0][0]
        for t in tables
    )
    if not found:
        raise PrefstreamError(
            f"no rows to export: no {' or '.join(tables)} feedback with a plausible ts in [{_iso(window.since) or 'the beginning'}, "
            f"{_iso(window.until) or 'now'}); widen --since / --until or land feedback first"
        )


def _inputs(con, uses_pairwise: bool, uses_thumbs: bool) -> dict:
    out: dict = {}
    if uses_pairwise:
        events, items = con.execute("SELECT coalesce(sum(n_annotators), 0), count(*) FROM _prep_pair_votes").fetchall()[0]
        out["pairwise"] = {"current_events": int(events), "pairs": int(items)}
    if uses_thumbs:
        events, items = con.execute("SELECT coalesce(sum(n_annotators), 0), count(*) FROM _prep_thumb_votes").fetchall()[0]
        out["thumbs"] = {"current_events": int(events), "items": int(items)}
    return out


def _class_balance(con) -> dict:
    found = {s: (d, u) for s, d, u in con.execute(
        "SELECT split, count(*) FILTER (WHERE label), count(*) FILTER (WHERE NOT label) FROM _prep_export GROUP BY split"
    ).fetchall()}
    return {s: {"desirable": int(found.get(s, (0, 0))[0]), "undesirable": int(found.get(s, (0, 0))[1])} for s in ("train", "test")}


def _record(store: Store, manifest: dict, out: Path) -> None:
    quality = manifest["quality"]
    row = [
        manifest["export_id"], manifest["created_at"], manifest["kind"], str(out.resolve()), manifest["content_hash"],
        manifest["snapshot"], quality["report_id"], quality["passed"], quality["forced"], json.dumps(manifest, sort_keys=True),
    ]
    try:
        store.transact(lambda con: con.execute("INSERT INTO exports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row), what="record the export")
    except duckdb.Error as exc:
        raise PrefstreamError(f"cannot record the export in {store.location.redacted()}: {first_line(exc)}; {out} is as it was") from None


# ---- output location ---------------------------------------------------------------------------


def _check_out(store: Store, output: Output) -> Path:
    """The output folder, refused (one line, exit 2) when writing there would surprise the user."""
    out = output.out
    if out.is_symlink():
        raise PrefstreamError(f"--out {out} is a symbolic link (to {out.resolve()}); the export would land outside where you pointed: give the real path")
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists() or p.is_symlink())
    if existing != out.absolute() and not existing.is_dir():
        raise PrefstreamError(f"cannot write {out}: {existing} is not a folder")
    if out.exists():
        if not out.is_dir():
            raise PrefstreamError(f"--out {out} exists and is not a folder; choose another --out")
        if not output.overwrite:
            raise PrefstreamError(f"output folder {out} exists; pass --overwrite to replace it or choose another --out")
        if any(out.iterdir()) and not (out / "manifest.json").is_file():
            raise PrefstreamError(
                f"--out {out} is a non-empty folder that is not a prefstream export (no manifest.json); "
                "--overwrite only replaces exports: remove it yourself or choose another --out"
            )
    location = store.location
    if not location.is_catalog_url and location.directory.resolve().is_relative_to(out.resolve()):
        raise PrefstreamError(f"--out {out} contains the store {location.directory}; choose another --out")
    return out


class _Staging:
    """A folder beside ``out`` that becomes ``out`` by one rename; removed (with any parents it made) on failure."""

    def __init__(self, out: Path):
        self.out = out
        self.made = [p for p in reversed(out.absolute().parents) if not p.exists()]  # made here, removed on failure
        self.old: Path | None = None

    def __enter__(self) -> "_Staging":
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
            # mkdtemp makes the folder private (0700); an export is shared data: follow the umask like every file in it.
            self.path.chmod(0o777 & ~_umask())
            self.scratch = self.path / ".scratch"
            self.scratch.mkdir()
        except OSError as exc:
            self._clean()
            raise PrefstreamError(f"cannot write the export to {self.out}: {exc.strerror or exc}; choose another --out") from None
        return self

    def finish(self, manifest: dict) -> None:
        shutil.rmtree(self.scratch)
        (self.path / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def publish(self, record) -> None:
        """Rename into place (an earlier export set aside), then ``record()``; undo the rename if that fails."""
        if self.out.exists():
            self.old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            self.out.rename(self.old)
        try:
            self.path.rename(self.out)
        except BaseException:
            self._restore()
            raise
        try:
            record()
        except BaseException:
            self.out.rename(self.path)
            self._restore()
            raise
        if self.old is not None:
            shutil.rmtree(self.old, ignore_errors=True)

    def _restore(self) -> None:
        if self.old is not None:
            self.old.rename(self.out)
            self.old = None

    def __exit__(self, kind, exc, tb) -> None:
        if exc is None:
            return
        self._clean()
        if isinstance(exc, OSError):
            raise PrefstreamError(f"cannot write the export to {self.out}: {exc.strerror or exc}") from None

    def _clean(self) -> None:
        if hasattr(self, "path"):
            shutil.rmtree(self.path, ignore_errors=True)
        for folder in reversed(self.made):  # deepest first; only the (now empty) folders this export made
            try:
                folder.rmdir()
            except OSError:
                break


def _umask() -> int:
    # Reading the umask means setting it; set it straight back (there is no read-only call).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _describe(dropped: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in dropped.items() if v) or "nothing"


def _describe_inputs(inputs: dict) -> str:
    return ", ".join(f"{v['current_events']} current {k} events" for k, v in inputs.items())


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None
