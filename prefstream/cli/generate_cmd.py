"""``prefstream generate``: candidates from a model, paired into comparison requests."""

from __future__ import annotations

from pathlib import Path

import click

from prefstream.errors import PrefstreamError


@click.command()
@click.option("--model", required=True, help="B: a run directory (its final/ model; model_id = the run id) or a local model directory.")
@click.option("--baseline", help="A: a second run or model; each request pits one of its candidates against one of --model's. "
              "Without it, requests pair two candidates of --model.")  # fmt: skip
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False), help="Prompts from a JSONL file (a JSON string, message list or {\"prompt\": ...} a line).")
@click.option("--from-export", type=click.Path(file_okay=False), help="Prompts from an export's test split (held out from its training).")
@click.option("--store", help="Prompts from the store's production feedback (thumbs and pairwise) in --since / --until; requests are also recorded there.")
@click.option("--data-path", help="With a ducklake: catalog URL as --store: where its data files live.")
@click.option("--since", help="With --store: prompts of feedback with ts >= this RFC 3339 time.")
@click.option("--until", help="With --store: prompts of feedback with ts < this time.")
@click.option("--max-prompts", type=click.IntRange(min=1), default=64, show_default=True, help="At most this many prompts.")
@click.option("-k", "--k", "k", type=click.IntRange(min=1), default=2, show_default=True, help="Candidates per prompt per model.")
@click.option("--temperature", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Fixes every candidate's draw (and the order requests are shown in).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Rows per generate call (results do not depend on it).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Default: cuda when available.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the requests to this new JSONL file.")
@click.option("--topic", help="Produce the requests to this Kafka topic.")
@click.option("--bootstrap", default="127.0.0.1:9092", show_default=True, help="Kafka bootstrap servers for --topic.")
@click.pass_obj
def generate(config, model, baseline, prompts_file, from_export, store, data_path, since, until, max_prompts, k, temperature, top_p,
             max_new_tokens, seed, batch_size, device, out, topic, bootstrap) -> None:  # fmt: skip
    """Sample K responses per prompt and emit comparison requests (schema: `prefstream schema --requests`).

    Each candidate has a stable candidate_id and the model_id of the run that made it; each
    request has a request_id and the order to show its two candidates in (random, recorded).
    Pairs with an empty text, a NUL character or the same two texts are skipped.

    \b
    Example:
      prefstream generate --model runs/dpo-2 --baseline runs/dpo-1 --from-export exports/dpo-2 --out requests.jsonl
      prefstream generate --model runs/dpo-2 --store lake --since 2026-11-01T00:00:00Z -k 4 --topic requests
    """
    from prefstream.judge import send
    from prefstream.rounds import model_id_for, pair_requests, policy_dir, prompts_from_export, prompts_from_file, prompts_from_store

    if sum(x is not None for x in (prompts_file, from_export, store)) != 1:
        raise PrefstreamError("give one prompt source: --prompts FILE, --from-export DIR or --store STORE")
    if not out and not topic:
        raise PrefstreamError("give a destination: --out FILE and / or --topic TOPIC")
    if out and Path(out).exists():  # refused before generating, not after
        raise PrefstreamError(f"{out} exists; choose another --out")
    if baseline is None and k < 2:
        raise PrefstreamError("pairing candidates of one model needs -k 2 or more (or give --baseline)")
    opened = None
    if store:
        from prefstream.cli.options import open_cli_store

        opened = open_cli_store(config, store, data_path)
    try:
        if prompts_file:
            prompts = prompts_from_file(prompts_file)
        elif from_export:
            prompts = prompts_from_export(from_export)
        else:
            prompts = prompts_from_store(opened, since=since, until=until, limit=max_prompts)
        prompts = prompts[:max_prompts]
        if not prompts:
            raise PrefstreamError("no prompts found in the given source")
        sampling = dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, device=device)
        from prefstream.train.generate import generate_candidates

        candidates = generate_candidates(policy_dir(model), prompts, k, model_id=model_id_for(opened, model), **sampling)
        if baseline:  # the same seed for both: common random numbers make the comparison sharper
            base = generate_candidates(policy_dir(baseline), prompts, k, model_id=model_id_for(opened, baseline), **sampling)
            requests, skipped = pair_requests(base, candidates, seed=seed)
        else:
            requests, skipped = pair_requests(candidates, seed=seed)
        if not requests:
            raise PrefstreamError(f"every candidate pair was skipped (empty, NUL or identical: {skipped}); raise --temperature or --max-new-tokens")
        where = send(requests, out=Path(out) if out else None, topic=topic, bootstrap=bootstrap)
        if opened is not None:
            from prefstream.rounds import record_requests

            record_requests(opened, requests)
    finally:
        if opened is not None:
            opened.close()
    click.echo(f"{len(requests)} comparison requests from {len(prompts)} prompts ({skipped} pairs skipped: empty, NUL or identical) to {where}")
