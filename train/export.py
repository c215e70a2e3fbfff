"""Reading an export directory (``prefstream export``): its splits and its manifest.

Every export format is read: ``hf`` (a saved DatasetDict), ``parquet`` and ``jsonl`` (one
file per split, named in the manifest's ``files``).

The export schema is prefstream's own (TRL's columns), so anything off is a one-line error
naming the fix rather than format sniffing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefstream.errors import PrefstreamError

PAIRED_KINDS = ("dpo", "ipo")
COLUMNS = {
    "dpo": ("prompt", "chosen", "rejected"),
    "ipo": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
}


@dataclass(frozen=True)
class Export:
    path: Path
    manifest: dict
    train: list[dict]  # rows as dicts: exports are training-set sized, and the loops index them
    test: list[dict]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def conversational(self) -> bool:
        return self.manifest["prompt_format"] == "conversational"

    @property
    def export_id(self) -> str:
        return self.manifest["export_id"]

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]


def load_export(path: str | Path) -> Export:
    """Load and check an export directory; raises PrefstreamError naming the fix."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise PrefstreamError(
            f"{path} is not an export (no manifest.json); create one with `prefstream export dpo|kto`"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PrefstreamError(f"{manifest_path} is not valid JSON ({exc.msg}); re-run `prefstream export`") from None
    missing = [k for k in ("export_id", "kind", "prompt_format", "content_hash") if k not in manifest]
    if missing:
        raise PrefstreamError(f"{manifest_path} lacks {', '.join(missing)}; re-run `prefstream export`")
    if manifest["kind"] not in COLUMNS or manifest["prompt_format"] not in ("plain", "conversational"):
        raise PrefstreamError(
            f"{manifest_path}: unknown kind {manifest['kind']!r} or prompt_format {manifest['prompt_format']!r}; "
            "re-run `prefstream export`"
        )
    for split, count in (manifest.get("rows") or {}).items():
        if split in ("train", "test") and count == 0:  # datasets cannot even load an empty saved split
            raise PrefstreamError(_empty(split))
    train, test = (_read_split(path, manifest, split) for split in ("train", "test"))
    export = Export(path, manifest, train, test)
    for split in ("train", "test"):
        _check_split(export, split)
    return export


def _read_split(path: Path, manifest: dict, split: str) -> list[dict]:
    fmt = manifest.get("format", "hf")
    try:
        if fmt == "hf":
            from datasets import load_from_disk

            return load_from_disk(str(path / manifest.get("files", {}).get(split, split))).to_list()
        file = path / manifest["files"][split]
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(file).to_pylist()
        if fmt == "jsonl":
            with file.open(encoding="utf-8") as fh:
                return [json.loads(line) for line in fh if line.strip()]
    except Exception as exc:  # noqa: BLE001 - whatever the reader raises, the split is unreadable
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PrefstreamError(
            f"{path}: the {split} split ({fmt}) is unreadable ({reason}); re-run `prefstream export`"
        ) from None
    raise PrefstreamError(
        f"{path}/manifest.json: unknown format {fmt!r} (hf, parquet, jsonl); re-run `prefstream export`"
    )


def _check_split(export: Export, split: str) -> None:
    rows = getattr(export, split)
    if not rows:
        raise PrefstreamError(_empty(split))
    columns = COLUMNS[export.kind]
    absent = [c for c in columns if c not in rows[0]]
    if absent:
        raise PrefstreamError(
            f"the {export.kind} export's {split} split lacks columns {absent}; re-run `prefstream export {export.kind}`"
        )
    text_columns = [c for c in columns if c != "label"]
    for row in rows:
        for column in text_columns:
            if not _has_format(row[column], export.conversational, prompt=column == "prompt"):
                raise PrefstreamError(
                    f"the export's {split} split has a {column!r} that is not {export.manifest['prompt_format']} "
                    "format (see manifest prompt_format); re-run `prefstream export`"
                )


def _empty(split: str) -> str:
    return (
        f"the export's {split} split is empty; export more feedback (or a non-zero test share) with `prefstream export`"
    )


def _has_format(value, conversational: bool, prompt: bool) -> bool:
    if not conversational:
        return isinstance(value, str)
    if not isinstance(value, list) or not value:
        return False
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in value):
        return False
    return prompt or (len(value) == 1 and value[0]["role"] == "assistant")


def paired_rows(export: Export, trainer: str) -> tuple[list[dict], list[dict]]:
    """Train and test rows of a DPO / IPO export; thumbs (KTO) exports have no pairs to learn from."""
    if export.kind not in PAIRED_KINDS:
        raise PrefstreamError(
            f"{trainer.upper()} needs preference pairs but {export.path} is a {export.kind} export of unpaired "
            "thumbs; build pairs with `prefstream export dpo`"
        )
    return export.train, export.test


def unpaired_rows(export: Export, log: Callable[[str], None]) -> tuple[list[dict], list[dict]]:
    """Train and test rows for KTO. Pairs are split into a desirable and an undesirable row, as TRL does."""
    if export.kind == "kto":
        return export.train, export.test
    log(
        f"notice: {export.path} is a {export.kind} export of pairs; using each pair as one desirable "
        "(chosen) and one undesirable (rejected) example for KTO"
    )
    return _unpair(export.train), _unpair(export.test)


def _unpair(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        extras = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected")}
        out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True, **extras})
        out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False, **extras})
    return out


def kto_weights(export: Export) -> tuple[float, float]:
    """The export's recommended (desirable, undesirable) loss weights; 1.0 each when it has none."""
    weights = export.manifest.get("kto_weights") or {}
    return float(weights.get("desirable_weight", 1.0)), float(weights.get("undesirable_weight", 1.0))
