"""What `cmmsf-run serve` owns besides the models: its child processes, its files and how it stops.

PyTriton starts `tritonserver`, which starts one Python-backend stub per model; they talk through
`/dev/shm` segments, and Triton writes each model's config into a `/tmp/folderXXXXXX`. A server that
is killed, or stopped under load, used to leave all of that behind. Here:

- `Housekeeping` gives the run a folder of its own (Triton's default log, PyTriton's workspace and model
  store), marks the environment every child inherits, makes this process the subreaper of its
  descendants (so an orphaned stub is still ours), and on exit stops every descendant still alive and
  removes what the run created and nothing else uses: its `/dev/shm` segments and its folder. A reaper
  process beside the server (serving/reaper.py) does the same when the server itself is killed, and a
  start first cleans up after predecessors whose reaper was killed too.
- `InFlight` counts the requests inside the inference callables; on Ctrl-C or SIGTERM `drain` stops
  admitting new ones (they get a clean "the server is stopping" error) and waits, up to a grace
  period, for the running ones to be answered before Triton is stopped.

Linux only, as Triton is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from cmmsf.inputs.errors import CmmsfError

from .processes import alive, command_line, descendants, stop_processes
from .reaper import FOLDER_PREFIX, MARK_VARIABLE, clean_predecessors, remove_shared_memory

PR_SET_CHILD_SUBREAPER = 36


class ServerStoppingError(CmmsfError, RuntimeError):
    """A request that arrived while the server drains; the client may retry on another replica."""


@lru_cache(maxsize=1)
def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None


def become_subreaper() -> bool:
    """Orphans of our descendants (a stub whose tritonserver died) are re-parented to this process, not
    to init: they stay findable, and stoppable, as our descendants."""
    libc = _libc()
    return libc is not None and hasattr(libc, "prctl") and libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


class Housekeeping:
    """`with Housekeeping(models) as house:` around everything the server starts; see the module docstring.

    `house.failed = True` before leaving keeps Triton's default log (moved to `house.kept_log`) for the
    error line to name; a clean stop leaves nothing behind. Leaving twice does no harm."""

    def __init__(self, models: tuple[str, ...]) -> None:
        self.models = models
        self.folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-"))
        self.log = self.folder / "triton.log"
        self.workspace = self.folder / "pytriton"
        """PyTriton's workspace (sockets, model store): inside the run's folder, never in ~/.cache."""
        self.failed = False
        self.kept_log = Path(tempfile.gettempdir()) / f"cmmsf-triton-{os.getpid()}.log"
        """Where the default log goes when the server failed (named in the error before it is moved)."""
        self.cleaned: list[Path] = []
        """Folders of killed predecessors cleaned up at the start."""

    def __enter__(self) -> "Housekeeping":
        self.cleaned = clean_predecessors()
        self.started = time.time()
        mark = uuid.uuid4().hex
        (self.folder / "mark").write_text(mark)
        os.environ[MARK_VARIABLE] = mark  # before any child: they all inherit it
        become_subreaper()
        self.reaper = subprocess.Popen(
            [sys.executable, "-m", "cmmsf.runtime.serving.reaper", str(os.getpid()), str(self.folder),
             repr(self.started)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
        return self

    def __exit__(self, *exc: object) -> None:
        stop_processes(descendants(os.getpid()))  # the reaper among them: a clean stop needs none
        os.environ.pop(MARK_VARIABLE, None)
        remove_shared_memory(os.getpid(), self.started)  # as the reaper would, had this process been killed
        if self.failed and self.log.is_file():
            shutil.move(self.log, self.kept_log)
        shutil.rmtree(self.folder, ignore_errors=True)


M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own heap arena (up to 8 per core) and rarely returns
    their freed pages: a threaded server's memory creeps up under mixed load. Two arenas, set before the
    server's threads start, is the usual remedy (as MALLOC_ARENA_MAX=2); not glibc: nothing happens."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(M_ARENA_MAX, arenas)


def trim_malloc() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def tritonserver_child() -> int | None:
    """The pid of the `tritonserver` among this process's descendants, if one runs."""
    for pid in descendants(os.getpid()):
        if (command_line(pid) or b"").split(b"\0", 1)[0].endswith(b"/tritonserver"):
            return pid
    return None


class TritonWatchdog(threading.Thread):
    """Calls `on_death` once if the `tritonserver` child dies before `stop()`: whatever the main thread
    is doing then (PyTriton's start-up waits minutes for a server that is gone), the watchdog acts.
    It also trims the heap every `trim_every_s`, so memory freed after a burst goes back to the system."""

    def __init__(self, on_death: Callable[[], None], poll_s: float = 0.25, trim_every_s: float = 10.0):
        super().__init__(name="tritonserver watchdog", daemon=True)
        self.on_death, self.poll_s, self.trim_every_s = on_death, poll_s, trim_every_s
        self._stopped = threading.Event()
        self.pid: int | None = None

    def run(self) -> None:
        trimmed = time.monotonic()
        while not self._stopped.wait(self.poll_s):
            if time.monotonic() - trimmed > self.trim_every_s:  # memory back to its level after a burst
                trim_malloc()
                trimmed = time.monotonic()
            if self.pid is None:
                self.pid = tritonserver_child()
            elif not alive(self.pid) and not self._stopped.is_set():
                self.on_death()
                return

    def stop(self) -> None:
        self._stopped.set()


class InFlight:
    """Counts the requests inside the inference callables, and turns new ones away once draining."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._running = 0
        self.admitting = True

    def guard(self, infer: Callable[[list], Any]) -> Callable[[list], Any]:
        """`infer` wrapped: counted while it runs; refused once `drain` has begun."""

        def guarded(requests: list) -> Any:
            with self._lock:
                if not self.admitting:
                    raise ServerStoppingError("the server is stopping; send the request again elsewhere or later")
                self._running += 1
            try:
                return infer(requests)
            finally:
                with self._lock:
                    self._running -= 1
                    self._lock.notify_all()

        return guarded

    def drain(self, grace_s: float) -> int:
        """Stop admitting, wait up to `grace_s` for the running calls to finish; returns those still running."""
        with self._lock:
            self.admitting = False
            self._lock.wait_for(lambda: self._running == 0, timeout=grace_s)
            return self._running
