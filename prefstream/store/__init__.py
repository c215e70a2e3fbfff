"""The DuckDB store: one file, declared tables, numbered migrations.

``open_store(path)`` returns a connection to a file migrated to the newest schema; an
older file is migrated on open, each migration recorded in ``schema_migrations`` in the
same transaction that runs it.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import duckdb

from prefstream.errors import StoreError
from prefstream.store import migrations as _migrations_pkg


def _discover() -> list[tuple[int, str, object]]:
    found = []
    for info in pkgutil.iter_modules(_migrations_pkg.__path__):
        if info.name.startswith("m") and info.name[1:4].isdigit():
            module = importlib.import_module(f"{_migrations_pkg.__name__}.{info.name}")
            found.append((int(info.name[1:4]), info.name[5:], module.migrate))
    found.sort(key=lambda m: m[0])
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..N without gaps, found {numbers}")
    return found


MIGRATIONS = _discover()
LATEST_VERSION = MIGRATIONS[-1][0]


def open_store(path: str | Path, *, read_only: bool = False, migrate_to: int | None = None) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the DuckDB file at ``path`` and bring its schema up to date.

    ``migrate_to`` stops at an older version (tests use it to build an "old" file).
    Raises :class:`StoreError` with a one-line reason when the file cannot be used.
    """
    path = Path(path)
    if read_only and not path.exists():
        raise StoreError(f"database {path} does not exist; land some feedback first with `prefstream ingest` or `prefstream ingest-file`")
    if not read_only and not path.parent.exists():
        raise StoreError(f"cannot create database {path}: folder {path.parent} does not exist")
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        raise StoreError(f"cannot open database {path}: {_first_line(exc)}") from None
    try:
        if read_only:
            _check_current(con, path)
        else:
            migrate(con, migrate_to if migrate_to is not None else LATEST_VERSION)
    except BaseException:
        con.close()
        raise
    return con


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The newest migration applied to this database (0 for an empty file)."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    ).fetchall()[0][0]
    if not exists:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0][0]


def migrate(con: duckdb.DuckDBPyConnection, target: int = LATEST_VERSION) -> list[int]:
    """Apply pending migrations up to ``target``, each in its own transaction; return those applied."""
    current = schema_version(con)
    if current > LATEST_VERSION:
        raise StoreError(f"database schema version {current} is newer than this prefstream ({LATEST_VERSION}); upgrade prefstream")
    applied = []
    for number, name, fn in MIGRATIONS:
        if number <= current or number > target:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            fn(con)
            con.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, current_timestamp)",
                [number, name],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied.append(number)
    return applied


def _check_current(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    version = schema_version(con)
    if version == 0:
        raise StoreError(f"{path} is not a prefstream database (no schema_migrations table)")
    if version < LATEST_VERSION:
        raise StoreError(f"{path} has schema version {version} < {LATEST_VERSION}; open it once for writing (e.g. `prefstream ingest-file --db {path}` with no files) to migrate it")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


__all__ = ["open_store", "migrate", "schema_version", "LATEST_VERSION", "MIGRATIONS", "StoreError"]
