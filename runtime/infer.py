"""`cmmsf-run infer`: clips in, results.jsonl out, a progress bar and a closing summary."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from inputs.clips import find_clips

from .pipeline import Pipeline, order_by_size
from .report import infer_summary
from .results import ResultWriter


def run_infer(paths: list[Path], engines: Path, out: Path, batch: int, resume: bool, backend: str,
              precision: str, face_crop: bool, console: Console) -> list[dict]:
    """Score every clip under `paths`, writing each record to `out` as soon as its batch is done."""
    clips = find_clips(paths)
    if not clips:
        raise FileNotFoundError(f"no clips (video, audio or transcript files) under {', '.join(map(str, paths))}")
    writer = ResultWriter(out, resume)
    todo = order_by_size([c for c in clips if c.id not in writer.done])
    if writer.done:
        console.print(f"resuming: {len(clips) - len(todo)} of {len(clips)} clips already in {out}")
    pipeline = Pipeline.load(engines, backend, precision, face_crop=face_crop)
    console.print(f"backend: {pipeline.backend.name} on {pipeline.backend.provider}"
                  + (f"  [dim]{pipeline.note}[/]" if pipeline.note else ""))
    records, start = [], time.perf_counter()
    columns = (TextColumn("infer"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[last]}"))
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("infer", total=len(todo), last="")
            for record in pipeline.iter_predict(todo, batch):
                writer.write(record)
                records.append(record)
                progress.update(task, advance=1, last=record["id"])
    finally:
        writer.close()
        pipeline.close()
    console.print(infer_summary(records, time.perf_counter() - start))
    console.print(f"results: {out}")
    return records
