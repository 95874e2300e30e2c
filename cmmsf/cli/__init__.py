"""The commands: `cmmsf-export`, `cmmsf-run` and `cmmsf-train` (pyproject's entry points).

Thin: each command parses, builds its settings (options.py), calls one function of export/, runtime/ or
the model package, and prints. Heavy imports happen inside each command, so `--help` is instant and
`cmmsf-run` never loads torch unless the torch backend is asked for. Known failures print one red line,
never a traceback (common.py).
"""

from .apps import export_app, run_app, train_app
from .export_commands import export_build  # noqa: F401  (importing each module registers its commands)
from .run_commands import run_infer  # noqa: F401
from .train_commands import train_fit  # noqa: F401
from .common import ExitCode, console, err_console, friendly

__all__ = ["ExitCode", "console", "err_console", "export_app", "friendly", "run_app", "train_app"]
