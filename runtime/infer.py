"""`cmmsf-run infer`: clips in, results.jsonl out, a progress bar and a closing summary.

Where the records are computed is a `ClipRunner`: this process's `Pipeline` (`LocalRunner`), or a Ray
cluster (`cmmsf.runtime.scale.ray_batch.RayRunner`, which the CLI passes in: the core runtime does not
import the scale-out room). Everything around it, the clip list, the locked results file, resuming,
progress and the summary, is the same for both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cmmsf.inputs.clips import Clip, find_clips
from cmmsf.inputs.errors import Terminated, UsageError

from .pipeline import Pipeline, order_by_size
from .report import PER_CLIP_TABLE_MAX, clips_table, infer_summary, skipped_summary
from .results import ResultWriter, writes_to_stdout
from .settings import RunSettings
from .sinks import ClipTimelines, Sinks


class ClipRunner(Protocol):
    """Clips → one record each (error records included), in any order."""

    label: str
    """What runs them, for the line printed before the progress bar."""

    def records(self, clips: list[Clip], batch: int) -> Iterator[dict]: ...

    def close(self) -> None: ...


class LocalRunner:
    """The pipeline in this process."""

    def __init__(self, settings: RunSettings):
        self.pipeline = Pipeline.load(settings)
        note = self.pipeline.note
        self.label = (f"backend: {self.pipeline.backend.label} on {self.pipeline.backend.provider}"
                      + (f"  [dim]{note}[/]" if note else ""))

    def records(self, clips: list[Clip], batch: int) -> Iterator[dict]:
        return self.pipeline.iter_predict(clips, batch)

    def close(self) -> None:
        self.pipeline.close()


@dataclass(kw_only=True)
class InferOptions:
    paths: list[Path]
    settings: RunSettings
    out: Path = Path("results.jsonl")
    batch: int = 1
    resume: bool = False
    overwrite: bool = False
    """Replace an `out` that already holds results (without it or `resume`, such a file is refused)."""
    retry: bool = True
    """On resume, run again the clips an earlier run recorded as failed."""
    wait: bool = False
    """Queue behind another run that holds `out`, instead of stopping at once."""
    plots: Path | None = None
    """A folder for one timeline PNG per clip (`--plot`): its span, score, words and gates."""


def refuse_out_among_inputs(out: Path, clips: list[Clip]) -> None:
    """Refuse, before anything is opened, a results path that is one of the clips' files (media or
    transcript): writing there would destroy the input about to be read."""
    if writes_to_stdout(out):
        return
    target = Path(out).resolve()
    for clip in clips:
        for path in (clip.media, clip.transcript):
            if path is not None and path.resolve() == target:
                raise UsageError(f"--out {out} is an input (clip {clip.id!r}); results would overwrite it: "
                                 "choose another --out")


@dataclass
class InferResult:
    records: list[dict]
    """This run's records, error records (`id, error`) among them."""
    failed_before: int = 0
    """Clips an earlier run recorded as failed, kept as they were (`--no-retry`)."""

    @property
    def failed(self) -> bool:
        """Whether some clip has no score: the caller's exit code."""
        return self.failed_before > 0 or any("error" in r for r in self.records)


def run_infer(opts: InferOptions, console: Console,
              runner: Callable[[RunSettings], ClipRunner] = LocalRunner) -> InferResult:
    """Score every clip under `opts.paths`, writing each record to `opts.out` as soon as its batch is done.

    `runner` is built after the results file is held and before it is
    truncated, so a bad option, engine folder or ASR model fails once, before anything is written.
    """
    skipped: list[Path] = []
    clips = find_clips(opts.paths, skipped)
    if not clips:
        raise FileNotFoundError(f"no clips (video, audio or transcript files) under {', '.join(map(str, opts.paths))}"
                                + (f" ({skipped_summary(skipped)})" if skipped else ""))
    refuse_out_among_inputs(opts.out, clips)
    # the results file first: a second run on it stops here, before it loads anything
    writer = ResultWriter(opts.out, opts.resume, opts.wait, on_wait=lambda holder: console.print(
        f"waiting: {opts.out} is being written by {holder}", highlight=False), overwrite=opts.overwrite,
        retry=opts.retry)
    for note in writer.notes:
        console.print(f"resume: {note}", highlight=False)
    source = None
    sinks = Sinks([writer])
    try:
        source = runner(opts.settings)
        writer.start()
        if opts.plots:
            sinks.sinks.append(ClipTimelines(opts.plots))
    except BaseException:
        if source:
            source.close()
        writer.close()
        raise
    todo = order_by_size([c for c in clips if c.id not in writer.done])
    if writer.done:
        console.print(f"resuming: {len(clips) - len(todo)} of {len(clips)} clips already in {opts.out}"
                      + (f" ({len(writer.failed_kept)} of them failed and are kept: --no-retry)"
                         if writer.failed_kept else ""), highlight=False)
    console.print(source.label, highlight=False)
    records, start = [], time.perf_counter()
    columns = (TextColumn("infer"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[last]}"))
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("infer", total=len(todo), last="")
            for record in source.records(todo, opts.batch):
                sinks.write(record)
                records.append(record)
                progress.update(task, advance=1, last=record["id"])
        sinks.finish({"clips": len(records)})
    except KeyboardInterrupt as stop:
        if not writes_to_stdout(opts.out):
            how = "terminated" if isinstance(stop, Terminated) else "interrupted"
            in_file = writer.ids_in_file()  # a signal can land after a record's bytes are out, before it is counted
            kept = len(clips) - len(todo) + len(records) if in_file is None else len(in_file & {c.id for c in clips})
            console.print(f"{how}: {kept} of {len(clips)} clips are in {opts.out}; the same command with --resume "
                          "scores the rest", highlight=False)
        raise
    finally:
        source.close()
        sinks.close()
    if 0 < len(records) <= PER_CLIP_TABLE_MAX:
        console.print(clips_table(sorted(records, key=lambda r: r["id"])))
    console.print(infer_summary(records, time.perf_counter() - start))
    if skipped:
        console.print(f"skipped {skipped_summary(skipped)}", highlight=False)
    console.print(f"results: {opts.out}")
    if opts.plots:
        console.print(f"timelines: {opts.plots}/<clip>.png")
    return InferResult(records, len(writer.failed_kept & {c.id for c in clips}))
