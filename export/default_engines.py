"""engines/default: the shipped checkpoint's engines, built on first use and rebuilt when they are stale.

Checking is torch-free (EngineFolder); only a (re)build imports the exporter and torch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rich.console import Console

from cmmsf.config import DEFAULT_CHECKPOINT
from cmmsf.inputs.errors import CmmsfError
from cmmsf.runtime.engine_folder import EngineFolder, ManifestError

DEFAULT_ENGINES = Path("engines/default")


class DefaultEnginesError(CmmsfError, RuntimeError):
    """engines/default is missing or stale and cannot be exported here."""


def stale_reason(path: Path) -> str | None:
    """Why `path` does not hold engines of the checkpoint shipped now, or None when it does."""
    try:
        engines = EngineFolder.open(path)
    except ManifestError as err:
        return str(err)
    return None if engines.built_from(DEFAULT_CHECKPOINT) else "built from another checkpoint than the shipped one"


def ensure_default_engines(console: Console, path: Path = DEFAULT_ENGINES) -> Path:
    """`path`, exported from the shipped checkpoint first when missing or stale."""
    reason = stale_reason(path)
    if reason is not None:
        if importlib.util.find_spec("torch") is None:
            raise DefaultEnginesError(f"no current engines at {path} ({reason.split(';')[0]}), and exporting them "
                                      "needs torch, which the base (runtime) install leaves out: pass --engines DIR "
                                      "(an engine folder built elsewhere), or pip install 'cmmsf[export]'")
        console.print(f"no current engines at {path} ({reason.split(';')[0]}): exporting the shipped "
                      "checkpoint (about 30 s)…", highlight=False)
        from .build import BuildOptions, build

        build(BuildOptions(checkpoint="default", out=path, force=True), console)
    return path
