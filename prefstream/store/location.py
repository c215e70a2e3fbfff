"""Where a store lives: a directory (the embedded default) or a DuckLake catalog URL plus a data path.

- A directory holds ``catalog.sqlite`` (DuckLake's SQLite catalog: one writer and any
  number of readers on one machine) and ``data/`` (the Parquet files). No server.
- ``ducklake:postgres:dbname=... host=...`` with a data path (a directory or an object
  store URL) lets ingest processes on several machines share one store.

Nothing here touches the store; :meth:`StoreLocation.check` only inspects the filesystem
so that a wrong ``--store`` is refused before anything is consumed or committed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from prefstream.config import section
from prefstream.errors import StoreError

CATALOG_FILE = "catalog.sqlite"
DATA_DIR = "data"
ENV_VAR = "PREFSTREAM_STORE"
ENV_DATA_PATH = "PREFSTREAM_DATA_PATH"

_SECRET = re.compile(r"(password|passwd|pwd|secret|token)\s*=\s*('[^']*'|\S+)", re.IGNORECASE)
_URL_SECRET = re.compile(r"(://[^:/@\s]+):([^@/\s]+)@")


def redact(text: str) -> str:
    """``text`` with passwords in libpq key=value strings and URLs replaced by ``***``."""
    return _URL_SECRET.sub(r"\1:***@", _SECRET.sub(lambda m: f"{m.group(1)}=***", text))


@dataclass(frozen=True)
class StoreLocation:
    """A store's catalog and data path, as given by the user."""

    store: str
    data_path: str | None = None

    @classmethod
    def resolve(cls, store: str | os.PathLike | None, data_path: str | None = None, config: dict | None = None) -> "StoreLocation":
        """From a flag, else ``$PREFSTREAM_STORE``, else the config file's ``[store]`` table."""
        table = section(config or {}, "store")
        store = store or os.environ.get(ENV_VAR) or table.get("store")
        data_path = data_path or os.environ.get(ENV_DATA_PATH) or table.get("data_path")
        if not store:
            raise StoreError("no store given; pass --store DIR (or set PREFSTREAM_STORE, or [store] store = ... in the config file)")
        return cls(str(store), str(data_path) if data_path else None)

    @property
    def is_catalog_url(self) -> bool:
        return self.store.startswith("ducklake:")

    @property
    def directory(self) -> Path:
        return Path(self.store)

    def attach_url(self) -> str:
        if self.is_catalog_url:
            return self.store
        return f"ducklake:sqlite:{self.directory / CATALOG_FILE}"

    def resolved_data_path(self) -> str:
        if self.data_path:
            path = self.data_path
        elif self.is_catalog_url:
            raise StoreError(f"catalog {self.redacted()} needs --data-path (a directory or object-store URL every ingest process can write)")
        else:
            path = str(self.directory.resolve() / DATA_DIR)
        return path if "://" in path or path.endswith("/") else path + "/"

    def redacted(self) -> str:
        """How this location is printed and recorded: passwords never leave the process."""
        text = redact(self.store)
        return f"{text} (data {redact(self.data_path)})" if self.data_path else text

    def check(self, *, create: bool) -> None:
        """Refuse a location that is not a store (or cannot become one) before any work."""
        if self.is_catalog_url:
            if self.data_path and "://" not in self.data_path:
                _check_writable_dir(Path(self.data_path), create=create, what="data path")
            elif not self.data_path:
                self.resolved_data_path()
            return
        path = self.directory
        if path.is_file():
            raise StoreError(_not_a_directory(path))
        if path.is_dir():
            if (path / CATALOG_FILE).is_file():
                return
            others = sorted(p.name for p in path.iterdir())
            if others:
                shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
                raise StoreError(f"{path} is not a prefstream store (it holds {shown}); give a new or empty directory")
        if not create:
            raise StoreError(f"no store at {path}; land feedback first with `prefstream ingest --store {path} ...` or `prefstream ingest-file --store {path} FILE`")
        _check_writable_dir(path, create=True, what="store directory")


def _not_a_directory(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(16)
    if head[8:12] == b"DUCK":
        return (
            f"{path} is a prefstream v0.1 DuckDB file, which this version cannot open (stores are DuckLake directories now); "
            "carry its feedback over by replaying the topic into a new store with a new group "
            "(`prefstream ingest --store NEW_DIR --group NEW_GROUP ...`) or `prefstream ingest-file --store NEW_DIR` on the original JSONL"
        )
    return f"{path} is a file, not a store; --store takes a directory (created on first use) or a ducklake: catalog URL"


def _check_writable_dir(path: Path, *, create: bool, what: str) -> None:
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise StoreError(f"{what} {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(f"{what} {path} is not writable (no write access to {existing}); choose another location or fix its permissions")
    if not path.exists() and not create:
        raise StoreError(f"{what} {path} does not exist")
