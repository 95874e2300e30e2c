"""The shipped checkpoint's engines, built on first use into the user's cache and rebuilt when stale, then
tuned on this machine (export/tune.py) so `--backend auto` runs each stage on the fastest engine here.

They live in a per-user cache folder keyed by the checkpoint's hash (platformdirs' user cache, or
`$CMMSF_CACHE_DIR`), never in the working folder: `cd ~/videos && cmmsf-run infer .` writes nothing there
but its results. Checking is torch-free (EngineFolder); only a (re)build imports the exporter and torch,
and a build publishes its folder only once it is complete (export/build.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rich.console import Console

from cmmsf.config import DEFAULT_CHECKPOINT
from cmmsf.inputs.errors import CmmsfError
from cmmsf.runtime.engine_folder import EngineFolder, ManifestError
from cmmsf.runtime.locations import default_engines_dir


class DefaultEnginesError(CmmsfError, RuntimeError):
    """The default engines are missing or stale and cannot be exported here."""


def stale_reason(path: Path) -> str | None:
    """Why `path` does not hold engines of the checkpoint shipped now, or None when it does."""
    try:
        engines = EngineFolder.open(path)
    except ManifestError as err:
        return str(err)
    return None if engines.built_from(DEFAULT_CHECKPOINT) else "built from another checkpoint than the shipped one"


def ensure_default_engines(console: Console, path: Path | None = None) -> Path:
    """The default engine folder (or `path`), exported from the shipped checkpoint first when missing or
    stale."""
    path = path or default_engines_dir()
    reason = stale_reason(path)
    if reason is not None:
        if importlib.util.find_spec("torch") is None:
            raise DefaultEnginesError(f"no current engines at {path} ({reason.split(';')[0]}), and exporting them "
                                      "needs torch, which the base (runtime) install leaves out: pass --engines DIR "
                                      "(an engine folder built elsewhere), or pip install 'cmmsf[export]'")
        console.print(f"first run: exporting the shipped checkpoint to {path} (once; 1-2 min on 2 CPU "
                      "cores)…", highlight=False)
        from .build import BuildOptions, build

        build(BuildOptions(checkpoint="default", out=path, force=True), console)
        tune_here(path, console)
    return path


def tune_here(path: Path, console: Console) -> None:
    """Measure the fastest engine per stage on this machine, so `auto` runs it from the first run on.
    Reduced precision is allowed only by the guard's verdicts shipped with the checkpoint (no dev data
    here); a tuning that cannot run leaves `auto` on its untuned choice, said in one line."""
    from .tune import TuneOptions, tune

    console.print("first run: timing each stage on every engine here, to run each on the fastest (once)…",
                  highlight=False)
    try:
        tuning = tune(TuneOptions(folder=path, runs=9, rounds=3), Console(quiet=True))
        winners = ", ".join(f"{stage} {t.backend} {t.precision}" for stage, t in tuning.winners().items())
        console.print(f"tuned: {winners} (`cmmsf-export tune {path}` prints the table)", highlight=False)
    except CmmsfError as err:
        console.print(f"[yellow]not tuned ({err}); `auto` runs the first backend that can run the folder[/]",
                      highlight=False)
