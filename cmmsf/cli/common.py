"""What every command shares: the consoles, the exit codes, one red line per known failure.

Exit codes (`ExitCode`, also in every `--help` and docs/cli.md) mean one thing each: 0 done; 1 the command
failed (input, engines, output or disk: the red line says which); 2 called wrongly (a mistyped or unusable
option: Click's own code, and `UsageError`'s); 3 `infer` finished but some clips failed (their error lines
are in the results); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from enum import IntEnum
from pathlib import Path
from typing import Callable

import click
import typer
from rich.console import Console
from rich.markup import escape

from cmmsf.inputs.errors import CmmsfError, Terminated, UsageError

# Tables stay readable when output is piped or logged (rich would fall back to 80 columns).
console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    """Click exits 2 on a mistyped option; an unusable value (`UsageError`) gets the same code."""
    SOME_CLIPS_FAILED = 3
    INTERRUPTED = 130
    TERMINATED = 143


EXIT_CODES_HELP = ("Exit codes: 0 done, 1 failed (the red line says why), 2 called wrongly (an option), "
                   "3 some clips failed (their errors are in the results), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).")

EXTRA_OF = {"torch": "export", "transformers": "export", "safetensors": "export", "onnxconverter_common": "export",
            "pytriton": "serve", "tritonclient": "serve", "ray": "ray", "pyarrow": "ray"}
"""Which extra brings a module the base install leaves out (pyproject.toml)."""


def friendly(command: Callable) -> Callable:
    """One red line for what the user can fix, a report for what only we can.

    Exit 1 (2 for an unusable option value) with `error: <message>` for a `CmmsfError` (our own words:
    bad input, a missing file, tampered artifacts, a bad config field) and for an `OSError` (the machine's:
    a path, a permission, a full disk). Anything else is a bug in this package: its traceback goes to a
    file, and the red line says so and where (CMMSF_TRACEBACK=1 shows it in place)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        previous = None
        if threading.current_thread() is threading.main_thread():  # SIGTERM stops a command as Ctrl-C does
            previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt as err:
            code = ExitCode.TERMINATED if isinstance(err, Terminated) else ExitCode.INTERRUPTED
            err_console.print("[yellow]terminated[/]" if code == ExitCode.TERMINATED else "[yellow]interrupted[/]")
            live = sys.modules.get("cmmsf.inputs.live")
            if live is not None and live.readers_still_running():
                # a reader blocked inside FFmpeg would crash the interpreter's shutdown; every finally
                # (results, sessions) has run by now, so flush and leave at once
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            raise typer.Exit(code) from None
        except ModuleNotFoundError as err:
            extra = EXTRA_OF.get((err.name or "").split(".")[0])
            if extra is None:
                raise
            err_console.print(f"[red]error:[/] this needs {err.name}, which the base (runtime) install leaves out: "
                              + escape(f"pip install 'cmmsf[{extra}]'"), highlight=False)
            raise typer.Exit(ExitCode.FAILED) from None
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException, click.Abort):
            raise  # the command's own exit code, or Click's usage error
        except UsageError as err:
            err_console.print(f"[red]usage error:[/] {escape(str(err))}", highlight=False)
            raise typer.Exit(ExitCode.USAGE) from None
        except CmmsfError as err:
            err_console.print(f"[red]error:[/] {escape(str(err))}", highlight=False)
            raise typer.Exit(ExitCode.FAILED) from None
        except OSError as err:
            message = f"{err.filename or ''}{': ' if err.filename else ''}{err.strerror}" if err.strerror else str(err)
            err_console.print(f"[red]error:[/] {escape(message)}", highlight=False)
            raise typer.Exit(ExitCode.FAILED) from None
        except Exception as err:  # noqa: BLE001 - a bug: keep its traceback, say where
            if os.environ.get("CMMSF_TRACEBACK"):
                raise
            report = write_bug_report(err)
            err_console.print(f"[red]internal error (a bug in cmmsf, not in what you did):[/] "
                              f"{escape(type(err).__name__)}: {escape(str(err)[:300])}. The traceback is in "
                              f"{escape(str(report))}; please report it with that file", highlight=False)
            raise typer.Exit(ExitCode.FAILED) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def write_bug_report(err: BaseException) -> Path:
    """The traceback of an unexpected exception, with the command line and versions, in a fresh file of
    the temporary folder."""
    import platform
    import tempfile
    import traceback

    from cmmsf import __version__

    fd, name = tempfile.mkstemp(prefix="cmmsf-bug-", suffix=".txt")
    with os.fdopen(fd, "w") as report:
        report.write(f"cmmsf {__version__}, Python {platform.python_version()}, {platform.platform()}\n")
        report.write("command: " + " ".join(sys.argv) + "\n\n")
        report.write("".join(traceback.format_exception(err)))
    return Path(name)


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def positive_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in split_list(text)]
    except ValueError:
        raise UsageError(f"{option} wants comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"{option} wants positive integers, got {text!r}")
    return values

