"""Every console script answers --help without loading the heavy stack, and fails in one line."""

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
    code = "import sys, cmmsf.cli; print('torch' in sys.modules)"
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


def test_what_the_user_can_fix_is_one_red_line_and_a_bug_leaves_a_traceback_file(tmp_path, monkeypatch):
    """A CmmsfError (or the machine's OSError) is the user's to fix: one line, exit 1. Anything else is our
    bug: one line that says so and names a file holding the traceback, never a bare traceback."""
    import cmmsf.runtime.infer as infer

    (tmp_path / "a.txt").write_text("fine")
    missing = CliRunner().invoke(run_app, ["infer", str(tmp_path / "nope"), "--engines", str(tmp_path)])
    assert missing.exit_code == 1 and missing.output.startswith("error: no such file or folder")
    assert "Traceback" not in missing.output

    def broken(*args, **kwargs):
        return {}["a key nobody set"]  # a bug, as a KeyError deep in the runtime would be

    monkeypatch.setattr(infer, "run_infer", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("CMMSF_TRACEBACK", raising=False)
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    result = CliRunner().invoke(run_app, ["infer", str(tmp_path / "a.txt"), "--engines", str(tmp_path)])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert said.startswith("internal error (a bug in cmmsf, not in what you did): KeyError: 'a key nobody set'")
    [report] = tmp_path.glob("cmmsf-bug-*.txt")
    assert report.name in said.replace(" ", "")
    text = report.read_text()
    assert "Traceback (most recent call last)" in text and "a key nobody set" in text and "command:" in text


@pytest.mark.parametrize("app", [export_app, run_app, train_app])
def test_version_is_the_installed_distributions(app):
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"cmmsf {version('cmmsf')}"
