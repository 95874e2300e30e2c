"""`cmmsf-run infer`: clips in, results.jsonl out, a progress bar and a closing summary."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cmmsf.inputs.clips import find_clips

from .backends import check_choice
from .engine_folder import EngineFolder
from .pipeline import Pipeline, order_by_size, preprocessor_for
from .ray_batch import RaySettings
from .report import infer_summary, skipped_summary
from .results import ResultWriter


@dataclass(kw_only=True)
class InferOptions:
    paths: list[Path]
    engines: Path
    out: Path = Path("results.jsonl")
    batch: int = 1
    resume: bool = False
    backend: str = "auto"
    precision: str = "fp32"
    face_crop: bool = True
    asr: str = "auto"
    """auto: speech recognition for clips without a transcript sidecar; always; off."""
    ray: RaySettings | None = None
    """Run on a Ray cluster instead of in this process."""
    wait: bool = False
    """Queue behind another run that holds `out`, instead of stopping at once."""


def run_infer(opts: InferOptions, console: Console) -> list[dict]:
    """Score every clip under `opts.paths`, writing each record to `opts.out` as soon as its batch is done.

    Returns the records of this run; error records (`id, error`) are among them: the caller turns
    them into the exit code (README: 0 all scored, 2 some clips failed). With `opts.ray`, the clips are
    decoded and scored on a Ray cluster (`runtime/ray_batch.py`) and written here in the same way.
    """
    skipped: list[Path] = []
    clips = find_clips(opts.paths, skipped)
    if not clips:
        raise FileNotFoundError(f"no clips (video, audio or transcript files) under {', '.join(map(str, opts.paths))}"
                                + (f" ({skipped_summary(skipped)})" if skipped else ""))
    # the results file first: a second run on it stops here, before it loads anything
    writer = ResultWriter(opts.out, opts.resume, opts.wait, on_wait=lambda holder: console.print(
        f"waiting: {opts.out} is being written by {holder}", highlight=False))
    pipeline = None
    try:
        if opts.ray:  # fail here, once, on a bad option, engine folder or ASR model, not in every worker
            check_choice(opts.backend, opts.precision)
            preprocessor_for(EngineFolder.open(opts.engines), face_crop=opts.face_crop, asr=opts.asr)
        else:
            pipeline = Pipeline.load(opts.engines, opts.backend, opts.precision, face_crop=opts.face_crop,
                                     asr=opts.asr)
        writer.start()
    except BaseException:
        if pipeline:
            pipeline.close()
        writer.close()
        raise
    todo = order_by_size([c for c in clips if c.id not in writer.done])
    if writer.done:
        console.print(f"resuming: {len(clips) - len(todo)} of {len(clips)} clips already in {opts.out}")
    if pipeline:
        console.print(f"backend: {pipeline.backend.label} on {pipeline.backend.provider}"
                      + (f"  [dim]{pipeline.note}[/]" if pipeline.note else ""))
        results = pipeline.iter_predict(todo, opts.batch)
    else:
        from .ray_batch import ray_records

        console.print(f"Ray: {opts.ray.address}, {opts.ray.actors} stage actor(s) on {opts.backend} "
                      f"{opts.precision}" + (f", {opts.ray.num_gpus_per_actor:g} GPU each"
                                             if opts.ray.num_gpus_per_actor else ""), highlight=False)
        results = ray_records(todo, opts.engines, opts.ray, opts.batch, opts.backend, opts.precision,
                              opts.face_crop, opts.asr)
    records, start = [], time.perf_counter()
    columns = (TextColumn("infer"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[last]}"))
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("infer", total=len(todo), last="")
            for record in results:
                writer.write(record)
                records.append(record)
                progress.update(task, advance=1, last=record["id"])
    finally:
        if pipeline:
            pipeline.close()
        writer.close()
    console.print(infer_summary(records, time.perf_counter() - start))
    if skipped:
        console.print(f"skipped {skipped_summary(skipped)}", highlight=False)
    console.print(f"results: {opts.out}")
    return records
