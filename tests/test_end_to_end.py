"""The whole path through the CLI: simulate -> ingest-file -> audit -> export (gate) -> train -> final/.

The simulator's good answers ("Sure! To ...") and bad ones ("Sorry, ...") differ in a
pattern a tiny model can learn, and their lengths are independent of quality, so the
held-out reward accuracy should climb from chance to near 1 for every trainer.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from prefstream.cli import main
from prefstream.tests.train_helpers import shared_tiny_model


@pytest.fixture(scope="module")
def audited_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    runner = CliRunner()
    events, store = folder / "events.jsonl", folder / "store"
    for args in (
        ["simulate", "--n", "1800", "--seed", "21", "--chat-share", "0.3", "--out", str(events)],
        ["ingest-file", str(events), "--store", str(store)],
        ["audit", "--store", str(store)],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (args, result.output)
    return folder, store


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dpo", "ipo", "kto"])
def test_simulated_feedback_trains_a_model_that_prefers_the_good_answers(audited_store, tmp_path_factory, kind):
    folder, store = audited_store
    model = shared_tiny_model(tmp_path_factory)
    export_dir, run_dir = folder / f"export-{kind}", folder / f"run-{kind}"
    runner = CliRunner()
    exported = runner.invoke(main, ["export", kind, "--store", str(store), "--out", str(export_dir), "--eval-fraction", "0.2"])
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert manifest["quality"]["passed"] is True and manifest["prompt_format"] == "conversational"

    trained = runner.invoke(main, [
        "train", kind, "--data", str(export_dir), "--model", str(model), "--out", str(run_dir),
        "--lr", "5e-4", "--batch-size", "16", "--max-steps", "40", "--eval-every", "20", "--max-length", "160",
        "--eval-generations", "2", "--max-new-tokens", "8", "--cache-dir", str(folder / "cache"),
    ])
    assert trained.exit_code == 0, trained.output
    evals = [m for m in metrics(run_dir) if "eval/rewards/accuracies" in m]
    assert evals[0]["step"] == 0 and abs(evals[0]["eval/rewards/accuracies"] - 0.5) < 0.15
    assert evals[-1]["eval/rewards/accuracies"] >= 0.9
    record = json.loads((run_dir / "run.json").read_text())
    assert record["export"]["content_hash"] == manifest["content_hash"]
    assert (run_dir / "final" / "config.json").exists()
