"""``prefstream simulate``: realistic feedback telemetry with planted biases."""

from __future__ import annotations

import click

from prefstream.cli.options import Progress, quiet_option


@click.command()
@click.option("--n", "n", type=click.IntRange(min=1), default=1000, show_default=True, help="Number of messages.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; the same settings give the same events.")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Write JSONL here (one message a line).")
@click.option("--bootstrap", metavar="HOST:PORT", help="Produce to this Kafka instead of a file (needs --topic).")
@click.option("--topic", help="Topic to produce to.")
@click.option("--annotators", type=click.IntRange(min=1), default=8, show_default=True, help="Honest annotators in the pool.")
@click.option("--raters-per-item", type=click.IntRange(min=1), default=3, show_default=True, help="Annotators rating each item.")
@click.option("--pairwise-share", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Share of items that are pairwise.")
@click.option("--chat-share", type=click.FloatRange(0, 1), default=0.3, show_default=True, help="Share of prompts that are chat message lists.")
@click.option("--accuracy", type=click.FloatRange(0.5, 1), default=0.9, show_default=True, help="How often honest annotators agree with the latent quality.")
@click.option("--plant", multiple=True, type=click.Choice(["position", "random", "flipped", "length", "imbalance"]), help="Plant a known bias (repeatable).")
@click.option("--duplicate-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Share of events re-sent (producer retries).")
@click.option("--invalid-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Share of messages replaced by malformed ones.")
@quiet_option
def simulate(n, seed, out, bootstrap, topic, annotators, raters_per_item, pairwise_share, chat_share, accuracy, plant, duplicate_rate, invalid_rate, quiet):
    """Produce realistic thumbs / pairwise feedback, optionally with planted biases.

    Several annotators rate each item; responses are good ("Sure! To ...") or bad
    ("Sorry, ..."), lengths independent of quality unless `--plant length`. Planted
    annotators are named ann-position, ann-random and ann-flipped.

    \b
    Examples:
      prefstream simulate --n 5000 --out feedback.jsonl
      prefstream simulate --n 5000 --plant position --plant length --out biased.jsonl
      prefstream simulate --n 5000 --bootstrap 127.0.0.1:9092 --topic feedback
    """
    from prefstream.errors import PrefstreamError
    from prefstream.ingest.produce import encode, produce
    from prefstream.ingest.simulator import SimConfig, simulate as run

    if bool(out) == bool(bootstrap):
        raise PrefstreamError("give exactly one of --out FILE.jsonl or --bootstrap HOST:PORT --topic T")
    if bootstrap and not topic:
        raise PrefstreamError("--bootstrap needs --topic")
    config = SimConfig(
        n=n, seed=seed, annotators=annotators, raters_per_item=raters_per_item, pairwise_share=pairwise_share,
        chat_share=chat_share, accuracy=accuracy, plant=frozenset(plant), duplicate_rate=duplicate_rate,
        invalid_rate=invalid_rate,
    )
    progress = Progress(not quiet)
    if out:
        with open(out, "wb") as f:
            for i, message in enumerate(run(config), start=1):
                f.write(encode(message) + b"\n")
                if i % 10000 == 0:
                    progress.show(f"wrote {i}/{n}")
        progress.done()
        click.echo(f"wrote {n} messages to {out}")
    else:
        from prefstream.ingest.produce import topic_exists

        if not topic_exists(bootstrap, topic):
            click.echo(f"topic {topic} does not exist on {bootstrap}: creating it with 1 partition (create it first for more)", err=True)
            from prefstream.ingest.broker import create_topic

            create_topic(bootstrap, topic, 1)
        sent = produce(bootstrap, topic, run(config), on_sent=lambda i: progress.show(f"sent {i}/{n}"))
        progress.done()
        click.echo(f"sent {sent} messages to {topic} at {bootstrap}")
