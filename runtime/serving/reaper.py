"""Whatever kills `cmmsf-run serve` (kill -9, the OOM killer), its children and files go with it.

`Housekeeping` starts this small process beside the server (`python -m cmmsf.runtime.serving.reaper`, in
a session of its own, so the terminal's Ctrl-C and a kill of the server's process group miss it). It
waits for its parent to go; if the parent stopped cleanly, the parent stopped this process first and
nothing happens. Otherwise it does what the parent's clean stop would have: it stops every process that
carries the run's mark in its environment (tritonserver, the Python stubs, their helpers: each inherits
it), removes the run's shared memory and its folder. A start of `serve` does the same for a predecessor
whose reaper died with it (`clean_predecessors`).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from .processes import SHM, alive, mapped_shm, stop_processes

MARK_VARIABLE = "CMMSF_SERVE_RUN"
"""Set in the server's environment before any child starts: every descendant inherits it."""
FOLDER_PREFIX = "cmmsf-serve-"
"""A run's folder: `<tmp>/cmmsf-serve-<pid>-<random>`, holding `mark`, PyTriton's workspace, Triton's log."""
POLL_S = 0.25


def marked_processes(mark: str) -> list[int]:
    """Live processes whose environment carries `MARK_VARIABLE=mark` (this one excepted)."""
    needle = f"{MARK_VARIABLE}={mark}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        pid = int(environ.parent.name)
        if pid == os.getpid():
            continue
        try:
            if needle in environ.read_bytes().split(b"\0"):
                found.append(pid)
        except OSError:
            continue
    return found


def clean_after(pid: int, folder: Path, started: float) -> None:
    """Stop the run's processes and remove its shared memory and folder (run `pid` is gone)."""
    try:
        mark = (folder / "mark").read_text().strip()
    except OSError:
        mark = ""
    if mark:
        stop_processes(marked_processes(mark))
    remove_shared_memory(pid, started)
    shutil.rmtree(folder, ignore_errors=True)


def remove_shared_memory(pid: int, started: float) -> None:
    """The run's /dev/shm segments that no live process maps: PyTriton's (named after the server's pid) and
    the `psm_` ones made since it started (Python's shared memory, which PyTriton's tensor store uses)."""
    if not SHM.is_dir():
        return
    in_use = mapped_shm()
    for name in os.listdir(SHM):
        path = SHM / name
        if name in in_use:
            continue
        if name.startswith(f"pytrtion{pid}-") or (name.startswith("psm_") and _created_since(path, started)):
            path.unlink(missing_ok=True)


def _created_since(path: Path, started: float) -> bool:
    try:
        return path.stat().st_ctime >= started
    except OSError:
        return False


def run_folder_pid(folder: Path) -> int | None:
    """The server pid a run folder is named after."""
    parts = folder.name[len(FOLDER_PREFIX):].split("-", 1)
    return int(parts[0]) if parts and parts[0].isdigit() else None


def clean_predecessors() -> list[Path]:
    """Clean up after every earlier run whose server is gone and whose reaper did not (both killed at
    once: `docker kill`, a killed process group); returns their folders."""
    cleaned = []
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*-*"):
        pid = run_folder_pid(folder)
        if pid is None or alive(pid) or not folder.is_dir():
            continue
        clean_after(pid, folder, started=folder.stat().st_mtime)
        cleaned.append(folder)
    return cleaned


def main(argv: list[str]) -> int:
    parent, folder, started = int(argv[1]), Path(argv[2]), float(argv[3])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the server's to handle; it stops us itself
    while os.getppid() == parent:
        time.sleep(POLL_S)
    clean_after(parent, folder, started)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
