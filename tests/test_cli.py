"""Every command is reachable, documented with an example, and cheap to ask for help."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from prefstream.cli import COMMANDS, main


def test_top_level_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_an_example(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`prefstream {name} --help` shows no example"


def test_help_does_not_import_torch_or_great_expectations():
    code = "import sys; from prefstream.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules, 'great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"
