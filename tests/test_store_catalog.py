"""A PostgreSQL catalog: locations that cannot work are one line and exit 2, with nothing half-created,
and a password in the catalog URL never leaves the process."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from prefstream.ingest.produce import produce
from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.store import StoreLocation
from prefstream.tests.conftest import FAST_CONSUMER
from prefstream.tests.store_helpers import query, write_jsonl

SECRET = "Sup3r-S3cret-" + uuid.uuid4().hex[:8]


def cli(*args, timeout=180):
    done = subprocess.run([sys.executable, "-m", "prefstream.cli", *map(str, args)], capture_output=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


def psql(sql: str, dbname: str = "postgres") -> str:
    done = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", dbname, "-tA", "-c", sql], capture_output=True, check=True)
    return done.stdout.decode().strip()


def catalog_tables(dbname: str) -> int:
    return int(psql("SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')", dbname))


@pytest.fixture
def events(tmp_path) -> Path:
    return write_jsonl(tmp_path / "events.jsonl", simulate(SimConfig(n=50, seed=41)))


def assert_one_line_exit_2(result, *needles):
    code, out, err = result
    assert code == 2, result
    assert len(err.strip().splitlines()) == 1 and err.startswith("prefstream: error: "), err
    assert "Traceback" not in err + out and SECRET not in err + out
    for needle in needles:
        assert needle in err, (needle, err)


def test_an_unreachable_catalog(tmp_path, events):
    from prefstream.ingest.broker import free_port

    url = f"ducklake:postgres:dbname=x host=127.0.0.1 port={free_port()} user=postgres password={SECRET} connect_timeout=3"
    result = cli("ingest-file", events, "--store", url, "--data-path", tmp_path / "data")
    assert_one_line_exit_2(result, "cannot reach the store catalog")
    assert not (tmp_path / "data").exists()


def test_a_catalog_without_its_data_path(pg_database, events):
    name = pg_database()
    result = cli("ingest-file", events, "--store", f"ducklake:postgres:dbname={name} host=127.0.0.1 user=postgres password={SECRET}")
    assert_one_line_exit_2(result, "--data-path")
    assert catalog_tables(name) == 0


def test_a_data_path_without_write_access(pg_database, tmp_path, events):
    name = pg_database()
    if os.geteuid() == 0:
        target = Path("/sys/prefstream-data")  # root may write anywhere but here (sysfs refuses everyone)
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "data"
    result = cli("ingest-file", events, "--store", f"ducklake:postgres:dbname={name} host=127.0.0.1 user=postgres password={SECRET}", "--data-path", target)
    assert_one_line_exit_2(result, str(target))
    assert catalog_tables(name) == 0 and not target.exists()


def test_a_postgres_database_that_does_not_exist(tmp_path, pg_database, events):
    pg_database  # skips without a server
    name = f"prefstream_missing_{uuid.uuid4().hex[:8]}"
    result = cli("ingest-file", events, "--store", f"ducklake:postgres:dbname={name} host=127.0.0.1 user=postgres password={SECRET}", "--data-path", tmp_path / "data")
    assert_one_line_exit_2(result, "does not exist", "createdb")
    assert psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "0"
    assert not (tmp_path / "data").exists()


def test_an_embedded_store_in_a_directory_without_write_access(tmp_path, events):
    if os.geteuid() == 0:
        target = Path("/sys/prefstream-store")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "store"
    assert_one_line_exit_2(cli("ingest-file", events, "--store", target), str(target))
    assert not target.exists()


def test_a_password_in_the_catalog_url_never_appears_in_output_logs_or_artefacts(broker, make_topic, group_id, pg_database, tmp_path, events):
    name = pg_database()
    url = f"ducklake:postgres:dbname={name} host=127.0.0.1 user=postgres password={SECRET}"  # trust auth: accepted, unused
    store = ["--store", url, "--data-path", tmp_path / "data"]
    seen: list[str] = []

    code, out, err = cli("ingest-file", events, *store)
    assert code == 0, err
    seen += [out, err]

    topic = make_topic()
    produce(broker.bootstrap, topic, simulate(SimConfig(n=40, seed=42)))
    options = [a for k, v in FAST_CONSUMER.items() for a in ("--consumer-option", f"{k}={v}")]
    code, out, err = cli("ingest", "--bootstrap", broker.bootstrap, "--topic", topic, "--group", group_id, *store, "--until-idle", "1", "-v", *options)
    assert code == 0, err
    assert "landed 40 " in out and "assigned" in err  # the verbose log did run
    seen += [out, err]

    # Errors that name the store: a snapshot that does not exist, a store that cannot be migrated forward.
    code, out, err = cli("ingest-file", tmp_path / "missing.jsonl", *store)
    seen += [out, err]
    code, out, err = cli("audit", *store, "--json", tmp_path / "audit.json", "--quiet")
    assert code in (0, 1), err
    seen += [out, err]
    code, out, err = cli("audit", *store, "--snapshot", 99999, "--json", "-", "--no-store", "--quiet")
    assert code == 2, (out, err)
    seen += [out, err]
    code, out, err = cli("export", "dpo", *store, "--out", tmp_path / "dpo", "--force", "--quiet")
    assert code == 0, err
    seen += [out, err]

    for text in seen:
        assert SECRET not in text, text
    artefacts = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".parquet"]
    assert any(p.name == "manifest.json" for p in artefacts) and any(p.name == "audit.json" for p in artefacts)
    for path in artefacts:
        assert SECRET.encode() not in path.read_bytes(), path
    # What the store itself records (reports, exports) is redacted too.
    location = StoreLocation(url, str(tmp_path / "data"))
    for table, column in [("quality_reports", "report"), ("exports", "manifest")]:
        for (text,) in query(location, f"SELECT {column}::VARCHAR FROM {table}"):
            assert SECRET not in text, table
    assert query(location, "SELECT count(*) FROM exports")[0][0] >= 1
