"""results.jsonl: one line per clip, flushed as each clip finishes, resumable without loss or repeats,
and written by one run at a time.

Results are written through the path as given: a regular file is appended to (or emptied with
--overwrite), and a FIFO, `/dev/stdout`, a device or a symlink is opened and written, never
unlinked or replaced. `-` is standard output. A regular file that already holds results is never
emptied by accident: a run needs --resume (score only the clips not in it) or --overwrite.

A regular results file is held with an advisory lock (`fcntl.flock`) for the whole run: a second run
on the same file stops at once naming the process that holds it, or waits for it (`wait=True`). The
lock is taken before the file is truncated or read back, so no interleaving of two runs can tear a
line, repeat a clip or lose one. flock locks die with their process: a killed run never leaves one.

Resuming reads the file line by line in bounded memory (`scan`). Clips recorded as errors are run
again unless `retry=False`; their old lines are dropped by writing the kept lines to a new file that
replaces the old one in one rename, so a kill at any point leaves either file whole.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from cmmsf.inputs.errors import CmmsfError, UsageError

from .records import to_json

STDOUT = "-"
CHUNK = 1 << 20
MAX_RECORD = 1 << 20
"""A line longer than this is not a record: it is skipped while scanning, never held in memory whole."""


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


def lines_of(fd: int, end: int) -> Iterator[tuple[int, int, bytes | None]]:
    """(start, stop, line) for every complete line before `end`: its byte range, newline included, and
    the line without its newline, read in chunks; a line longer than MAX_RECORD comes as None and is
    never held whole."""
    offset, start, pending, too_long = 0, 0, bytearray(), False
    while offset < end:
        chunk = os.pread(fd, min(CHUNK, end - offset), offset)
        if not chunk:
            break
        cut = 0
        while (newline := chunk.find(b"\n", cut)) >= 0:
            if not too_long:
                pending += chunk[cut:newline]
            stop = offset + newline + 1
            yield start, stop, None if too_long else bytes(pending)
            pending.clear()
            too_long, cut, start = False, newline + 1, stop
        if not too_long:
            pending += chunk[cut:]
            if len(pending) > MAX_RECORD:
                pending.clear()
                too_long = True
        offset += len(chunk)


@dataclass
class Scan:
    """What a results file holds: the ids scored and failed, lines that are no record, and its tail."""

    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    not_records: int = 0
    complete: int = 0
    """Bytes up to and including the last newline."""
    size: int = 0

    @property
    def tail(self) -> int:
        """Bytes after the last newline: a line a killed run was writing, or something else."""
        return self.size - self.complete


def scan(fd: int) -> Scan:
    """Read the records' ids back, one line at a time (memory bounded by MAX_RECORD, whatever the file)."""
    found = Scan(size=os.fstat(fd).st_size)
    for _, stop, line in lines_of(fd, found.size):
        found.complete = stop
        record = _record(line)
        if record is None:
            found.not_records += line is None or bool(line.strip())
            continue
        (found.failed if "error" in record else found.done).add(record["id"])
    found.failed -= found.done  # scored in a later run: the error line is history
    return found


def _record(line: bytes | None) -> dict | None:
    if line is None:
        return None
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("id"), str) else None


