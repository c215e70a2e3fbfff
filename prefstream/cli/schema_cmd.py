"""``prefstream schema``: the wire format as JSON Schema."""

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, default=True, help="Print the JSON Schema (the default and only format).")
@click.option("--requests", "requests", is_flag=True, help="The comparison-request schema (`prefstream generate` output) instead.")
def schema(as_json: bool, requests: bool) -> None:
    """Print the JSON Schema of a feedback event (thumbs or pairwise, schema_version 1), or of a comparison request.

    \b
    Example:
      prefstream schema --json > prefstream-event.schema.json
      prefstream schema --requests > prefstream-request.schema.json
    """
    from prefstream.schemas import json_schema, request_json_schema

    click.echo(json.dumps(request_json_schema() if requests else json_schema(), indent=2))
