"""The ``prefstream`` command: a thin skin over the library.

Subcommands live one module each beside this file and are imported only when used, so
``prefstream --help`` stays fast (torch and great-expectations are never loaded for it).
A :class:`~prefstream.errors.PrefstreamError` becomes a one-line message and its exit code.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from prefstream import __version__
from prefstream.config import load_config
from prefstream.errors import PrefstreamError

# name -> "module:attribute"; modules are relative to this package.
COMMANDS = {
    "demo": "demo_cmd:demo",
    "broker": "broker_cmd:broker",
    "simulate": "simulate_cmd:simulate",
    "ingest": "ingest_cmd:ingest",
    "ingest-file": "ingest_cmd:ingest_file",
    "schema": "schema_cmd:schema",
    "status": "store_cmd:status",
    "query": "store_cmd:query",
    "store": "store_cmd:store",
    "audit": "audit_cmd:audit",
    "export": "export_cmd:export",
    "tiny-model": "train_cmd:tiny_model",
    "train": "train_cmd:train",
    "generate": "generate_cmd:generate",
    "judge": "judge_cmd:judge",
    "compare": "compare_cmd:compare",
    "runs": "runs_cmd:runs",
    "lineage": "lineage_cmd:lineage",
    "round": "round_cmd:round_group",
}


class LazyGroup(click.Group):
    """A group that imports each subcommand's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PrefstreamError as exc:
            click.echo(f"prefstream: error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="prefstream")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="PREFSTREAM_CONFIG",
    help="TOML config file (tables [ingest], [ingest.consumer], [quality.gate], ...).",
)
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Stream LLM feedback from Kafka into a DuckLake store, audit it, export preference sets, train.

    \b
    The path, one command a step:
      prefstream broker                 a local Kafka-protocol broker (tansu) for trying it out
      prefstream simulate               realistic thumbs / pairwise telemetry, with planted biases
      prefstream ingest / ingest-file   exactly-once landing into the store (--store DIR or a catalog URL)
      prefstream status / query         what landed, lag per partition, read-only SQL on a snapshot
      prefstream audit                  agreement, annotator reliability, bias, expectations, gate
      prefstream export kto|dpo|...     TRL-column datasets with a lineage manifest
      prefstream train dpo|ipo|kto|...  built-in trainers on torch + transformers
      prefstream generate / judge / compare / round / lineage / runs   the next round
    Run `prefstream demo` for the whole path on this machine.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ctx.obj = load_config(config_path)  # commands read their table with prefstream.config.section
