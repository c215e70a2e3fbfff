"""``prefstream demo``: the main job end to end on this machine, nothing to set up."""

from __future__ import annotations

import time
from pathlib import Path

import click

from prefstream.cli.options import summary_line

TOPIC = "feedback"


@click.command()
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default="demo", show_default=True, help="Where the DuckDB file goes.")
@click.option("--n", "n", type=click.IntRange(min=10), default=20000, show_default=True, help="Simulated messages.")
@click.option("--partitions", type=click.IntRange(min=1), default=4, show_default=True, help="Partitions of the demo topic.")
def demo(workdir, n, partitions):
    """Local broker + simulated feedback + exactly-once ingest into DuckDB, then what landed.

    Starts tansu on a free 127.0.0.1 port, produces N simulated events (1% malformed, 1%
    producer retries, a position-biased annotator) to a topic, ingests them into
    DIR/feedback.duckdb until the topic is idle, and prints the tables.

    \b
    Example:
      prefstream demo --n 20000
      duckdb demo/feedback.duckdb "SELECT rating, count(*) FROM thumbs_current GROUP BY 1"
    """
    from prefstream.ingest.broker import LocalBroker, create_topic
    from prefstream.ingest.consumer import IngestSettings, KafkaIngestor
    from prefstream.ingest.produce import produce
    from prefstream.ingest.simulator import SimConfig, simulate
    from prefstream.store import open_store

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "feedback.duckdb"
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)
    with LocalBroker() as broker:
        click.echo(f"[1/3] broker: tansu on {broker.bootstrap}, topic {TOPIC!r} with {partitions} partitions")
        create_topic(broker.bootstrap, TOPIC, partitions)
        config = SimConfig(n=n, seed=7, invalid_rate=0.01, duplicate_rate=0.01, plant=frozenset({"position"}))
        started = time.monotonic()
        sent = produce(broker.bootstrap, TOPIC, simulate(config))
        click.echo(f"[2/3] produced {sent} simulated messages in {time.monotonic() - started:.1f}s")
        con = open_store(db)
        settings = IngestSettings(
            bootstrap=broker.bootstrap, topics=(TOPIC,), group_id="prefstream-demo", until_idle=3.0,
            consumer_options={"session_timeout_ms": 6000},
        )
        result = KafkaIngestor(con, settings).run()
        click.echo(f"[3/3] ingest: {summary_line(result.counts, result.seconds)}")
    click.echo(f"\nWhat landed in {db}:")
    for table in ("thumbs", "pairwise", "thumbs_current", "pairwise_current", "dead_letters", "duplicates"):
        click.echo(f"  {table:<17} {con.execute(f'SELECT count(*) FROM {table}').fetchall()[0][0]:>7} rows")
    click.echo("  kafka_offsets     " + ", ".join(
        f"{t}[{p}]->{o}" for t, p, o in con.execute('SELECT topic, "partition", next_offset FROM kafka_offsets ORDER BY 2').fetchall()
    ))
    click.echo("\nThumbs by rating:   " + ", ".join(f"{r} {c}" for r, c in con.execute("SELECT rating, count(*) FROM thumbs_current GROUP BY 1 ORDER BY 1").fetchall()))
    click.echo("Pairwise by choice: " + ", ".join(f"{r} {c}" for r, c in con.execute("SELECT choice, count(*) FROM pairwise_current GROUP BY 1 ORDER BY 1").fetchall()))
    click.echo("Dead letters by reason:")
    for reason, count in con.execute("SELECT reason, count(*) FROM dead_letters GROUP BY 1 ORDER BY 2 DESC").fetchall():
        click.echo(f"  {count:>5}  {reason}")
    con.close()
    click.echo(f"\nNext: prefstream audit --db {db} --html {workdir / 'report.html'}")