class ResultWriter:
    """Appends JSON lines. With `resume`, ids already written are reported by `done` and skipped.

    `__init__` takes the lock (and reads back `done`); `start` empties an `overwrite` run's file. They
    are apart so a run can hold its file before loading engines, and leave the old results untouched
    if that fails. `on_wait` is told who holds the file before a `wait` blocks. What resuming found
    and did (a torn last line cut, a tail kept aside, failed clips to retry) is in `notes`.

    Resuming from something that is not a regular file (a FIFO, a device) starts fresh: there is
    nothing to read back.
    """

    def __init__(self, path: Path | str, resume: bool, wait: bool = False,
                 on_wait: Callable[[str], None] | None = None, overwrite: bool = False, retry: bool = True):
        if resume and overwrite:
            raise UsageError("--resume and --overwrite exclude each other: keep the results or replace them")
        self.path = Path(path)
        self.done: set[str] = set()
        self.failed_kept: set[str] = set()
        """Clips recorded as failed by an earlier run and not retried (`retry=False`)."""
        self.notes: list[str] = []
        self.resume, self.overwrite, self.retry = resume, overwrite, retry
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
        except OSError as err:
            raise ResultsError(f"cannot write results to {self.path}: {err.strerror or err}") from None
        fd = self._open_locked(wait, on_wait)
        try:
            size = os.fstat(fd).st_size
            if size and not (resume or overwrite):
                raise UsageError(f"--out {self.path} already holds results ({_size(size)}): --resume scores only "
                                 "the clips not in it, --overwrite replaces it")
            if resume:
                fd = self._resume(fd)
            self.handle = os.fdopen(fd, "a", encoding="utf-8")
        except BaseException:
            os.close(fd)
            raise

    def _open(self) -> int:
        try:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                self.created = True
            except FileExistsError:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
                self.created = False
        except OSError as err:
            raise ResultsError(f"cannot write results to {self.path}: {err.strerror or err}") from None
        return fd

    def _open_locked(self, wait: bool, on_wait: Callable[[str], None] | None) -> int:
        """Open and lock; a file that a resume replaced while we waited is opened again (the usual
        lock-file loop: the lock must be on the inode the path names)."""
        while True:
            fd = self._open()
            try:
                self._lock(fd, wait, on_wait)
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    return fd
            except FileNotFoundError:
                pass
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

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

    def _resume(self, fd: int) -> int:
        """Read back what is done; cut or set aside the tail; drop failed lines to retry. Returns the
        descriptor to append to (a new one when the file was rewritten)."""
        found = scan(fd)
        self.done = set(found.done)
        if self.retry:
            retried = found.failed
        else:
            self.failed_kept = found.failed
            self.done |= found.failed
            retried = set()
        if found.not_records:
            self.notes.append(f"{found.not_records} line(s) of {self.path} are not records; left as they are")
        aside = found.tail > MAX_RECORD
        if retried or aside:
            fd = self._rewrite(fd, found, retried, aside)
        elif found.tail:
            os.ftruncate(fd, found.complete)
            self.notes.append(f"cut a torn last line ({_size(found.tail)}) that a stopped run left; its clip "
                              "runs again")
        if retried:
            self.notes.append(f"retrying {len(retried)} clip(s) that failed before (--no-retry keeps them)")
        return fd

    def _rewrite(self, fd: int, found: Scan, retried: set[str], aside: bool) -> int:
        """Write the kept lines to a new locked file and rename it over the old one. With `aside`, the old
        file is kept whole beside it (`<out>.torn`), tail and all. A run killed while rewriting leaves
        the old file whole and its temporary, removed here by the next resume (we hold the lock)."""
        for stale in self.path.parent.glob(f".{self.path.name}.*.resume"):
            stale.unlink(missing_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.resume")
        new = os.open(temporary, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(new, fcntl.LOCK_EX)
            run = 0  # every line but a retried clip's is copied as it was, in runs of adjacent lines
            for start, stop, line in lines_of(fd, found.complete):
                record = _record(line)
                if record is not None and "error" in record and record["id"] in retried:
                    _copy(fd, new, run, start)
                    run = stop
            _copy(fd, new, run, found.complete)
            os.fsync(new)
            if aside:
                kept_aside = _free_name(self.path.with_name(self.path.name + ".torn"))
                os.link(self.path, kept_aside)
                self.notes.append(f"the end of {self.path} ({_size(found.tail)}) is not a line; the file as it was "
                                  f"is kept as {kept_aside}")
            os.replace(temporary, self.path)
        except OSError as err:
            os.close(new)
            Path(temporary).unlink(missing_ok=True)
            raise ResultsError(f"cannot rewrite {self.path} to resume: {err.strerror or err}") from None
        os.close(fd)
        return new

    def start(self) -> None:
        """Begin writing: an `overwrite` run empties its locked file here."""
        self.started = True
        if self.locked and self.overwrite:
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

    def ids_in_file(self) -> set[str] | None:
        """The clips the results file holds now, read back from it (a record whose write a signal
        interrupted after its bytes were out is counted, as it should be); None where nothing can be read
        back (standard output, a FIFO, a device)."""
        if not self.locked:
            return None
        try:
            self.handle.flush()
            found = scan(self.handle.fileno())
        except (OSError, ValueError):
            return None
        return found.done | found.failed

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


def _copy(source: int, target: int, start: int, stop: int) -> None:
    """Bytes [start, stop) of one file appended to another, a chunk at a time."""
    while start < stop:
        chunk = os.pread(source, min(CHUNK, stop - start), start)
        if not chunk:
            return
        os.write(target, chunk)
        start += len(chunk)


def _free_name(path: Path) -> Path:
    """`path`, or `path.1`, `path.2`, … : the first that does not exist."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"
