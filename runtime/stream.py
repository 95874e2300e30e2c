"""`cmmsf-run stream`: sliding-window sentiment on a file, camera or URL as it plays.

Work done once as data arrives: every sampled frame is cropped, resized and normalised once, and every
10 ms of audio becomes log-mel once (StreamingLogMel). The engines are stateless, so each window runs
the five stages on its own span; windows overlap by `window - hop` seconds, and what no later window
needs is forgotten (memory stays flat however long the stream runs). Words: a transcript (sidecar of a file, or --transcript) has no word timing, so every window sees the
whole transcript. Without one (`--asr auto`, the default; `always` ignores a transcript), speech is
recognised as the audio arrives (cmmsf/inputs/asr.RollingTranscriber): each window gets the words whose middle
falls inside it, recognised from audio up to the window's end only, never from the future, and its
line carries them (`transcript`, `words`, `stage_ms.asr`). Live sources need no transcript at all.

The source is opened and decoded in a background thread (cmmsf/inputs/live.py), so Ctrl-C ends the command
at once even while FFmpeg waits on a network. Network and camera sources get a connect timeout and a
read timeout: a source that accepts and then sends nothing, or stalls mid-stream, ends the command with
one error line after `read_timeout` seconds. There is no automatic reconnect: a dropped source ends the
stream (rerun the command, or put a restarting supervisor around it).
A window with no usable modality is an error line (`no usable input: …`), as a clip is in `infer`.
Before the source opens, one untimed pass at the window's shape warms every session up (warm_up), so
the first window costs what the others do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console

from cmmsf.inputs.asr import RollingTranscriber, words_in
from cmmsf.inputs.audio import StreamingLogMel, StreamingWave, audible
from cmmsf.inputs.clips import TRANSCRIPT_SUFFIXES
from cmmsf.inputs.errors import UsageError
from cmmsf.inputs.features import ClipInputs, Preprocessor, clean_audio, sidecar_notes
from cmmsf.inputs.speech_features import StreamingWhisper
from cmmsf.inputs.live import AudioChunk, is_live, read_source
from cmmsf.inputs.media import media_duration
from cmmsf.inputs.text import Transcript, read_transcript
from cmmsf.sample_inputs import make_inputs
from cmmsf.inputs.video import NO_FACE, FaceBox, FaceTracker, face_boxes, frame_to_input

from .latency import percentiles
from .pipeline import Pipeline, error_record
from .results import STDOUT, ResultWriter, writes_to_stdout
from .settings import RunSettings
from .sinks import Sinks, TimelinePlot


MIN_TAIL_S = 0.1
"""Media past the last window's end that gets no window of its own (an AAC track's padding, say)."""


def pace_until(deadline: float) -> None:
    """Sleep until `deadline` (perf_counter) in short naps, so Ctrl-C is never held up."""
    while (left := deadline - time.perf_counter()) > 0:
        time.sleep(min(left, 0.2))


@dataclass
class StreamState:
    """What has arrived so far: preprocessed frames with their times, streaming log-mel and the raw samples."""

    mel: StreamingLogMel | StreamingWhisper
    """Audio steps as audio arrives, by the model's front-end."""
    frame_period: float
    """Seconds one sampled frame stands for (1 / the model's fps): a frame at t covers [t, t + period)."""
    tracker: FaceTracker | None = None
    """The stream's one face tracker (None: frames are already face crops)."""
    wave: StreamingWave | None = None
    """The raw samples (the Whisper front-end's own buffer where it has one)."""
    frame_times: list[float] = field(default_factory=list)
    frames: list[np.ndarray | None] = field(default_factory=list)
    """Each sampled frame's model input, None where the tracker had no face."""
    media_time: float = 0.0
    """Media seconds that have arrived: the end of the last frame, or of the last audio chunk's start."""

    def __post_init__(self):
        if self.wave is None:
            self.wave = self.mel.samples if isinstance(self.mel, StreamingWhisper) else StreamingWave(
                self.mel.sample_rate)

    def push_audio(self, samples: np.ndarray) -> None:
        self.mel.push(samples)
        if not isinstance(self.mel, StreamingWhisper):  # it keeps the samples itself
            self.wave.push(samples)

    def push_frame(self, time_s: float, model_input: np.ndarray | None) -> None:
        self.frame_times.append(time_s)
        self.frames.append(model_input)
        self.media_time = max(self.media_time, time_s + self.frame_period)

    @property
    def end(self) -> float:
        """Where the media that has arrived ends (to the audio sample)."""
        return max(self.media_time, self.wave.seconds)

    def video_window(self, start: float, end: float) -> tuple[np.ndarray | None, str]:
        """The window's face frames, and why there are none (`no frames in this window`, `no face`)."""
        arrived = [f for t, f in zip(self.frame_times, self.frames) if start <= t < end]
        picked = [f for f in arrived if f is not None]
        return (np.stack(picked) if picked else None), ("no frames in this window" if not arrived else NO_FACE)

    def forget_before(self, start: float) -> None:
        """Drop frames, log-mel steps and samples that no window from `start` on can use."""
        keep = next((i for i, t in enumerate(self.frame_times) if t >= start), len(self.frame_times))
        del self.frame_times[:keep], self.frames[:keep]
        self.mel.forget_before(start)
        if not isinstance(self.mel, StreamingWhisper):
            self.wave.forget_before(start)


