"""``prefstream demo``: the whole job on this machine, nothing to set up.

Every step after ingest runs as its own ``prefstream`` process against the store while
ingest keeps consuming: that is the point being shown (readers never stop the stream).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

TOPIC = "feedback"


def _prefstream(*args, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "prefstream.cli", *map(str, args)], capture_output=True, text=True)
    if check and result.returncode not in (0, 1):
        raise click.ClickException(f"`prefstream {' '.join(map(str, args[:2]))}` failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    return result


def _wait_for_rows(store: Path, at_least: int, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (store / "catalog.sqlite").exists():
            out = _prefstream("query", "--store", store, "SELECT (SELECT count(*) FROM thumbs) + (SELECT count(*) FROM pairwise)", check=False)
            lines = out.stdout.strip().splitlines()
            if out.returncode == 0 and len(lines) == 2 and int(lines[1]) >= at_least:
                return int(lines[1])
        time.sleep(1.0)
    raise click.ClickException(f"ingest landed fewer than {at_least} events in {timeout:.0f}s")


@click.command()
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default="demo", show_default=True, help="Where the store, exports and runs go.")
@click.option("--n", "n", type=click.IntRange(min=200), default=20000, show_default=True, help="Simulated messages.")
@click.option("--partitions", type=click.IntRange(min=1), default=4, show_default=True, help="Partitions of the demo topic.")
@click.option("--train-steps", type=click.IntRange(min=1), default=10, show_default=True, help="DPO steps on the tiny model.")
def demo(workdir, n, partitions, train_steps):
    """The whole job: broker, streaming feedback, ingest, and audit / export / train while ingest runs.

    Starts tansu on a free 127.0.0.1 port, streams N simulated events (1% malformed, 1%
    producer retries, a position-biased annotator) to a topic, and keeps `prefstream
    ingest` consuming them into DIR/store. While it runs: audits the store, exports DPO and
    KTO sets, builds a tiny model and trains it with DPO for a few steps. Prints where each
    artefact is and which store snapshot fed it. Earlier demo output in DIR is replaced.

    \b
    Example:
      prefstream demo --n 20000
      prefstream query --store demo/store "SELECT rating, count(*) FROM thumbs_current GROUP BY 1"
    """
    from prefstream.ingest.broker import LocalBroker, create_topic
    from prefstream.ingest.produce import produce
    from prefstream.ingest.simulator import SimConfig, simulate

    workdir = Path(workdir)
    store, exports, runs = workdir / "store", workdir / "exports", workdir / "runs"
    for stale in (store, exports, runs, workdir / "models"):
        shutil.rmtree(stale, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    events = list(simulate(SimConfig(n=n, seed=7, invalid_rate=0.01, duplicate_rate=0.01, plant=frozenset({"position"}))))
    with LocalBroker() as broker:
        click.echo(f"[1/6] broker: tansu on {broker.bootstrap}, topic {TOPIC!r} with {partitions} partitions")
        create_topic(broker.bootstrap, TOPIC, partitions)
        half = len(events) // 2
        produce(broker.bootstrap, TOPIC, events[:half])
        ingest = subprocess.Popen(
            [sys.executable, "-m", "prefstream.cli", "ingest", "--bootstrap", broker.bootstrap, "--topic", TOPIC,
             "--group", "prefstream-demo", "--store", str(store), "--quiet", "--consumer-option", "session_timeout_ms=6000"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            # The second half streams in while the readers below work.
            streamer = threading.Thread(
                target=lambda: produce(broker.bootstrap, TOPIC, _trickle(events[half:], per_second=max(100, (len(events) - half) // 40))), daemon=True
            )
            streamer.start()
            landed = _wait_for_rows(store, half // 2)
            click.echo(f"[2/6] ingest running (pid {ingest.pid}): {landed} events landed so far, more streaming in")
            artefacts = _while_ingesting(store, exports, runs, workdir, train_steps)
            still_streaming = streamer.is_alive()
            streamer.join()
        finally:
            ingest.send_signal(signal.SIGTERM)
            out, err = ingest.communicate(timeout=120)
        if ingest.returncode != 0:
            raise click.ClickException(f"ingest exited with {ingest.returncode}: {err.strip().splitlines()[-1:]}")
        click.echo(f"[6/6] ingest stopped: {out.strip().splitlines()[0] if out.strip() else '(no summary)'}")
        final = _wait_for_rows(store, 0)
        click.echo(f"      {final - landed} events landed while the audit, exports and training read the store"
                   + (" (and the stream was still flowing when they finished)" if still_streaming else ""))
    click.echo("\nArtefacts (each records the store snapshot it read):")
    for what, path, snapshot in artefacts:
        click.echo(f"  {what:<14} {path}  (snapshot {snapshot})")
    status = _prefstream("status", "--store", store)
    click.echo("\n" + status.stdout.rstrip())
    click.echo(f"\nNext: prefstream query --store {store} \"SELECT choice, count(*) FROM pairwise_current GROUP BY 1\"")


def _trickle(events, per_second: int):
    """Yield events at a steady pace so that ingest is visibly still consuming."""
    started = time.monotonic()
    for i, event in enumerate(events):
        if i % 500 == 0:
            time.sleep(max(0.0, started + i / per_second - time.monotonic()))
        yield event


def _while_ingesting(store: Path, exports: Path, runs: Path, workdir: Path, train_steps: int) -> list[tuple[str, Path, object]]:
    artefacts = []
    snapshots: dict[str, object] = {}
    report = workdir / "audit.json"
    audit = _prefstream("audit", "--store", store, "--json", report, "--html", workdir / "audit.html")
    verdict = "gate passed" if audit.returncode == 0 else "gate failed: " + "; ".join(audit.stdout.strip().splitlines()[-3:])
    click.echo(f"[3/6] audit: {verdict}")
    artefacts.append(("audit report", workdir / "audit.html", json.loads(report.read_text()).get("snapshot")))
    for kind in ("dpo", "kto"):
        out = exports / kind
        result = _prefstream("export", kind, "--store", store, "--out", out)
        forced = ""
        if result.returncode == 1:  # the gate refused: the demo's data has a planted biased annotator
            result = _prefstream("export", kind, "--store", store, "--out", out, "--force", "--force-reason", "demo: planted biased annotator")
            forced = " (gate overridden with --force, reason recorded)"
        manifest = json.loads((out / "manifest.json").read_text())
        click.echo(f"[4/6] export {kind}: {sum(manifest['rows'].values())} rows{forced}")
        artefacts.append((f"{kind} export", out, manifest.get("snapshot")))
        snapshots[kind] = manifest.get("snapshot")
    model = workdir / "models" / "tiny"
    _prefstream("tiny-model", "--out", model)
    run = runs / "dpo"
    train = _prefstream("train", "dpo", "--data", exports / "dpo", "--model", model, "--out", run, "--max-steps", train_steps)
    if train.returncode != 0:
        raise click.ClickException(f"training failed: {train.stderr.strip().splitlines()[-1:]}")
    click.echo(f"[5/6] trained the tiny model with DPO for {train_steps} steps -> {run / 'final'}")
    artefacts.append(("dpo run", run, snapshots["dpo"]))  # a run reads the snapshot of its export
    return artefacts
