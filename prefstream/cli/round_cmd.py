"""``prefstream round next | status``: on-policy rounds (export, train, generate, judge, compare)."""

from __future__ import annotations

import json

import click

config_option = click.option("--config", "round_config", required=True, type=click.Path(dir_okay=False), help="round.toml (see `prefstream round --help`).")


@click.group("round")
def round_group() -> None:
    """On-policy rounds: each trains on the feedback since the last one and is judged against it.

    \b
    round.toml (paths relative to the working directory):
      name = "demo"                  # rounds demo-1, demo-2, ...
      store = "lake"
      workdir = "loop"               # per round: export/, run/, requests.jsonl, judged.jsonl
      base_model = "models/tiny"     # round 0
      reference = "previous"         # or "original" (with LoRA: train.lora_r > 0)
      [export]                       # export settings: kind, balance_length, force, force_reason, ...
      kind = "dpo"
      [train]                        # training settings: lr, max_steps, beta, lora_r, ...
      lr = 5e-4
      [generate]                     # prompts = "export-test" | "store" | FILE.jsonl; max_prompts, k, temperature, ...
      k = 2
      [judge]                        # optional; without it the round waits for people's judgements
      command = "python judge.py"
      [requests]                     # optional: also produce the requests to Kafka
      topic = "requests"

    \b
    Example:
      prefstream round next --config round.toml
      prefstream round status --config round.toml
    """


@round_group.command("next")
@config_option
@click.pass_obj
def next_cmd(config, round_config) -> None:
    """Run the next round: export (gated), train from the previous policy, generate requests
    against it, and with a [judge] command judge, land and compare.

    \b
    Example:
      prefstream round next --config round.toml
    """
    from prefstream.config import section
    from prefstream.rounds import RoundConfig, next_round

    record = next_round(RoundConfig.load(round_config), quality_config=section(config or {}, "quality"), say=click.echo)
    if record["state"] == "requested":
        click.echo(f"round {record['number']} ({record['round_id']}) awaits judgements on {record['requests']['count']} requests in "
                   f"{record['requests']['path']}; `prefstream round status --config {round_config}` counts the answers")  # fmt: skip
    else:
        click.echo(f"round {record['number']} ({record['round_id']}) {record['state']}")


@round_group.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_cmd(round_config, as_json) -> None:
    """Each round's state, its export, run and comparison, and the judgements still awaited.

    \b
    Example:
      prefstream round status --config round.toml --json
    """
    from prefstream.quality.compare import rate
    from prefstream.rounds import RoundConfig, status
    from prefstream.store import StoreLocation, open_store

    config = RoundConfig.load(round_config)
    with open_store(StoreLocation(config.store, config.data_path), create=False) as store:
        rows = status(store, config.name)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo(f"no rounds of {config.name} yet; run `prefstream round next --config {round_config}`")
    for r in rows:
        line = f"round {r['number']} {r['round_id']}: {r['state']}; export {(r.get('export') or {}).get('export_id', '-')}, run {(r.get('run') or {}).get('run_id', '-')}"
        if r.get("requests"):
            line += f"; requests {r['requests']['count']}, answered {r['answered']}, awaited {r['awaited']}"
        if r.get("comparison"):
            c = r["comparison"]
            line += f"; win rate {c['win_rate']:.3f} [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}], length-controlled {rate(c['lc_win_rate'])}"
        if r.get("error"):
            line += f"; error: {r['error']}"
        click.echo(line)