def _sidecar_transcript(source: str, explicit: Path | None) -> Transcript | None:
    if explicit is not None:
        return read_transcript(explicit)
    if is_live(source):
        return None
    sidecar = next((Path(source).with_suffix(s) for s in TRANSCRIPT_SUFFIXES if Path(source).with_suffix(s).is_file()),
                   None)
    return read_transcript(sidecar) if sidecar else None


class WindowWords:
    """The words each window sees: the whole transcript, or the speech recognised inside the window."""

    def __init__(self, pre: Preprocessor, transcript: Transcript | None):
        self.pre = pre
        self.rolling = (RollingTranscriber(pre.recognizer, pre.spec.sample_rate)
                        if pre.recognizer is not None and (transcript is None or pre.asr == "always") else None)
        if self.rolling:
            self.rolling.recognizer.model  # noqa: B018 - load it now, not inside the first window's time
        self.transcript = None if self.rolling else transcript
        self.ids = pre.text(self.transcript.text) if self.transcript else None
        self.absent = ("no transcript" if self.transcript is None else
                       self.transcript.problem or "no words in the transcript")
        self.notes: dict = (sidecar_notes(self.transcript) if self.transcript else
                            {"transcript_source": "asr" if self.rolling else "none"})
        if self.rolling:
            self.notes["asr_options"] = self.rolling.recognizer.options
        if self.transcript:
            self.notes["transcript"] = self.transcript.text

    def push(self, samples: np.ndarray) -> None:
        if self.rolling:
            self.rolling.push(samples)

    def window(self, start: float, end: float) -> tuple[np.ndarray | None, str, dict, dict]:
        """(token ids or None, why absent, notes for the record, front-end milliseconds)."""
        if not self.rolling:
            return self.ids, self.absent, dict(self.notes), {}
        before = self.rolling.seconds
        words = words_in(self.rolling.words_until(end), start, end)
        text = " ".join(w.text for w in words)
        notes = {**self.notes, "transcript": text, "words": [vars(w) for w in words]}
        ids = self.pre.text(text) if text else None
        return ids, "no speech heard in this window", notes, {"asr": (self.rolling.seconds - before) * 1e3}

    def forget_before(self, start: float) -> None:
        if self.rolling:
            self.rolling.forget_before(start)


def iter_windows(pipeline: Pipeline, source: str, window: float, hop: float, transcript: Transcript | None = None,
                 realtime: bool = False, connect_timeout: float = 10.0, read_timeout: float = 10.0,
                 inspect: Callable[[tuple[int, int]], None] | None = None,
                 on_frame: Callable[[float, np.ndarray, FaceBox | None], None] | None = None):
    """Yield (record, busy seconds so far) per window as soon as the media for it has arrived.

    `inspect`, if given, is called after each window with (frames held, audio steps held): what the
    stream keeps in memory, which stays flat however long it runs. `on_frame`, if given, gets every
    sampled frame with its time and the face box the model read from it (the live view)."""
    if window <= 0 or hop <= 0:
        raise UsageError("--window and --hop must be positive seconds")
    config, pre = pipeline.config, pipeline.preprocessor
    words = WindowWords(pre, transcript)
    audio = config.audio
    state = StreamState(
        StreamingWhisper(pre.speech, audio.sample_rate, audio.frame_rate_hz) if audio.frontend == "whisper"
        else StreamingLogMel(audio.sample_rate, audio.feature_dim, audio.frame_rate_hz),
        1.0 / config.video.fps, FaceTracker(detector=pre.detector) if pre.face_crop else None)
    warm_up(pipeline, window, words)
    next_window, busy, wall_start = 0, 0.0, time.perf_counter()

    def run(start: float, end_of_media: float | None = None) -> tuple[dict, float]:
        return _run_window(pipeline, state, words, start, window, end_of_media)

    for item in read_source(source, config.audio.sample_rate, config.video.fps, connect_timeout, read_timeout):
        if realtime:
            pace_until(wall_start + item.time_s)
        work = time.perf_counter()
        if isinstance(item, AudioChunk):
            state.push_audio(item.samples)
            words.push(item.samples)
            state.media_time = max(state.media_time, item.time_s)
        else:
            state.push_frame(item.time_s, frame_to_input(item.rgb, config.video.image_size, state.tracker))
            if on_frame is not None:
                on_frame(item.time_s, item.rgb, state.tracker.box if state.tracker else None)
        busy += time.perf_counter() - work
        while state.media_time >= next_window * hop + window:
            record, spent = run(next_window * hop)
            busy += spent
            next_window += 1
            state.forget_before(next_window * hop)
            words.forget_before(next_window * hop)
            if inspect is not None:
                inspect((len(state.frames), state.mel.held_steps))
            yield record, busy
    end = state.end
    while next_window == 0 or (next_window - 1) * hop + window < end - MIN_TAIL_S:  # until one reaches the end
        record, spent = run(next_window * hop, end)
        busy += spent
        next_window += 1
        yield record, busy


