"""results.jsonl: one line per clip, flushed as each clip finishes, resumable without loss or repeats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class ResultWriter:
    """Appends JSON lines. With `resume`, ids already written are reported by `done` and skipped.

    An interrupted run can leave half a line at the end of the file; resuming cuts it off, so that
    clip is simply run again and no line is ever corrupt.
    """

    def __init__(self, path: Path, resume: bool):
        self.path = Path(path)
        self.done: set[str] = set()
        if resume and self.path.is_file():
            raw = self.path.read_bytes()
            complete = raw[: raw.rfind(b"\n") + 1]
            if len(complete) != len(raw):
                self.path.write_bytes(complete)
            for line in complete.decode("utf-8", errors="replace").splitlines():
                try:
                    self.done.add(json.loads(line)["id"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
        elif self.path.exists():
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()
