"""``prefstream runs list | promote | history``: which run is in production, who approved it, on what evidence."""

from __future__ import annotations

import json

import click

from prefstream.cli.options import open_cli_store, store_options


@click.group()
def runs() -> None:
    """Registered runs, promotions and rollbacks.

    \b
    Example:
      prefstream runs list --store lake
      prefstream runs promote runs/round-3 --store lake --by alice --note "beats round 2"
      prefstream runs promote runs/round-2 --store lake --by alice --note "rollback" --override "incident 42"
    """


@runs.command("list")
@store_options
@click.option("--register", "run_dirs", multiple=True, type=click.Path(file_okay=False), help="Register this run directory first (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_cmd(config, store, data_path, run_dirs, as_json) -> None:
    """Registered runs: status, export and its gate, promotion state, latest comparison.

    \b
    Example:
      prefstream runs list --store lake
      prefstream runs list --store lake --register runs/dpo-1 --json
    """
    from prefstream.promotion import list_runs, read_run, register_run
    from prefstream.quality.compare import rate

    with open_cli_store(config, store, data_path) as opened:
        for run_dir in run_dirs:
            register_run(opened, read_run(run_dir))
        rows = list_runs(opened)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no runs registered; rounds, `compare` and `promote` register the runs they use (or `runs list --register DIR`)")
    for row in rows:
        export = row["export"] or {}
        gate = "forced" if export.get("forced") else "passed" if export.get("gate_passed") else "unknown" if not export.get("found") else "failed"
        cmp = row["comparison"]
        versus = f"; vs {cmp['against']}: win rate {rate(cmp['win_rate'])}, length-controlled {rate(cmp['lc_win_rate'])} ({cmp['judgements']} judgements)" if cmp else ""
        mark = {"current": " [PROMOTED]", "earlier": " [promoted earlier]"}.get(row["promoted"], "")
        click.echo(f"{row['run_id']}{mark}  {row['status']}  {row['kind'] or '?'}  export {export.get('export_id') or '-'} (gate {gate}){versus}")


@runs.command("promote")
@click.argument("run")
@store_options
@click.option("--by", "by", required=True, help="Who approves it.")
@click.option("--note", required=True, help="Why (recorded).")
@click.option("--override", metavar="REASON", help="Promote although its comparison was lost or its export forced.")
@click.pass_obj
def promote_cmd(config, run, store, data_path, by, note, override) -> None:
    """Promote RUN (a run directory or id): record the approval with its evidence.

    Evidence: the gate verdict of the run's export and its comparison against the currently
    promoted run (computed now from the stored judgements). A lost comparison or a forced
    export needs --override REASON. Rolling back is promoting an earlier run; nothing is
    deleted (`runs history`).

    \b
    Example:
      prefstream runs promote runs/round-3 --store lake --by alice --note "LC win rate 0.71 over round 2"
    """
    from prefstream.promotion import promote

    with open_cli_store(config, store, data_path) as opened:
        record = promote(opened, run, by=by, note=note, override=override)
    cmp = record["evidence"]["comparison"]
    versus = f"; against {record['previous_run_id']}: {cmp['verdict']} ({cmp['summary']})" if cmp else ""
    extra = f"; override: {record['override_reason']}" if record["override_reason"] else ""
    rollback = " (rollback)" if record["evidence"]["rollback"] else ""
    click.echo(f"promoted {record['run_id']}{rollback} by {by} as {record['promotion_id']}{versus}{extra}")


@runs.command("history")
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def history_cmd(config, store, data_path, as_json) -> None:
    """Every promotion, oldest first (rollbacks included).

    \b
    Example:
      prefstream runs history --store lake
    """
    from prefstream.promotion import history

    with open_cli_store(config, store, data_path) as opened:
        rows = history(opened)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        extra = f" override: {row['override_reason']}" if row["override_reason"] else ""
        click.echo(f"{row['promoted_at']}  {row['run_id']}  by {row['promoted_by']}: {row['note']}{extra}")