WARM_UP_TOKENS = 24
"""Sentence length of the warm-up pass (a 4 s window holds about 10 spoken words)."""


def warm_up(pipeline: Pipeline, window: float, words: WindowWords) -> dict[str, float]:
    """One untimed pass at the window's shape through everything a window runs, before the source opens;
    returns the engines' milliseconds per stage (what the first window would have paid).

    Why: the first window paid for every session's first run (OpenVINO's kernels for the shapes, the
    voice-activity model's load, the face detector's first call): 497 ms against 56-68 ms for the next
    ones on the MOSI mp4, and on a 7.5 s clip that alone was a third of the stream's real-time factor. A live
    stream should pay it while it starts, as Triton's model warm-up and trtexec's --warmUp do."""
    config, pre = pipeline.config, pipeline.preprocessor
    rate = pre.spec.sample_rate
    murmur = (0.05 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate)).astype(np.float32)
    pre.speech_notes(murmur, {}, {})
    if pre.speech is not None:
        pre.audio(murmur)
    if words.rolling is not None:
        words.rolling.recognizer.transcribe(murmur)
    if pre.face_crop:
        face_boxes(np.zeros((480, 640, 3), np.uint8), pre.detector)
    limits = pipeline.engines.profile.max_len
    lengths = {"text_len": min(WARM_UP_TOKENS, limits["text"]),
               "audio_len": max(1, min(int(window * config.audio.frame_rate_hz), limits["audio"])),
               "video_len": max(1, min(int(window * config.video.fps), limits["video"]))}
    return pipeline.run_batch(make_inputs(config, batch=1, padded=False, **lengths)).stage_ms


def _run_window(pipeline: Pipeline, state: StreamState, words: WindowWords, start: float, window: float,
                end_of_media: float | None) -> tuple[dict, float]:
    """One window through the clip path: the same assembly (`Preprocessor.assemble`), the same record
    (`Pipeline.predict_inputs`) and error record as `infer`, plus the window's span and latency."""
    began = time.perf_counter()
    pre = pipeline.preprocessor
    end = start + window if end_of_media is None else min(start + window, end_of_media)
    text_ids, text_absent, notes, front_ms = words.window(start, end)
    wave = clean_audio(state.wave.window(start, end), notes)
    pre.speech_notes(wave, notes, front_ms)
    notes["decoded_s"] = round(end - start, 3)
    video, video_absent = state.video_window(start, end)
    audio = state.mel.window(start, end) if audible(wave, pre.spec.sample_rate) else None
    arrays = {"text": text_ids, "audio": audio, "video": video}
    audio_absent = "no audio in this window" if wave is None else "silent"
    absent = {m: reason for m, reason in (("text", text_absent), ("audio", audio_absent), ("video", video_absent))
              if arrays[m] is None}
    window_id = f"{start:.2f}-{end:.2f}"
    span = {"start_s": round(start, 3), "end_s": round(end, 3)}
    try:
        item = pre.assemble(ClipInputs(window_id, arrays, duration_s=end - start, absent=absent, notes=notes,
                                       front_ms=front_ms))
        record = {**span, **pipeline.predict_inputs([item])[0]}
    except Exception as err:  # noqa: BLE001 - a window that cannot be scored is its error line, as a clip's
        record = {**span, **error_record(window_id, err), **notes}
    spent = time.perf_counter() - began
    record["latency_ms"] = round(spent * 1e3, 2)
    return record, spent


