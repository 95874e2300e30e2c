"""Write docs/cli.md, the command reference, from the Typer apps themselves (so it cannot drift):

    python scripts/cli_reference.py            # rewrite docs/cli.md
    python scripts/cli_reference.py --check    # exit 1 when docs/cli.md is out of date (tests/test_docs.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from typing import Any

import typer

from cmmsf.cli import export_app, run_app, train_app
from cmmsf.cli.common import EXIT_CODES_HELP

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
APPS = (("cmmsf-export", export_app), ("cmmsf-run", run_app), ("cmmsf-train", train_app))


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _is_flag(param: Any) -> bool:
    return bool(getattr(param, "is_flag", False))


def _default(param: Any) -> str:
    if param.required or param.default in (None, [], (), "") or callable(param.default):
        return ""
    if _is_flag(param):
        return f"`{(param.opts if param.default else param.secondary_opts)[0]}`" if param.secondary_opts else ""
    return f"`{param.default}`"


def _name(param: Any) -> str:
    if param.param_type_name == "argument":
        return f"`{param.metavar or param.name.upper()}`"
    names = "/".join(param.opts + param.secondary_opts)
    value = "" if _is_flag(param) else f" {param.metavar or param.name.upper()}"
    return f"`{names}{value}`"


def command_section(prog: str, name: str, command: Any) -> list[str]:
    lines = [f"### `{prog} {name}`", "", _cell((command.help or "").split("\n\n")[0]), ""]
    rest = (command.help or "").split("\n\n")[1:]
    if rest:
        lines += [" ".join(" ".join(rest).split()), ""]
    lines += ["| option | default | what it does |", "|---|---|---|"]
    for param in command.params:
        if param.name == "help":
            continue
        lines.append(f"| {_name(param)} | {_default(param)} | {_cell(getattr(param, 'help', '') or '')} |")
    return lines + [""]


def reference() -> str:
    lines = ["# Command reference", "",
             "Generated from the commands themselves by `python scripts/cli_reference.py`; do not edit by hand "
             "(`tests/test_docs.py` fails when it is out of date). How the commands behave is in "
             "[guide.md](guide.md).", "", EXIT_CODES_HELP, ""]
    for prog, app in APPS:
        group = typer.main.get_command(app)
        lines += [f"## `{prog}`", "", _cell(group.help or ""), ""]
        for name, command in sorted(group.commands.items()):
            lines += command_section(prog, name, command)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/cli.md is out of date")
    args = parser.parse_args()
    text = reference()
    if args.check:
        current = DOC.read_text() if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is out of date: run python scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
