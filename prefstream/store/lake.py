"""Connections to a DuckLake store: readers pinned to one snapshot, writers retried on contention.

DuckDB stays on the 1.5 line (DuckLake 1.0). Its extensions load the normal way when
installed, otherwise from the pip packages that carry the official binaries for this exact
DuckDB version (``duckdb-extension-ducklake`` etc.), so a store opens with no network.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import duckdb

from prefstream.errors import StoreError
from prefstream.store.location import StoreLocation, redact

log = logging.getLogger(__name__)
T = TypeVar("T")

LAKE = "lake"
# Contention, not failure: another writer holds SQLite's lock, or committed a conflicting change first.
_RETRYABLE = ("database is locked", "conflict", "could not serialize", "SQLITE_BUSY", "deadlock detected")
# Two processes creating the same new catalog race on its tables; the loser retries and finds them.
_RETRYABLE_ATTACH = (*_RETRYABLE, "Failed to initialize DuckLake", "duplicate key value")
RETRY_FOR_S = 120.0


def load_extensions(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> None:
    installed = {name for name, ok in con.execute("SELECT extension_name, installed FROM duckdb_extensions()").fetchall() if ok}
    for name in names:
        # ``sqlite`` and ``postgres`` are installed under their scanner names.
        if not ({name, f"{name}_scanner"} & installed):
            try:
                from duckdb_extensions import import_extension
            except ImportError:
                raise StoreError(f"DuckDB extension {name} is not installed; `pip install duckdb-extension-{name}=={duckdb.__version__}`") from None
            import_extension(name, con=con)
        con.execute(f"LOAD {name}")


def is_retryable(exc: BaseException, markers: tuple[str, ...] = _RETRYABLE) -> bool:
    text = str(exc).lower()
    return isinstance(exc, duckdb.Error) and any(marker.lower() in text for marker in markers)


def retrying(fn: Callable[[], T], *, what: str, deadline_s: float = RETRY_FOR_S, markers: tuple[str, ...] = _RETRYABLE) -> T:
    """Run ``fn`` until it succeeds, retrying contention with jittered back-off."""
    started = time.monotonic()
    delay = 0.02
    while True:
        try:
            return fn()
        except duckdb.Error as exc:
            if not is_retryable(exc, markers) or time.monotonic() - started > deadline_s:
                raise
            log.debug("%s: retrying after contention (%s)", what, first_line(exc))
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)


def connect(location: StoreLocation, *, read_only: bool, snapshot: int | None = None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """A new DuckDB connection with the store attached as ``lake`` and in use."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        load_extensions(con, ("ducklake", "postgres" if location.attach_url().startswith("ducklake:postgres:") else "sqlite"))
        if memory_limit:
            con.execute("SET memory_limit = ?", [memory_limit])
        attach(con, location, read_only=read_only, snapshot=snapshot)
    except BaseException:
        con.close()
        raise
    return con


def attach(con: duckdb.DuckDBPyConnection, location: StoreLocation, *, read_only: bool, snapshot: int | None) -> None:
    """(Re)attach the store as ``lake`` on ``con``, at ``snapshot`` when given, and use it."""
    options = [f"DATA_PATH '{_quote(location.resolved_data_path())}'"]
    if not location.is_catalog_url:
        # A directory store's data always lives inside it: reached by another relative path,
        # or moved, it is the same store.
        options.append("OVERRIDE_DATA_PATH true")
    if read_only:
        options.append("READ_ONLY")
    if snapshot is not None:
        options.append(f"SNAPSHOT_VERSION {int(snapshot)}")
    sql = f"ATTACH '{_quote(location.attach_url())}' AS {LAKE} ({', '.join(options)})"
    if LAKE in {row[0] for row in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()}:
        con.execute("USE memory")
        con.execute(f"DETACH {LAKE}")
    try:
        retrying(lambda: con.execute(sql), what="attach", markers=_RETRYABLE_ATTACH, deadline_s=30.0)
    except duckdb.Error as exc:
        raise StoreError(_attach_error(location, exc, snapshot)) from None
    con.execute(f"USE {LAKE}")


def snapshot_of(con: duckdb.DuckDBPyConnection) -> int:
    """The snapshot a connection reads (for a pinned reader, the one it was pinned to)."""
    return con.execute(f"SELECT id FROM {LAKE}.current_snapshot()").fetchall()[0][0]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0]) if text else type(exc).__name__


def _quote(text: str) -> str:
    return text.replace("'", "''")


def _attach_error(location: StoreLocation, exc: BaseException, snapshot: int | None) -> str:
    text = str(exc)
    where = location.redacted()
    if snapshot is not None and "snapshot" in text.lower():
        return f"snapshot {snapshot} does not exist in {where} (it may have been expired by `prefstream store compact`); `prefstream status --store ...` shows the current one"
    if "does not exist" in text and "database" in text:
        return f"cannot open store {where}: the PostgreSQL database does not exist; create it first (e.g. `createdb NAME`)"
    if "Unable to connect" in text or "connection to server" in text:
        return f"cannot reach the store catalog {where}: {first_line(exc)}; check host, port and credentials in the catalog URL"
    return f"cannot open store {where}: {first_line(exc)}"
