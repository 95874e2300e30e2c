"""`cmmsf-run stream`: sliding-window sentiment on a file, camera or URL as it plays.

Work done once as data arrives: every sampled frame is cropped, resized and normalised once, and every
10 ms of audio becomes log-mel once (StreamingLogMel). The engines are stateless, so each window runs
the five stages on its own span; windows overlap by `window - hop` seconds. A transcript (sidecar of a
file, or --transcript) has no word timing, so every window sees the whole transcript.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from rich.console import Console

from inputs.audio import StreamingLogMel
from inputs.clips import TRANSCRIPT_SUFFIXES
from inputs.features import ClipInputs
from inputs.media import FrameSampler, MediaError, MonoResampler
from inputs.text import read_transcript
from inputs.video import frames_to_input

from .pipeline import Pipeline


def open_source(source: str):
    """A camera index (`0` → /dev/video0 through v4l2), a URL or a file path, through PyAV."""
    try:
        if source.isdigit():
            return av.open(f"/dev/video{source}", format="v4l2")
        if "://" not in source and not Path(source).is_file():
            raise MediaError(f"no such file: {source}")
        return av.open(source)
    except (av.error.FFmpegError, OSError) as err:
        raise MediaError(f"cannot open {source}: {err}") from None


@dataclass
class StreamState:
    """What has arrived so far: preprocessed frames with their times, and streaming log-mel."""

    mel: StreamingLogMel
    frame_times: list[float] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    media_time: float = 0.0

    def video_window(self, start: float, end: float) -> np.ndarray | None:
        picked = [f for t, f in zip(self.frame_times, self.frames) if start <= t < end]
        return np.stack(picked) if picked else None


def _sidecar_transcript(source: str, explicit: Path | None) -> str:
    if explicit is not None:
        return read_transcript(explicit)
    path = Path(source)
    for suffix in TRANSCRIPT_SUFFIXES:
        if path.with_suffix(suffix).is_file():
            return read_transcript(path.with_suffix(suffix))
    return ""


def iter_windows(pipeline: Pipeline, source: str, window: float, hop: float, transcript: str = "",
                 realtime: bool = False):
    """Yield one record per window as soon as the media for it has arrived."""
    if window <= 0 or hop <= 0:
        raise ValueError("--window and --hop must be positive seconds")
    config, pre = pipeline.config, pipeline.preprocessor
    text_ids = pre.text(transcript) if transcript else None
    state = StreamState(StreamingLogMel(config.audio.sample_rate, config.audio.feature_dim, config.audio.frame_rate_hz))
    next_window, busy, wall_start = 0, 0.0, time.perf_counter()
    with open_source(source) as container:
        streams = [*container.streams.video[:1], *container.streams.audio[:1]]
        if not streams:
            raise MediaError(f"{source} has neither audio nor video")
        resample, sampler = MonoResampler(config.audio.sample_rate), FrameSampler(config.video.fps)
        try:
            for frame in container.decode(*streams):
                t = float(frame.time or 0.0)
                if realtime:
                    time.sleep(max(0.0, wall_start + t - time.perf_counter()))
                work = time.perf_counter()
                if isinstance(frame, av.AudioFrame):
                    for chunk in resample(frame):
                        state.mel.push(chunk)
                elif sampler.keep(t):
                    state.frame_times.append(t)
                    state.frames.append(frames_to_input(frame.to_ndarray(format="rgb24")[None],
                                                        config.video.image_size, pre.face_crop)[0])
                state.media_time = max(state.media_time, t)
                busy += time.perf_counter() - work
                while state.media_time >= next_window * hop + window:
                    record, spent = _run_window(pipeline, state, text_ids, next_window * hop, window)
                    busy += spent
                    next_window += 1
                    yield record, busy
            for chunk in resample(None):  # the resampler's buffered tail belongs to the last window
                state.mel.push(chunk)
        except av.error.FFmpegError as err:
            raise MediaError(f"decoding {source} failed: {err}") from None
    end = max(state.media_time, len(state.mel.steps) / config.audio.frame_rate_hz)
    while next_window == 0 or (next_window - 1) * hop + window < end:  # until a window reaches the end
        record, spent = _run_window(pipeline, state, text_ids, next_window * hop, window, end)
        busy += spent
        next_window += 1
        yield record, busy


def _run_window(pipeline: Pipeline, state: StreamState, text_ids, start: float, window: float,
                end_of_media: float | None = None) -> tuple[dict, float]:
    began = time.perf_counter()
    end = start + window if end_of_media is None else min(start + window, end_of_media)
    arrays = {"text": text_ids, "audio": state.mel.window(start, end), "video": state.video_window(start, end)}
    item = pipeline.preprocessor.limit(ClipInputs(f"{start:.2f}-{end:.2f}", arrays))
    if all(a is None for a in item.arrays.values()):
        record = {"start_s": round(start, 3), "end_s": round(end, 3), "error": "no usable data in this window"}
    else:
        result = pipeline.predict_inputs([item])[0]
        record = {"start_s": round(start, 3), "end_s": round(end, 3), "score": result["score"],
                  "label7": result["label7"], "gates": result["gates"], "present": result["present"],
                  "stage_ms": result["stage_ms"]}
    spent = time.perf_counter() - began
    record["latency_ms"] = round(spent * 1e3, 2)
    return record, spent


def plot_timeline(records: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if "score" in r]
    centres = [(r["start_s"] + r["end_s"]) / 2 for r in ok]
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.axhline(0, color="grey", lw=0.8)
    ax.plot(centres, [r["score"] for r in ok], marker="o")
    ax.set_ylim(-3, 3)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("sentiment")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclass
class StreamOptions:
    source: str
    engines: Path
    window: float = 4.0
    hop: float = 2.0
    transcript: Path | None = None
    realtime: bool = False
    out: Path | None = None
    plot: Path | None = None
    backend: str = "auto"
    precision: str = "fp32"


def run_stream(opts: StreamOptions, console: Console) -> list[dict]:
    pipeline = Pipeline.load(opts.engines, opts.backend, opts.precision)
    console.print(f"backend: {pipeline.backend.label} on {pipeline.backend.provider}", highlight=False)
    sink = open(opts.out, "w", encoding="utf-8") if opts.out else None
    records, busy, started = [], 0.0, time.perf_counter()
    try:
        transcript = _sidecar_transcript(opts.source, opts.transcript)
        for record, busy in iter_windows(pipeline, opts.source, opts.window, opts.hop, transcript, opts.realtime):
            line = json.dumps(record, separators=(",", ":"))
            print(line, flush=True)
            if sink:
                sink.write(line + "\n")
                sink.flush()
            records.append(record)
    finally:
        if sink:
            sink.close()
        pipeline.close()
    media = max((r["end_s"] for r in records), default=0.0)
    if media:
        console.print(f"{len(records)} windows over {media:.1f} s of media; processing took {busy:.2f} s "
                      f"(real-time factor {busy / media:.3f}); wall {time.perf_counter() - started:.1f} s",
                      highlight=False)
    if opts.plot:
        plot_timeline(records, opts.plot, f"{Path(opts.source).name}: sentiment per {opts.window:g} s window")
        console.print(f"timeline: {opts.plot}")
    return records
