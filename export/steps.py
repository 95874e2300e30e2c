"""Every build step timed and reported the same way (the Ultralytics exporter's habit).

    log = StepLog(console)
    with log.step("export text_encoder") as step:
        ...
        step.detail = "92.6 MB fp32"
prints a spinner while the step runs, then one line `✓ name  seconds  detail` (or `✗` on failure);
`log.seconds` keeps every step's time for the manifest.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console


@dataclass
class Step:
    name: str
    detail: str = ""


class StepLog:
    def __init__(self, console: Console):
        self.console = console
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[Step]:
        step, start = Step(name), time.perf_counter()
        try:
            with self.console.status(f"{name}…"):
                yield step
        except BaseException:
            self.console.print(f"  [red]✗[/] {name:<30} {time.perf_counter() - start:6.1f} s", highlight=False)
            raise
        seconds = time.perf_counter() - start
        self.seconds[name] = round(seconds, 3)
        self.console.print(f"  [green]✓[/] {name:<30} {seconds:6.1f} s  {step.detail}", highlight=False)

    def skipped(self, name: str, why: str) -> None:
        self.console.print(f"  [yellow]-[/] {name:<30} {'':>8}  skipped: {why}", highlight=False)
