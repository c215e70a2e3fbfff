"""``prefstream audit``: exit codes, JSON and HTML outputs, config thresholds, and the HTML seen as a picture."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from prefstream.cli import main
from prefstream.tests.test_quality_audit import ALL_PLANTS, simulated_db

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def clean_db(tmp_path_factory):
    return simulated_db(tmp_path_factory.mktemp("clean"), n=3000)


@pytest.fixture(scope="module")
def biased_db(tmp_path_factory):
    return simulated_db(tmp_path_factory.mktemp("biased"), n=3000, plant=ALL_PLANTS)


def run(*args, config=None):
    runner = CliRunner()
    prefix = ["--config", str(config)] if config else []
    return runner.invoke(main, [*prefix, "audit", *map(str, args)])


def test_clean_store_passes_with_json_and_html(clean_db, tmp_path):
    result = run("--db", clean_db, "--json", tmp_path / "r.json", "--html", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "gate: PASSED"
    assert "annotators flagged: none of 8" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"agreement", "annotators", "bias", "expectations", "gate", "report_id"} <= set(report)
    for name in ("length_bias", "position_bias", "label_imbalance"):
        assert isinstance(report["bias"][name]["flagged"], bool)
    assert {"alpha", "alpha_ci", "fleiss_kappa", "n"} <= set(report["agreement"]["pairwise"])
    assert report["report_id"] in result.stdout
    html = (tmp_path / "r.html").read_text()
    assert "Gate passed" in html and html.count("<svg") == 4
    assert "<script" not in html and not any(f'{attr}="http' in html for attr in ("src", "href", "xlink:href"))  # self-contained


def test_biased_store_fails_with_exit_1_and_says_why(biased_db):
    result = run("--db", biased_db, "--no-store")
    assert result.exit_code == 1
    assert "gate: FAILED" in result.stdout and "label imbalance" in result.stdout
    assert "ann-position (low_agreement, position_bias)" in result.stdout or "ann-position (position_bias)" in result.stdout
    assert result.stderr.strip().startswith("prefstream: error: quality gate failed")
    assert "(not stored)" in result.stdout


def test_json_to_stdout_keeps_stdout_parseable(clean_db):
    result = run("--db", clean_db, "--json", "-", "--no-store")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["gate"]["passed"] is True
    assert "gate: PASSED" in result.stderr


def test_thresholds_come_from_the_config_file(clean_db, tmp_path):
    config = tmp_path / "prefstream.toml"
    config.write_text("[quality]\nbootstrap = 50\n[quality.gate]\nmin_alpha = 0.95\n")
    result = run("--db", clean_db, "--json", tmp_path / "r.json", "--no-store", config=config)
    assert result.exit_code == 1 and "< min_alpha 0.95" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["bootstrap"] == 50 and report["settings"]["gate"]["min_alpha"] == 0.95


@pytest.mark.parametrize(
    "args, config_text, message",
    [
        (["--db", "{missing}"], None, "does not exist; land feedback first"),
        (["--db", "{db}", "--since", "yesterday"], None, "--since 'yesterday' is not an RFC 3339 timestamp"),
        (["--db", "{db}", "--since", "2026-11-05T00:00:00Z", "--until", "2026-11-01T00:00:00Z"], None, "is not before --until"),
        (["--db", "{db}"], "[quality.gate]\nmin_alfa = 0.5\n", "unknown key(s) min_alfa in [quality.gate]"),
        (["--db", "{db}", "--json", "{tmp}/no/such/dir/r.json"], None, "cannot write"),
    ],
)
def test_usage_errors_exit_2_with_one_line(clean_db, tmp_path, args, config_text, message):
    config = None
    if config_text:
        config = tmp_path / "c.toml"
        config.write_text(config_text)
    args = [a.format(missing=tmp_path / "nope.duckdb", db=clean_db, tmp=tmp_path) for a in args]
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
    assert run("--db", biased_db, "--html", html, "--no-store").exit_code == 1
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
