"""Every console script answers --help without loading the heavy stack."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli import export_app, run_app, train_app


@pytest.mark.parametrize("app,commands", [(export_app, ["build", "check", "inspect"]),
                                          (run_app, ["infer", "stream", "bench", "eval"]),
                                          (train_app, ["fit", "eval"])])
def test_help_lists_every_command(app, commands):
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in commands:
        assert command in result.output
        assert CliRunner().invoke(app, [command, "--help"]).exit_code == 0


def test_cli_import_does_not_load_torch():
    code = "import sys, cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
