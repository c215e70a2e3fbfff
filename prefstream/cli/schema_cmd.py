"""``prefstream schema``: the wire format as JSON Schema."""

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, default=True, help="Print the JSON Schema (the default and only format).")
def schema(as_json: bool) -> None:
    """Print the JSON Schema of a feedback event (thumbs or pairwise, schema_version 1).

    \b
    Example:
      prefstream schema --json > prefstream-event.schema.json
    """
    from prefstream.schemas import json_schema

    click.echo(json.dumps(json_schema(), indent=2))
