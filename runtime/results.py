"""results.jsonl: one line per clip, flushed as each clip finishes, resumable without loss or repeats.

Results are written through the path as given: a regular file is truncated in place (or appended to
with --resume), and a FIFO, `/dev/stdout`, a device or a symlink is opened and written, never
unlinked or replaced. `-` is standard output.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Any

from inputs.errors import CmmsfError

STDOUT = "-"


class ResultsError(CmmsfError, OSError):
    """The results cannot be written (a folder given, disk full, …); the message says which path and why."""


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


class ResultWriter:
    """Appends JSON lines. With `resume`, ids already written are reported by `done` and skipped.

    An interrupted run can leave half a line at the end of a regular file; resuming cuts it off in
    place, so that clip is simply run again and no line is ever corrupt. Resuming from something that
    is not a regular file (a FIFO, a device) starts fresh: there is nothing to read back.
    """

    def __init__(self, path: Path | str, resume: bool):
        self.path = Path(path)
        self.done: set[str] = set()
        if str(path) == STDOUT:
            self.handle: IO[str] = sys.stdout
            return
        if self.path.is_dir():
            raise ResultsError(f"--out {self.path} is a folder; name a file such as {self.path / 'results.jsonl'}")
        try:
            if resume and self.path.is_file():
                self._read_done()
                self.handle = open(self.path, "a", encoding="utf-8")
            else:
                if not self.path.exists():
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                self.handle = open(self.path, "w", encoding="utf-8")
        except OSError as err:
            raise ResultsError(f"cannot write results to {self.path}: {err.strerror or err}") from None

    def _read_done(self) -> None:
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):
            os.truncate(self.path, len(complete))
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                self.done.add(json.loads(line)["id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.handle.write(json.dumps(record, separators=(",", ":")) + "\n")
            self.handle.flush()
        except OSError as err:
            raise ResultsError(f"cannot write results to {self.path}: {err.strerror or err}") from None

    def close(self) -> None:
        if self.handle is sys.stdout:
            return
        try:
            self.handle.close()
        except OSError as err:  # a full disk can refuse the last buffered bytes here
            raise ResultsError(f"cannot write results to {self.path}: {err.strerror or err}") from None
