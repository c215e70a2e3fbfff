"""The store: a DuckLake (a SQL catalog plus Parquet files) with declared tables and numbered migrations.

``open_store(location)`` checks the location, creates the store on first use and brings
its schema up to date; each migration is recorded in ``schema_migrations`` in the same
transaction that runs it. Then:

- ``store.read(snapshot=None)``: a read-only connection pinned to ONE snapshot (the
  current one, or N), so an audit or export sees one consistent state while ingest writes;
- ``store.write()``: a writable connection at the latest state;
- ``store.transact(fn)``: ``fn(con)`` in one transaction, retried when another writer
  holds the catalog's lock or committed a conflicting change first.

Raw tables (``thumbs_raw`` ...) may hold a batch twice physically (a redelivery, a zombie
consumer); the names users query (``thumbs``, ``pairwise``, their ``_current`` views,
``dead_letters``, ``duplicates``, ``kafka_offsets``) show each event once.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb

from prefstream.errors import StoreError
from prefstream.store import migrations as _migrations_pkg
from prefstream.store.lake import attach, connect, first_line, retrying, snapshot_of
from prefstream.store.location import StoreLocation

T = TypeVar("T")


def _discover() -> list[tuple[int, str, Callable]]:
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


class Store:
    """An opened, migrated store. Connections it hands out are the caller's to close."""

    def __init__(self, location: StoreLocation, memory_limit: str | None = None):
        self.location = location
        self.memory_limit = memory_limit
        self._writer: duckdb.DuckDBPyConnection | None = None

    def read(self, snapshot: int | None = None) -> duckdb.DuckDBPyConnection:
        """A read-only connection pinned to ``snapshot`` (default: the current one)."""
        con = connect(self.location, read_only=True, snapshot=snapshot, memory_limit=self.memory_limit)
        if snapshot is None:
            try:  # pin to the snapshot current now, on the same connection (extensions stay loaded)
                attach(con, self.location, read_only=True, snapshot=snapshot_of(con))
            except BaseException:
                con.close()
                raise
        return con

    def write(self) -> duckdb.DuckDBPyConnection:
        """A new writable connection at the latest state."""
        return connect(self.location, read_only=False, memory_limit=self.memory_limit)

    def current_snapshot(self) -> int:
        con = connect(self.location, read_only=True)
        try:
            return snapshot_of(con)
        finally:
            con.close()

    def transact(self, fn: Callable[[duckdb.DuckDBPyConnection], T], *, what: str = "write") -> T:
        """``fn(con)`` inside BEGIN / COMMIT on this store's writer, retried on contention."""
        if self._writer is None:
            self._writer = self.write()
        con = self._writer

        def attempt() -> T:
            con.execute("BEGIN TRANSACTION")
            try:
                result = fn(con)
                con.execute("COMMIT")
                return result
            except BaseException:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # the failed COMMIT already ended the transaction
                raise

        return retrying(attempt, what=what)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_store(
    location: StoreLocation | str | os.PathLike,
    *,
    create: bool = True,
    migrate_to: int | None = None,
    memory_limit: str | None = None,
) -> Store:
    """Open the store at ``location`` (creating it when ``create``) and bring its schema up to date.

    ``migrate_to`` stops at an older version (tests use it to build an "old" store).
    Raises :class:`StoreError` with a one-line reason when the location cannot be used.
    """
    if not isinstance(location, StoreLocation):
        location = StoreLocation(str(location))
    location.check(create=create)
    created_dir = False
    created_data: Path | None = None
    try:
        if not location.is_catalog_url and not location.directory.exists():
            location.directory.mkdir(parents=True)
            created_dir = True
        if location.data_path and "://" not in location.data_path and not Path(location.data_path).exists():
            Path(location.data_path).mkdir(parents=True, exist_ok=True)  # another process may race us to it
            created_data = Path(location.data_path)
    except OSError as exc:
        # os.access() in check() says yes to root, on read-only mounts and under ACLs; mkdir has the last word.
        if created_dir:
            _remove_new_store(location.directory)
        raise StoreError(f"cannot create {exc.filename}: {exc.strerror}; choose a writable location for the store or its data path") from None
    store = Store(location, memory_limit)
    try:
        migrate(store, migrate_to if migrate_to is not None else LATEST_VERSION)
    except BaseException:
        store.close()
        if created_dir:
            _remove_new_store(location.directory)
        if created_data is not None:
            with contextlib.suppress(OSError):
                created_data.rmdir()  # only while still empty: another process may have started writing there
        raise
    return store


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The newest migration applied to this store (0 for a new one)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = 'schema_migrations'"
    ).fetchall()[0][0]
    if not exists:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0][0]


def migrate(store: Store, target: int = LATEST_VERSION) -> list[int]:
    """Apply pending migrations up to ``target``, each in its own transaction; return those applied.

    Several processes may open a new store at once: a migration that lost the race
    conflicts, is retried, and then finds itself already applied.
    """
    applied = []
    for number, name, fn in MIGRATIONS:
        if number > target:
            break

        def step(con, number=number, name=name, fn=fn) -> bool:
            current = schema_version(con)
            if current > LATEST_VERSION:
                raise StoreError(f"store schema version {current} is newer than this prefstream ({LATEST_VERSION}); upgrade prefstream")
            if number <= current:
                return False
            fn(con)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, current_timestamp)", [number, name])
            return True

        try:
            if store.transact(step, what=f"migration {number}"):
                applied.append(number)
        except duckdb.Error as exc:
            raise StoreError(f"cannot migrate store {store.location.redacted()}: {first_line(exc)}") from None
    return applied


def _remove_new_store(directory: Path) -> None:
    """Undo a store directory this call created, so a failed first open leaves nothing half-made."""
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


__all__ = ["open_store", "migrate", "schema_version", "snapshot_of", "Store", "StoreLocation", "LATEST_VERSION", "MIGRATIONS", "StoreError"]
