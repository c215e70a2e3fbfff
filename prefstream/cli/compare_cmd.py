"""``prefstream compare``: the win rate of one model over another, raw and length-controlled."""

from __future__ import annotations

import json
from pathlib import Path

import click

from prefstream.cli.options import open_cli_store, store_options


@click.command()
@click.option("--model-a", required=True, help="Baseline: a run directory, a run id, a model directory or a model id.")
@click.option("--model-b", required=True, help="Challenger, in the same forms; the win rate is B's.")
@store_options
@click.option("--bootstrap-samples", "n_boot", type=click.IntRange(min=100), default=2000, show_default=True, help="Resamples for the win rate's interval.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Also write an HTML page with the comparison table.")
@click.pass_obj
def compare(config, model_a, model_b, store, data_path, n_boot, seed, as_json, html_path) -> None:
    """Win rate of B over A from the pairwise judgements that pit them against each other.

    Ties count half. The length-controlled win rate is AlpacaEval 2's GLM: a logistic
    regression of "B won" on tanh of the standardised length difference, predicted at equal
    length, with its standard error. Figures per annotator kind (user, expert, model) and
    overall. The result is stored (table `comparisons`), with the snapshot it read.

    \b
    Example:
      prefstream compare --store lake --model-a runs/round-0 --model-b runs/round-3
      prefstream compare --store lake --model-a gpt-4o --model-b runs/dpo-1 --json
    """
    from prefstream.promotion import compare_and_record, model_id
    from prefstream.quality.compare import html_section, summary_lines

    with open_cli_store(config, store, data_path) as opened:
        result = compare_and_record(opened, model_id(opened, model_a), model_id(opened, model_b), n_boot=n_boot, seed=seed)
    if html_path:
        page = f"<!doctype html><html lang=en><head><meta charset=utf-8><title>prefstream compare</title></head><body>{html_section(result)}</body></html>"
        Path(html_path).write_text(page, encoding="utf-8")
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for line in summary_lines(result):
            click.echo(line)
        click.echo(f"recorded as {result['comparison_id']} (snapshot {result['snapshot']})")
