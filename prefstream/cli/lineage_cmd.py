"""``prefstream lineage``: where an artefact came from and what was built on it."""

from __future__ import annotations

import json

import click

from prefstream.cli.options import open_cli_store, store_options


@click.command()
@click.argument("ref", metavar="ID")
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print the tree as JSON.")
@click.pass_obj
def lineage(config, ref, store, data_path, as_json) -> None:
    """Trace a run, export, quality report, round or comparison (an id, or a run / export directory).

    Back: the export and its quality report, the store snapshot it read, the Kafka
    topic / partition / offset ranges and backfilled file lines of the events behind it, the
    run whose model it started from. Forward: runs trained on it, rounds, comparisons,
    promotions, and runs started from its model.

    \b
    Example:
      prefstream lineage runs/round-3 --store lake
      prefstream lineage dpo-20261201T101500Z-1a2b3c4d --store lake --json
    """
    from prefstream.lineage import lineage as trace
    from prefstream.lineage import render

    with open_cli_store(config, store, data_path) as opened:
        tree = trace(opened, ref)
    if as_json:
        click.echo(json.dumps(tree, indent=2, default=str))
    else:
        for line in render(tree):
            click.echo(line)
