"""``store compact``: DuckLake's own maintenance, in an order that is safe while ingest runs.

1. flush rows DuckLake inlined into the catalog (small batches) into Parquet files;
2. merge adjacent small files (time travel keeps working: snapshots refer to parts of files);
3. expire snapshots older than the retention, except every snapshot a stored quality
   report or export cites (those must stay readable: they are lineage);
4. delete the files only expired snapshots used, once they are older than a grace period
   (a reader pinned to an old snapshot may still be scanning them).
Each step is its own transaction, retried when an ingest commit conflicts with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from prefstream.store import Store
from prefstream.store.lake import LAKE, retrying

CITED_SQL = """
SELECT DISTINCT snapshot FROM quality_reports
UNION SELECT DISTINCT snapshot FROM exports"""


@dataclass
class CompactResult:
    files_before: int
    files_after: int
    expired: list[int]
    kept_cited: list[int]
    snapshot: int


def compact(store: Store, *, retention: timedelta = timedelta(days=30), grace: timedelta = timedelta(hours=1)) -> CompactResult:
    """Run the steps above; return what changed."""
    con = store.write()
    try:
        files_before = _data_files(con)
        retrying(lambda: con.execute(f"CALL ducklake_flush_inlined_data('{LAKE}')").fetchall(), what="flush inlined data")
        retrying(lambda: con.execute(f"CALL ducklake_merge_adjacent_files('{LAKE}')").fetchall(), what="merge files")
        cited = {row[0] for row in con.execute(CITED_SQL).fetchall()}
        old = [
            row[0]
            for row in con.execute(
                f"SELECT snapshot_id FROM ducklake_snapshots('{LAKE}') WHERE snapshot_time < now() - to_seconds(?) "
                f"AND snapshot_id < (SELECT id FROM {LAKE}.current_snapshot()) ORDER BY 1",
                [retention.total_seconds()],
            ).fetchall()
        ]
        expire = [s for s in old if s not in cited]
        if expire:
            versions = ", ".join(str(int(s)) for s in expire)
            retrying(lambda: con.execute(f"CALL ducklake_expire_snapshots('{LAKE}', versions => [{versions}])").fetchall(), what="expire snapshots")
        retrying(
            lambda: con.execute(f"CALL ducklake_cleanup_old_files('{LAKE}', older_than => now() - to_seconds(?))", [grace.total_seconds()]).fetchall(),
            what="clean up files",
        )
        return CompactResult(files_before, _data_files(con), expire, sorted(s for s in old if s in cited), _current(con))
    finally:
        con.close()


def _data_files(con) -> int:
    # Live data files, from DuckLake's own catalog tables.
    return con.execute(f"SELECT count(*) FROM __ducklake_metadata_{LAKE}.ducklake_data_file WHERE end_snapshot IS NULL").fetchall()[0][0]


def _current(con) -> int:
    return con.execute(f"SELECT id FROM {LAKE}.current_snapshot()").fetchall()[0][0]
