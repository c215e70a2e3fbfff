"""One export, top to bottom: check the output path, gate, aggregate, pair, balance, split,
hash, write to a temporary folder beside ``--out``, record, rename into place.

Nothing is half-written: every failure before the final rename leaves the output path as it
was (the temporary folder is removed), and the rename is atomic on one filesystem.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from prefstream import __version__
from prefstream.errors import PrefstreamError
from prefstream.prep import aggregate, dataset, lineage, pairs, splits
from prefstream.prep.gate import reliabilities, run_gate
from prefstream.prep.kto_weights import recommended_weights
from prefstream.prep.settings import ExportSettings, Output

DROP_REASONS = {
    "identical_responses": "the pair's two responses are the same text",
    "only_ties": "every annotator judged the pair a tie",
    "no_reliable_votes": "every vote came from annotators with reliability 0 (--weighting reliability)",
    "tie": "the (weighted) votes for the two sides are equal",
    "low_agreement": "the winning share of annotators is below --min-agreement",
    "unpaired": "--include-thumbs: no opposite-rated response to the same prompt left (or over --max-pairs-per-prompt)",
    "already_compared": "--include-thumbs: the same two responses were also compared pairwise (that judgement is used)",
    "length_balance": "--balance-length: dropped so the longer response wins half the pairs",
}


def export(con, settings: ExportSettings, output: Output, progress=lambda message: None) -> dict:
    """Run one export into ``output.out``; return its manifest (also written as ``manifest.json``)."""
    out = _check_out(con, output)
    _check_window(con, settings)
    quality, report = run_gate(con, settings, output, progress)
    previous = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    if output.memory_limit:
        try:
            con.execute(f"SET memory_limit = '{output.memory_limit.replace(chr(39), '')}'")
        except duckdb.Error as exc:
            raise PrefstreamError(f"--memory-limit {output.memory_limit!r}: {str(exc).splitlines()[0]} (e.g. 512MB, 2GB)") from None
    try:
        return _export(con, settings, output, out, quality, report, progress)
    finally:
        aggregate.drop_temp(con)
        if output.memory_limit:  # DuckDB prints limits rounded, so this restores the previous one approximately
            con.execute(f"SET memory_limit = '{previous}'")


def _export(con, settings: ExportSettings, output: Output, out: Path, quality: dict, report: dict | None, progress) -> dict:
    window = aggregate.Window(settings.since, settings.until)
    weights = reliabilities(report) if settings.weighting == "reliability" else None
    default_weight = aggregate.register_weights(con, weights)
    vote = {"reliability": weights is not None, "default_weight": default_weight, "min_agreement": settings.min_agreement}

    progress("aggregating annotators per item")
    dropped: dict[str, int] = {}
    extra: dict = {}
    uses_pairwise = settings.family == "dpo" or settings.include_pairwise
    uses_thumbs = settings.family == "kto" or settings.include_thumbs
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
        extra["length"]["longer_wins"] = extra["length"]["exported"]["longer_wins"]
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

    progress(f"splitting {total} rows by prompt")
    conversational = splits.is_conversational(con)
    splits.build_export_table(con, settings.family, conversational, settings.eval_fraction, settings.seed)
    counts = splits.split_counts(con)
    aggregate.drop_temp(con, keep=("_prep_export",))  # the rows are materialised: free the votes
    for name, figures in counts.items():
        if figures["rows"] == 0:
            prompts = counts["train"]["prompts"] + counts["test"]["prompts"]
            raise PrefstreamError(
                f"the {name} split would be empty ({prompts} distinct prompts at --eval-fraction {settings.eval_fraction}); "
                "change --eval-fraction or --seed, or export more feedback"
            )

    progress("hashing rows")
    target = dataset.schema(settings.family, conversational)
    prompt_format = "conversational" if conversational else "plain"
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
        "window": {"since": _iso(settings.since), "until": _iso(settings.until)},
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
        "drop_reasons": {k: v for k, v in DROP_REASONS.items() if any(d.endswith(k) for d in dropped)},
        **extra,
        "quality": quality,
        "source": lineage.sources(con, [t for t, used in (("pairwise", uses_pairwise), ("thumbs", uses_thumbs)) if used]),
        "store": {"path": _db_path(con), "schema_version": _schema_version(con)},
        "prefstream_version": __version__,
        "created_at": created.isoformat(),
        "content_hash_covers": "settings, kind, prompt_format and every row of each split (per split: sha256 over the sorted md5s of canonical JSON rows); "
        "not export_id, created_at, quality, source or format",
    }

    progress(f"writing {rows['train']} train / {rows['test']} test rows ({output.fmt})")
    _write(con, manifest, target, output, out)
    return manifest


def _check_window(con, settings: ExportSettings) -> None:
    """Fail fast (before the audit) when the window holds no feedback of the kinds this export reads."""
    tables = ["pairwise"] if settings.family == "dpo" else ["thumbs"]
    tables += ["thumbs"] if settings.include_thumbs else ["pairwise"] if settings.include_pairwise else []
    params = aggregate.Window(settings.since, settings.until).params()
    # Any event in the window means a current one in it too, unless every one was superseded
    # by a later event outside it; that rare case ends in the "no rows" check after the gate.
    found = any(con.execute(f"SELECT EXISTS (SELECT 1 FROM {t} WHERE ts >= ? AND ts < ?)", params).fetchall()[0][0] for t in tables)
    if not found:
        what = " or ".join(tables)
        raise PrefstreamError(
            f"no rows to export: no {what} feedback with ts in [{_iso(settings.since) or 'the beginning'}, "
            f"{_iso(settings.until) or 'now'}); widen --since / --until or land feedback first"
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


# ---- output path -------------------------------------------------------------------------------


def _check_out(con, output: Output) -> Path:
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
    db = _db_path(con)
    if db and Path(db).resolve().is_relative_to(out.resolve()):
        raise PrefstreamError(f"--out {out} contains the database {db}; choose another --out")
    return out


def _write(con, manifest: dict, target, output: Output, out: Path) -> None:
    created = [p for p in reversed(out.absolute().parents) if not p.exists()]  # made here, removed on failure
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old: Path | None = None
    try:
        scratch = staging / ".scratch"
        scratch.mkdir()
        manifest["files"] = dataset.write_splits(con, target, staging, output.fmt, manifest["content_hash"][7:23], scratch)
        shutil.rmtree(scratch)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        # The exports row and the rename succeed or fail together: the row commits only after the rename.
        recorded = _read_write(con)
        if recorded:
            con.execute("BEGIN TRANSACTION")
        try:
            if recorded:
                con.execute(
                    "INSERT INTO exports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        manifest["export_id"], manifest["created_at"], manifest["kind"], str(out.resolve()), manifest["content_hash"],
                        manifest["quality"]["report_id"], manifest["quality"]["passed"], manifest["quality"]["forced"],
                        json.dumps(manifest, sort_keys=True),
                    ],
                )
            if out.exists():
                old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
                out.rename(old)
            try:
                staging.rename(out)
            except BaseException:
                if old is not None:
                    old.rename(out)
                    old = None
                raise
            if recorded:
                con.execute("COMMIT")
        except BaseException:
            if recorded:
                con.execute("ROLLBACK")
            raise
    except OSError as exc:
        _clean(staging, created)
        raise PrefstreamError(f"cannot write the export to {out}: {exc.strerror or exc}") from None
    except BaseException:
        _clean(staging, created)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _clean(staging: Path, created: list[Path]) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    for folder in reversed(created):  # deepest first; only the (now empty) folders this export made
        try:
            folder.rmdir()
        except OSError:
            break


def _read_write(con) -> bool:
    """Whether the store is writable (read-only connections export without an ``exports`` row)."""
    return not con.execute("SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()").fetchall()[0][0]


def _db_path(con) -> str | None:
    rows = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    return rows[0][0] if rows and rows[0][0] else None


def _schema_version(con) -> int:
    from prefstream.store import schema_version

    return schema_version(con)


def _describe(dropped: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in dropped.items() if v) or "nothing"


def _describe_inputs(inputs: dict) -> str:
    return ", ".join(f"{v['current_events']} current {k} events" for k, v in inputs.items())


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None
