"""File backfill through the CLI: validation, dead letters, duplicates, idempotent re-runs, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from prefstream.ingest.simulator import SimConfig, simulate
from prefstream.tests.kafka_helpers import is_valid
from prefstream.tests.store_helpers import query, run, write_jsonl


def test_ingest_file_twice_lands_everything_once_and_a_third_run_only_new_lines(tmp_path, store_path):
    messages = list(simulate(SimConfig(n=600, seed=3, invalid_rate=0.05, duplicate_rate=0.03)))
    path = tmp_path / "events.jsonl"
    write_jsonl(path, messages)
    valid = [m for m in messages if is_valid(m)]
    unique_ids = {m["event_id"] for m in valid}
    retries = len(valid) - len(unique_ids)
    assert retries > 0 and len(valid) < len(messages)

    first = run("ingest-file", path, "--store", store_path)
    assert first.exit_code == 0, first.output
    assert f"landed {len(unique_ids)} " in first.output
    assert f"duplicates {retries}," in first.output  # one batch: every retry is within it
    second = run("ingest-file", path, "--store", store_path)
    assert second.exit_code == 0, second.output
    assert "landed 0 " in second.output and "dead letters 0," in second.output and f"already landed {len(messages)};" in second.output

    stored = {r[0] for r in query(store_path, "SELECT event_id FROM thumbs UNION ALL SELECT event_id FROM pairwise")}
    assert stored == unique_ids
    assert query(store_path, "SELECT count(*) FROM dead_letters") == [(len(messages) - len(valid),)]
    assert query(store_path, "SELECT count(*) FROM duplicates") == [(retries,)]
    line, raw = query(store_path, "SELECT source, raw FROM dead_letters ORDER BY source LIMIT 1")[0]
    number = int(line.rsplit(":", 1)[1])
    assert path.read_bytes().split(b"\n")[number - 1] == raw

    more = list(simulate(SimConfig(n=50, seed=33)))
    write_jsonl(path, more)
    third = run("ingest-file", path, "--store", store_path)
    assert third.exit_code == 0, third.output
    assert "landed 50 " in third.output and f"already landed {len(messages)};" in third.output
    assert query(store_path, "SELECT count(*) FROM thumbs_raw")[0][0] + query(store_path, "SELECT count(*) FROM pairwise_raw")[0][0] == len(valid) + 50
    assert query(store_path, "SELECT next_offset FROM kafka_offsets WHERE group_id = 'prefstream:files'") == [(len(messages) + 51,)]


def test_ingest_file_errors_are_one_line_and_create_nothing(tmp_path):
    events = write_jsonl(tmp_path / "events.jsonl", simulate(SimConfig(n=5, seed=1)))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run("ingest-file", events, "--store", blocker / "store")
    assert result.exit_code == 2
    assert result.output.strip().startswith("prefstream: error:") and "not a directory" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    # A JSONL file given as the store is refused and left as it was.
    before = events.read_bytes()
    result = run("ingest-file", events, "--store", events)
    assert result.exit_code == 2 and "is a file, not a store" in result.output
    assert events.read_bytes() == before


def test_a_pretty_printed_json_array_gets_a_hint(tmp_path, store_path):
    array = tmp_path / "events.json"
    array.write_text(json.dumps(list(simulate(SimConfig(n=3, seed=1))), indent=2))
    result = run("ingest-file", array, "--store", store_path)
    assert result.exit_code == 0, result.output
    assert "landed 0 " in result.output and "dead letter x" in result.output
    assert "looks like a JSON array, not JSONL" in result.output


def test_ctrl_c_during_ingest_file_exits_130_and_a_rerun_lands_the_rest_once(tmp_path, store_path):
    messages = list(simulate(SimConfig(n=200_000, seed=12)))
    path = write_jsonl(tmp_path / "big.jsonl", messages)
    command = [sys.executable, "-m", "prefstream.cli", "ingest-file", str(path), "--store", str(store_path)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    # Interrupt once the first batch is committed (the file checkpoint shows up), well before the end:
    # 200k lines take ~10 s on a quiet machine, far longer than noticing the first checkpoint.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if (store_path / "catalog.sqlite").exists():
            try:
                if query(store_path, "SELECT count(*) FROM kafka_offsets WHERE group_id = 'prefstream:files'") == [(1,)]:
                    break
            except Exception:
                pass  # the store is still being created
        time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 130, (out, err)
    assert b"Traceback" not in err and b"Traceback" not in out
    assert out.decode().startswith("landed ") and b"run the same command again" in err
    landed = query(store_path, "SELECT count(*) FROM thumbs")[0][0] + query(store_path, "SELECT count(*) FROM pairwise")[0][0]
    assert 0 < landed < len(messages)

    rerun = run("ingest-file", path, "--store", store_path)
    assert rerun.exit_code == 0, rerun.output
    assert f"landed {len(messages) - landed} " in rerun.output
    assert query(store_path, "SELECT count(*), count(DISTINCT event_id) FROM (SELECT event_id FROM thumbs UNION ALL SELECT event_id FROM pairwise)") == [(len(messages), len(messages))]
    raw = query(store_path, "SELECT (SELECT count(*) FROM thumbs_raw) + (SELECT count(*) FROM pairwise_raw)")
    assert raw == [(len(messages),)]  # the interrupted batch was rolled back or committed, never half
