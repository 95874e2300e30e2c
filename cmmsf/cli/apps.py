"""The three Typer apps, `cmmsf-export`, `cmmsf-run` and `cmmsf-train`, and their one shared option."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import EXIT_CODES_HELP
from .help_format import use_plain_help

use_plain_help()

export_app = typer.Typer(help="Export a CM-MSF checkpoint per stage to ONNX and TensorRT. " + EXIT_CODES_HELP,
                         no_args_is_help=True)
run_app = typer.Typer(help="Run exported CM-MSF engines: batch, streaming, serving, benchmarks, evaluation. "
                      + EXIT_CODES_HELP, no_args_is_help=True)
train_app = typer.Typer(help="Train and evaluate CM-MSF checkpoints. " + EXIT_CODES_HELP, no_args_is_help=True)


def _print_version(asked: bool) -> None:
    if asked:
        from cmmsf import __version__

        typer.echo(f"cmmsf {__version__}")
        raise typer.Exit()


def _version_option(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="print the version and exit")] = False,
) -> None:
    """The apps' one shared option: --version (eager, so it works without a command)."""


for _app in (export_app, run_app, train_app):
    _app.callback()(_version_option)