@dataclass(kw_only=True)
class StreamOptions:
    """What `cmmsf-run stream` was asked; the defaults are the command's (cmmsf/cli/run_commands.py)."""

    source: str
    settings: RunSettings
    window: float
    hop: float
    connect_timeout: float
    read_timeout: float
    transcript: Path | None = None
    realtime: bool = False
    out: Path | None = None
    overwrite: bool = False
    """Replace an `out` that already holds results (refused without it)."""
    plot: Path | None = None
    view: ViewOptions | None = None
    """Serve the live page (`--view`) while the stream plays."""


@dataclass(kw_only=True)
class ViewOptions:
    address: str
    port: int
    open_browser: bool = True
    keep: bool = False
    """Keep the page up after the source ends, until Ctrl-C."""


def stream_summary(records: list[dict], busy: float) -> dict:
    """What the stream cost: windows, media seconds, busy seconds, real-time factor, per-stage p50/p90."""
    media = max((r["end_s"] for r in records), default=0.0)
    stages: dict[str, list[float]] = {}
    for record in records:
        for stage, ms in record.get("stage_ms", {}).items():
            stages.setdefault(stage, []).append(ms)
    stages["window"] = [r["latency_ms"] for r in records if "latency_ms" in r]
    return {"windows": len(records), "media_s": round(media, 3), "busy_s": round(busy, 3),
            "real_time_factor": round(busy / media, 4) if media else None,
            "stage_ms": {stage: {k: v for k, v in percentiles(ms).items() if k != "p99"}
                         for stage, ms in stages.items() if ms}}


def _open_view(view, opts: StreamOptions, pipeline: Pipeline, console: Console) -> None:
    """Start the live page and say where it is (and open it in a browser where asked)."""
    view.start({"source": Path(opts.source).name if not is_live(opts.source) else opts.source,
                "duration_s": None if is_live(opts.source) else media_duration(opts.source),
                "window_s": opts.window, "hop_s": opts.hop,
                "backend": f"{pipeline.backend.label} on {pipeline.backend.provider}"})
    console.print(f"view: {view.url}", highlight=False)
    if opts.view.open_browser:
        import webbrowser

        webbrowser.open(view.url)


def _hold_view(view, console: Console) -> None:
    """--keep-view: the page stays up after the source ended, until Ctrl-C (which ends it cleanly)."""
    console.print(f"the stream ended; the view stays at {view.url}: Ctrl-C to stop", highlight=False)
    try:
        while True:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


def run_stream(opts: StreamOptions, console: Console) -> list[dict]:
    """Windows of `opts.source` as they arrive: JSON lines on stdout (and `--out`), the live page
    (`--view`), a timing line at the end.

    Inputs are checked before anything loads: the transcript (a regular file under the size cap), the
    results file (held for the run, as `infer` holds its own) and the view's port (bound at once)."""
    transcript = _sidecar_transcript(opts.source, opts.transcript)
    # the same JSON-lines writer as infer's, to standard output and (locked) to --out
    writers = [ResultWriter(STDOUT, resume=False)]
    if opts.out and not writes_to_stdout(opts.out):
        writers.append(ResultWriter(opts.out, resume=False, overwrite=opts.overwrite))
    sinks = Sinks(list(writers))
    pipeline = view = None
    if opts.view:
        from .view import ViewServer

        view = ViewServer(opts.view.address, opts.view.port)  # binds the port now: a taken one fails first
        sinks.sinks.append(view)  # closed with the others: a view that never started still frees its port
    if opts.plot:
        sinks.sinks.append(TimelinePlot(opts.plot, f"{Path(opts.source).name}: sentiment per {opts.window:g} s "
                                                   "window"))
    records, busy, started = [], 0.0, time.perf_counter()
    try:
        pipeline = Pipeline.load(opts.settings)
        console.print(f"backend: {pipeline.backend.label} on {pipeline.backend.provider}", highlight=False)
        for writer in writers:
            writer.start()
        if view:
            _open_view(view, opts, pipeline, console)
        for record, busy in iter_windows(pipeline, opts.source, opts.window, opts.hop, transcript, opts.realtime,
                                         opts.connect_timeout, opts.read_timeout,
                                         on_frame=view.frame if view else None):
            sinks.write(record)
            records.append(record)
        summary = stream_summary(records, busy)
        if summary["media_s"]:
            console.print(f"{len(records)} windows over {summary['media_s']:.1f} s of media; processing took "
                          f"{busy:.2f} s (real-time factor {summary['real_time_factor']:.3f}); "
                          f"wall {time.perf_counter() - started:.1f} s", highlight=False)
        sinks.finish(summary)
        if opts.plot:
            console.print(f"timeline: {opts.plot}")
        if view and opts.view.keep:
            _hold_view(view, console)
    finally:
        sinks.close()
        if pipeline:
            pipeline.close()
    return records
