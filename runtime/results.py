"""results.jsonl: one line per clip, flushed as each clip finishes, resumable without loss or repeats,
and written by one run at a time.

Results are written through the path as given: a regular file is truncated in place (or appended to
with --resume), and a FIFO, `/dev/stdout`, a device or a symlink is opened and written, never
unlinked or replaced. `-` is standard output.

A regular results file is held with an advisory lock (`fcntl.flock`) for the whole run: a second run
on the same file stops at once naming the process that holds it, or waits for it (`wait=True`). The
lock is taken before the file is truncated or read back, so no interleaving of two runs can tear a
line, repeat a clip or lose one. flock locks die with their process: a killed run never leaves one.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import sys
from pathlib import Path
from typing import IO, Any, Callable

from cmmsf.inputs.errors import CmmsfError

from .records import to_json

STDOUT = "-"


class ResultsError(CmmsfError, OSError):
    """The results cannot be written (a folder given, disk full, …); the message says which path and why."""


class ResultsBusy(ResultsError):
    """Another process holds the results file."""


def writes_to_stdout(path: Path | str) -> bool:
    """True when results go to this process's standard output (human output must then go to stderr):
    `-`, `/dev/stdout`, or any path that is the same file as it (a symlink to the terminal, say)."""
    text = str(path)
    if text in (STDOUT, "/dev/stdout"):
        return True
    try:
        return os.path.samestat(os.stat(text), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError):  # no such path, or a stdout without a file descriptor
        return False


def lock_holder(fd: int) -> str:
    """Who holds a flock on this open file, read from /proc/locks (Linux): `pid 123 (cmmsf-run infer …)`,
    or `another process` where that cannot be read."""
    info = os.fstat(fd)
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as table:
            pids = [line.split()[4] for line in table if "FLOCK" in line and device in line.split()]
    except (OSError, IndexError):
        pids = []
    for pid in pids:
        if pid != str(os.getpid()):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                return f"pid {pid}"
            return f"pid {pid} ({command.strip()[:120]})"
    return "another process"


class ResultWriter:
    """Appends JSON lines. With `resume`, ids already written are reported by `done` and skipped.

    `__init__` takes the lock (and reads back `done`); `start` truncates a fresh run's file. They are
    apart so a run can hold its file before loading engines, and leave the old results untouched if
    that fails. `on_wait` is told who holds the file before a `wait` blocks.

    An interrupted run can leave half a line at the end of a regular file; resuming cuts it off in
    place, so that clip is simply run again and no line is ever corrupt. Resuming from something that
    is not a regular file (a FIFO, a device) starts fresh: there is nothing to read back.
    """

    def __init__(self, path: Path | str, resume: bool, wait: bool = False,
                 on_wait: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.done: set[str] = set()
        self.resume = resume
        self.locked = self.started = self.created = False
        if str(path) == STDOUT:
            self.handle: IO[str] = sys.stdout
            return
        if self.path.is_dir():
            raise ResultsError(f"--out {self.path} is a folder; name a file such as {self.path / 'results.jsonl'}")
        try:
            if self.path.exists() and not stat.S_ISREG(os.stat(self.path).st_mode):
                self.handle = open(self.path, "w", encoding="utf-8")  # a FIFO or device: nothing to lock
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                self.created = True
            except FileExistsError:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except OSError as err:
            raise ResultsError(f"cannot write results to {self.path}: {err.strerror or err}") from None
        try:
            self._lock(fd, wait, on_wait)
            if resume:
                self._read_done(fd)
            self.handle = os.fdopen(fd, "a", encoding="utf-8")
        except BaseException:
            os.close(fd)
            raise

    def _lock(self, fd: int, wait: bool, on_wait: Callable[[str], None] | None) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(fd)
            if not wait:
                raise ResultsBusy(f"{self.path} is being written by {holder}; wait for it to finish, "
                                  "pass --wait to queue behind it, or choose another --out") from None
            if on_wait:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        self.locked = True

    def _read_done(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        raw = os.pread(fd, size, 0) if size else b""
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):
            os.ftruncate(fd, len(complete))
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                self.done.add(json.loads(line)["id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue

    def start(self) -> None:
        """Begin writing: a fresh run (not `resume`) empties its locked file here."""
        self.started = True
        if self.locked and not self.resume:
            try:
                self.handle.flush()
                os.ftruncate(self.handle.fileno(), 0)
            except OSError as err:
                raise ResultsError(f"cannot write results to {self.path}: {err.strerror or err}") from None

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.handle.write(to_json(record) + "\n")
            self.handle.flush()
        except OSError as err:
            raise ResultsError(f"cannot write results to {self.path}: {err.strerror or err}") from None

    def finish(self, summary: dict[str, Any]) -> None:
        """A sink (runtime/sinks.py): every line is already written and flushed."""

    def close(self) -> None:
        """Flush and close; closing the descriptor releases the lock. A run that never started (its
        engines failed to load) leaves no file it created itself."""
        if self.handle is sys.stdout:
            return
        if self.created and not self.started:
            self.path.unlink(missing_ok=True)  # still ours: the lock is held until the close below
        try:
            self.handle.close()
        except OSError as err:  # a full disk can refuse the last buffered bytes here
            raise ResultsError(f"cannot write results to {self.path}: {err.strerror or err}") from None
