"""Run the commands from a checkout without installing: `python cli.py run infer clips/`.

The commands themselves live in the `cmmsf.cli` package, so an install puts no module named `cli` into
site-packages (README, "What is installed"); the installed entry points are `cmmsf-export`,
`cmmsf-run` and `cmmsf-train`.
"""

import sys

from cmmsf.cli import export_app, run_app, train_app

APPS = {"export": export_app, "run": run_app, "train": train_app}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in APPS:
        sys.exit(f"usage: python cli.py {{{','.join(APPS)}}} COMMAND [OPTIONS]  (the same as cmmsf-export, "
                 "cmmsf-run and cmmsf-train)")
    name = sys.argv.pop(1)
    APPS[name](prog_name=f"cmmsf-{name}")
