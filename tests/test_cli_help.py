"""Every console script answers --help without loading the heavy stack."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cmmsf.cli import export_app, run_app, train_app


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


@pytest.mark.parametrize("args,code,says", [
    (["infer", "clips", "--no-such-option"], 2, "No such option"),  # Click's usage error
    (["bench", "--batch", "1,x"], 2, "usage error: --batch wants comma-separated integers"),
    (["infer", "/no/such/clips", "--engines", "/no/such/engines"], 1, "error:"),
])
def test_exit_codes_tell_called_wrongly_from_failed(args, code, says):
    result = CliRunner().invoke(run_app, args)
    assert result.exit_code == code, result.output
    assert says in " ".join(result.output.split()) and "Traceback" not in result.output


def test_help_names_the_exit_codes():
    text = " ".join(CliRunner().invoke(run_app, ["--help"]).output.split())
    assert "3 some clips failed" in text and "2 called wrongly" in text and "130 interrupted" in text
