"""``prefstream audit``: exit codes, JSON and HTML outputs, config thresholds, and the HTML seen as a picture."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from prefstream.cli import main
from prefstream.tests.test_quality_audit import ALL_PLANTS, simulated_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def clean_db(tmp_path_factory):
    return simulated_store(tmp_path_factory.mktemp("clean"), n=3000)


@pytest.fixture(scope="module")
def biased_db(tmp_path_factory):
    return simulated_store(tmp_path_factory.mktemp("biased"), n=3000, plant=ALL_PLANTS)


def run(*args, config=None):
    runner = CliRunner()
    prefix = ["--config", str(config)] if config else []
    return runner.invoke(main, [*prefix, "audit", *map(str, args)])


def test_clean_store_passes_with_json_and_html(clean_db, tmp_path):
    result = run("--store", clean_db, "--json", tmp_path / "r.json", "--html", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "gate (all): PASSED"
    assert "annotators flagged: none of 8" in result.stdout and "snapshot " in result.stdout.splitlines()[0]
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"agreement", "annotators", "bias", "expectations", "gate", "report_id"} <= set(report)
    for name in ("length_skew", "length_taste", "position_bias", "label_imbalance"):
        assert isinstance(report["bias"][name]["flagged"], bool)
    assert {"alpha", "alpha_ci", "fleiss_kappa", "n"} <= set(report["agreement"]["pairwise"])
    assert report["report_id"] in result.stdout
    html = (tmp_path / "r.html").read_text()
    assert "Gate passed" in html and html.count("<svg") == 4
    assert "<th class=num>labels</th>" in html  # numeric columns' headers sit over their right-aligned numbers
    assert "<script" not in html and not any(f'{attr}="http' in html for attr in ("src", "href", "xlink:href"))  # self-contained


def test_biased_store_fails_with_exit_1_one_failure_a_line_with_its_remedy(biased_db):
    result = run("--store", biased_db, "--no-store")
    assert result.exit_code == 1
    assert "gate (all): FAILED" in result.stdout and "note: label_imbalance" in result.stdout
    assert "ann-position (low_agreement, position_bias)" in result.stdout or "ann-position (position_bias)" in result.stdout
    failures = [line for line in result.stdout.splitlines() if line.startswith("  - ")]
    assert failures and all(" -- remedy: " in line for line in failures)
    assert any(line.startswith("  - length_skew: ") and "--balance-length" in line for line in failures)
    assert result.stderr.strip().startswith("prefstream: error: quality gate failed for all")
    assert "(not stored)" in result.stdout


def test_the_gate_of_one_export_kind(biased_db):
    dpo = run("--store", biased_db, "--no-store", "--for", "dpo")
    kto = run("--store", biased_db, "--no-store", "--for", "kto")
    assert dpo.exit_code == kto.exit_code == 1
    assert "length_skew" in dpo.stdout.split("gate (dpo)")[1] and "length_skew" not in kto.stdout.split("gate (kto)")[1]
    balanced = run("--store", biased_db, "--no-store", "--for", "dpo", "--balance-length")
    assert "  - length_skew" not in balanced.stdout and "note: length_skew" in balanced.stdout


def test_snapshot_option_reads_as_of_that_snapshot(clean_db, tmp_path):
    first = run("--store", clean_db, "--json", tmp_path / "a.json")
    report = json.loads((tmp_path / "a.json").read_text())
    again = run("--store", clean_db, "--snapshot", report["snapshot"], "--json", tmp_path / "b.json", "--no-store")
    assert first.exit_code == again.exit_code == 0
    other = json.loads((tmp_path / "b.json").read_text())
    assert other["snapshot"] == report["snapshot"] and other["agreement"] == report["agreement"]
    missing = run("--store", clean_db, "--snapshot", 99999, "--no-store")
    assert missing.exit_code == 2 and "snapshot 99999" in missing.stderr


def test_json_to_stdout_keeps_stdout_parseable(clean_db):
    result = run("--store", clean_db, "--json", "-", "--no-store")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["gate"]["passed"] is True
    assert "gate (all): PASSED" in result.stderr


def test_thresholds_come_from_the_config_file(clean_db, tmp_path):
    config = tmp_path / "prefstream.toml"
    config.write_text("[quality]\nbootstrap = 50\n[quality.gate]\nmin_alpha = 0.95\n")
    result = run("--store", clean_db, "--json", tmp_path / "r.json", "--no-store", config=config)
    assert result.exit_code == 1 and "< min_alpha 0.95" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["bootstrap"] == 50 and report["settings"]["gate"]["min_alpha"] == 0.95


@pytest.mark.parametrize(
    "args, config_text, message",
    [
        (["--store", "{missing}"], None, "nope"),
        (["--store", "{db}", "--since", "yesterday"], None, "--since 'yesterday' is not an RFC 3339 timestamp"),
        (["--store", "{db}", "--since", "2026-11-05T00:00:00Z", "--until", "2026-11-01T00:00:00Z"], None, "is not before --until"),
        (["--store", "{db}"], "[quality.gate]\nmin_alfa = 0.5\n", "unknown key(s) min_alfa in [quality.gate]"),
        (["--store", "{db}"], "[quality]\ngate = 3\n", "[quality.gate] must be a table"),
        (["--store", "{db}"], "[quality.gate]\nmax_label_ratio = 'ten'\n", "[quality.gate] max_label_ratio = 'ten' has the wrong type"),
        (["--store", "{db}"], "[quality.gate]\nmin_longer_share = 0.9\n", "[quality.gate] min_longer_share 0.9"),
        (["--store", "{db}", "--json", "{tmp}/no/such/dir/r.json"], None, "cannot write {tmp}/no/such/dir/r.json: its folder does not exist"),
    ],
)
def test_usage_errors_exit_2_with_one_line(clean_db, tmp_path, args, config_text, message):
    config = None
    if config_text:
        config = tmp_path / "c.toml"
        config.write_text(config_text)
    args = [a.format(missing=tmp_path / "nope", db=clean_db, tmp=tmp_path) for a in args]
    message = message.format(tmp=tmp_path)
    result = run(*args, config=config)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("prefstream: error:") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_help_has_an_example():
    result = CliRunner().invoke(main, ["audit", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "--since" in result.output


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (Debian: apt-get install chromium)")
def test_html_report_as_a_picture(biased_db, tmp_path):
    """Render the report of a biased run, screenshot it, and check the verdict is the first thing seen."""
    from PIL import Image

    html = tmp_path / "audit.html"
    assert run("--store", biased_db, "--html", html, "--no-store").exit_code == 1
    png = tmp_path / "audit.png"
    subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1280,2400", html.as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 2400)
    # The red verdict banner (#cf222e) sits in the first screenful, above everything else.
    top = image.crop((0, 0, 1280, 300))
    red = sum(1 for r, g, b in top.getdata() if abs(r - 0xCF) < 12 and abs(g - 0x22) < 12 and abs(b - 0x2E) < 12)
    assert red > 20_000
    # The page is not blank below the fold: plots and tables render (many distinct colours).
    body = image.crop((0, 300, 1280, 2400)).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    assert len(set(body.getdata())) > 8
