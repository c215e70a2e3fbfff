"""`prefstream status`, `query` and `store compact` against real stores (files and a real broker)."""

from __future__ import annotations

import json

from prefstream.ingest.produce import produce
from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.store import open_store
from prefstream.tests.kafka_helpers import ingest
from prefstream.tests.store_helpers import land, query, run

EVENTS = list(simulate(SimConfig(n=400, seed=5, invalid_rate=0.05, duplicate_rate=0.05)))


def test_query_prints_tsv_csv_and_json_rows(tmp_path):
    store = land(tmp_path, EVENTS)
    sql = "SELECT rating, count(*) AS n FROM thumbs_current GROUP BY 1 ORDER BY 1"
    expected = query(store, sql)
    tsv = run("query", "--store", store, sql)
    assert tsv.exit_code == 0, tsv.output
    assert tsv.output.splitlines() == ["rating\tn", *(f"{r}\t{n}" for r, n in expected)]
    as_csv = run("query", "--store", store, "--csv", sql)
    assert as_csv.output.splitlines() == ["rating,n", *(f"{r},{n}" for r, n in expected)]
    as_json = run("query", "--store", store, "--json", sql)
    assert [json.loads(line) for line in as_json.output.splitlines()] == [{"rating": r, "n": n} for r, n in expected]


def test_query_is_read_only_and_errors_are_one_line(tmp_path):
    store = land(tmp_path, EVENTS)
    for sql in ("DELETE FROM thumbs_raw", "SELECT no_such_column FROM thumbs"):
        result = run("query", "--store", store, sql)
        assert result.exit_code == 2
        assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert query(store, "SELECT count(*) FROM thumbs_raw")[0][0] > 0


def test_query_at_an_old_snapshot_does_not_see_later_feedback(tmp_path):
    store = land(tmp_path, EVENTS[:200])
    with open_store(store) as opened:
        before = opened.current_snapshot()
    before_count = query(store, "SELECT count(*) FROM thumbs")[0][0]
    land(tmp_path, EVENTS[200:])
    assert query(store, "SELECT count(*) FROM thumbs")[0][0] > before_count
    old = run("query", "--store", store, "--snapshot", before, "SELECT count(*) FROM thumbs")
    assert old.output.splitlines()[1] == str(before_count)
    missing = run("query", "--store", store, "--snapshot", 999999, "SELECT 1")
    assert missing.exit_code == 2 and "snapshot 999999 does not exist" in missing.output


def test_status_reports_rows_dead_letters_duplicates_and_file_checkpoints(tmp_path):
    store = land(tmp_path, EVENTS)
    result = run("status", "--store", store, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["rows"]["thumbs"] == query(store, "SELECT count(*) FROM thumbs")[0][0]
    assert report["dead_letters_total"] == query(store, "SELECT count(*) FROM dead_letters")[0][0] > 0
    assert report["duplicates"] == query(store, "SELECT count(*) FROM duplicates")[0][0] > 0
    assert sum(report["dead_letters"].values()) == report["dead_letters_total"]
    assert report["files"] == [{"file": str((tmp_path / "events.jsonl").resolve()), "next_line": len(EVENTS) + 1}]
    assert report["snapshot"] == open_store(store).current_snapshot()
    text = run("status", "--store", store)
    assert "dead letter x" in text.output and "next line" in text.output


def test_status_shows_lag_against_the_high_watermark(broker, make_topic, group_id, tmp_path):
    topic = make_topic(2)
    valid = [e for e in EVENTS if isinstance(e, dict)][:100]
    produce(broker.bootstrap, topic, valid)
    store = tmp_path / "store"
    ingest(broker, [topic], group_id, store)[1].close()
    produce(broker.bootstrap, topic, valid[:30])  # 30 more, not ingested
    result = run("status", "--store", store, "--bootstrap", broker.bootstrap, "--json")
    groups = json.loads(result.output)["groups"]
    assert {g["partition"] for g in groups} == {0, 1}
    assert sum(g["lag"] for g in groups) == 30
    assert all(g["high_watermark"] == g["next_offset"] + g["lag"] for g in groups)


def test_compact_merges_files_keeps_cited_snapshots_and_loses_no_rows(tmp_path):
    for i in range(4):  # four landings: several snapshots, each with its own small files
        store = land(tmp_path, EVENTS[i * 100 : (i + 1) * 100])
    with open_store(store) as opened:
        cited = opened.current_snapshot()
        opened.transact(lambda con: con.execute(
            "INSERT INTO quality_reports VALUES ('r1', now(), NULL, NULL, ?, true, '{}')", [cited]))
    counts = query(store, "SELECT (SELECT count(*) FROM thumbs), (SELECT count(*) FROM pairwise), (SELECT count(*) FROM dead_letters)")
    at_cited = run("query", "--store", store, "--snapshot", cited, "SELECT count(*) FROM pairwise_current").output
    result = run("store", "compact", "--store", store, "--retention-days", 0)
    assert result.exit_code == 0, result.output
    assert "kept 1 cited" in result.output
    assert query(store, "SELECT (SELECT count(*) FROM thumbs), (SELECT count(*) FROM pairwise), (SELECT count(*) FROM dead_letters)") == counts
    assert run("query", "--store", store, "--snapshot", cited, "SELECT count(*) FROM pairwise_current").output == at_cited
    before, after = (int(x) for x in result.output.split("data files ")[1].split(";")[0].split(" -> "))
    assert after < before


def test_commands_reading_a_store_refuse_a_missing_one(tmp_path):
    for args in (("status",), ("query", "SELECT 1"), ("store", "compact")):
        result = run(*args, "--store", tmp_path / "nowhere")
        assert result.exit_code == 2, (args, result.output)
        assert "no store at" in result.output
        assert not (tmp_path / "nowhere").exists()
