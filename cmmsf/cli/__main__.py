"""`python -m cmmsf.cli COMMAND …` is `cmmsf-run COMMAND …` (how tests and scripts start a server or a run
in a child process with this very interpreter)."""

from cmmsf.cli import run_app

run_app(prog_name="cmmsf-run")
