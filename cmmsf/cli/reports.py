"""What both eval commands print and write: the per-source table, `--json`, and the gates' exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import ExitCode, console, err_console


def report_rows(rows: list, title: str, json_out: Optional[Path], extra: Optional[dict]) -> None:
    """The per-source table, `--json` (the rows, with `extra` beside them), and exit 1 when a gate is missed."""
    from cmmsf.evaluation.evaluator import row_records
    from cmmsf.runtime.report import subset_view

    console.print(subset_view(rows, title))
    if json_out:
        json_out.write_text(json.dumps(row_records(rows) if extra is None else {**extra, "rows": row_records(rows)},
                                       indent=1) + "\n")
        console.print(f"wrote {json_out}")
    failed = [f"{r.source} {r.subset}" for r in rows if r.failures]
    if failed:
        err_console.print(f"[red]gate missed:[/] {', '.join(failed)}")
        raise typer.Exit(ExitCode.FAILED)
