"""Where records go: one small interface every output implements, so `infer` and `stream` compose their
outputs instead of calling each one its own way.

A sink takes each record as it is made (`write`), hears the run's summary at the end (`finish`) and
releases what it holds (`close`, always called, also after an error). The JSON-lines results writer
(runtime/results.py), the live page (runtime/view/), the timeline plots below and a server's answers are
sinks; `Sinks` writes to several at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from .timeline import plot_timeline


@runtime_checkable
class Sink(Protocol):
    def write(self, record: dict) -> None: ...

    def finish(self, summary: dict) -> None: ...

    def close(self) -> None: ...


class Sinks:
    """Several sinks as one: each record to every sink, in order; every sink closed even if one fails."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = list(sinks)

    def write(self, record: dict) -> None:
        for sink in self.sinks:
            sink.write(record)

    def finish(self, summary: dict) -> None:
        for sink in self.sinks:
            sink.finish(summary)

    def close(self) -> None:
        errors = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as err:  # noqa: BLE001 - close the others, then raise the first
                errors.append(err)
        if errors:
            raise errors[0]


class TimelinePlot:
    """`stream --plot`: every window's record, drawn on one timeline when the run finishes."""

    def __init__(self, path: Path, title: str):
        self.path, self.title, self.records = path, title, []

    def write(self, record: dict) -> None:
        self.records.append(record)

    def finish(self, summary: dict) -> None:
        plot_timeline(self.records, self.path, self.title)

    def close(self) -> None:
        self.records = []


class ClipTimelines:
    """`infer --plot DIR`: one timeline PNG per clip (its span, score, words and gates), as it is scored."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def file(self, clip_id: str) -> Path:
        """Where a clip's timeline goes: its id, with folder separators made part of the name."""
        return self.folder / (clip_id.replace("/", "__").replace("\\", "__") + ".png")

    def write(self, record: dict) -> None:
        plot_timeline([record], self.file(record["id"]), record["id"])

    def finish(self, summary: dict) -> None:
        pass

    def close(self) -> None:
        pass
