"""Decoding with PyAV (FFmpeg): audio to 16 kHz mono float32, video frames sampled at a fixed rate.

Works on files (mp4/mkv/mov/avi/webm/flv/ts/3gp/wmv/mpg..., wav/flac/mp3/wma/aiff...) and on
anything FFmpeg opens (URLs, devices).
Every failure becomes a MediaError with the file and FFmpeg's reason, never a traceback.

Decoding is bounded by design, whatever the file claims: a frame is scaled to `DECODE_SIDE` (its
shorter side) by FFmpeg's scaler as it leaves the decoder, so nothing holds a full-size RGB frame; a
stream whose frames exceed `MAX_FRAME_PIXELS` (8K) is refused before any frame is decoded; callers cap
frames and samples per clip (`max_frames`, `max_samples`).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import av
import numpy as np

from .errors import CmmsfError

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".flv", ".ts", ".mts", ".m2ts", ".3gp", ".3g2",
                  ".wmv", ".asf", ".mpg", ".mpeg", ".vob", ".ogv", ".mxf"}
"""Containers FFmpeg decodes that carry video (and usually audio); a file of one that FFmpeg cannot
decode is a per-clip error, never a crash."""
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus", ".wma", ".aif", ".aiff", ".amr",
                  ".au", ".caf", ".mka", ".oga"}


DECODE_SIDE = 480
"""Frames are decoded at most this big on their shorter side: the face detector works at 200 px and the
model reads 64-224 px crops, so a 480 px frame keeps every face a webcam or talking-head video shows
large enough, at a fixed cost per frame (4K frames would hold 36× the memory for nothing)."""
MAX_FRAME_PIXELS = 7680 * 4320
"""Larger frames (beyond 8K UHD) are refused: a few hundred KB of H.264 can claim 10000×10000 frames,
and the decoder's own buffers of such frames take gigabytes before any scaling."""


class MediaError(CmmsfError, RuntimeError):
    """A clip that cannot be decoded; the message names the file and says why."""


def ffmpeg_reason(err: BaseException) -> str:
    """FFmpeg's reason in plain words ("Invalid data found when processing input"), without the errno
    and the path PyAV puts around it."""
    return getattr(err, "strerror", None) or str(err)


@dataclass(frozen=True)
class InMemoryMedia:
    """An encoded clip held in memory (a server's request body): decoded as a file would be, from the
    bytes themselves, so nothing is written to disk and errors name the clip, never a path."""

    name: str
    data: bytes


MediaSource = Union[str, Path, InMemoryMedia]
"""What the decoders read: a file's path, or a clip's bytes."""


def media_name(source: MediaSource) -> str:
    """How messages name a source: the file's name, or the in-memory clip's own name."""
    return source.name if isinstance(source, InMemoryMedia) else Path(str(source)).name


def _open(source: MediaSource):
    try:
        if isinstance(source, InMemoryMedia):
            buffer = io.BytesIO(source.data)
            buffer.name = source.name  # FFmpeg's messages and `container.name` then name the clip
            return av.open(buffer)
        return av.open(str(source))
    except (av.error.FFmpegError, OSError) as err:
        raise MediaError(f"cannot open {media_name(source)}: {ffmpeg_reason(err)}") from None


def decode_size(width: int, height: int, side: int = DECODE_SIDE) -> tuple[int, int]:
    """The (width, height) a frame is decoded to: its shorter side at most `side`, aspect kept, even."""
    scale = min(1.0, side / max(1, min(width, height)))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def check_geometry(width: int, height: int, name: str) -> None:
    """Refuse frames no camera makes, before decoding one (a decompression bomb claims such sizes)."""
    if width * height > MAX_FRAME_PIXELS:
        raise MediaError(f"{name} has {width}×{height} video frames, larger than 8K (7680×4320); not decoded")


def rgb_frame(frame: av.VideoFrame, name: str) -> np.ndarray:
    """One decoded frame as RGB uint8 [H, W, 3] at `decode_size`, scaled by FFmpeg from the decoder's own
    format (no full-size RGB copy)."""
    check_geometry(frame.width, frame.height, name)
    width, height = decode_size(frame.width, frame.height)
    return frame.to_ndarray(format="rgb24", width=width, height=height)


def decode_audio(source: MediaSource, sample_rate: int = 16000, max_samples: int | None = None,
                 stopped: list[str] | None = None) -> np.ndarray | None:
    """Mono float32 samples at `sample_rate`; None when the file has no audio track.

    With `max_samples`, decoding stops as soon as more than that many samples are held (memory stays
    bounded whatever the clip's length; a result longer than max_samples tells the caller it was cut).
    With `stopped`, an error after some audio was decoded (a file cut short) ends decoding there: what
    was decoded is returned and the reason appended to `stopped`.
    """
    with _open(source) as container:
        if not container.streams.audio:
            return None
        chunks, total = [], 0
        try:
            for chunk in iter_audio(container, sample_rate):
                chunks.append(chunk)
                total += len(chunk)
                if max_samples is not None and total > max_samples:
                    break
        except MediaError as err:
            if stopped is None or not total:
                raise
            stopped.append(f"{err} after {total / sample_rate:.1f} s")
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def media_duration(source: MediaSource) -> float | None:
    """The container's stated duration in seconds (header only, nothing decoded), or None."""
    with _open(source) as container:
        return container.duration / av.time_base if container.duration else None


class MonoResampler:
    """Any decoded audio frame → float32 mono chunks at `sample_rate`; call with None at the end to flush."""

    def __init__(self, sample_rate: int):
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)

    def __call__(self, frame: av.AudioFrame | None) -> list[np.ndarray]:
        return [out.to_ndarray().reshape(-1).astype(np.float32, copy=False) for out in self.resampler.resample(frame)]


class FrameSampler:
    """Keeps the first decoded frame at or after each tick k / fps (30 fps sampled at 15 Hz: every other)."""

    def __init__(self, fps: float):
        self.fps, self.next_tick = fps, 0.0

    def keep(self, t: float) -> bool:
        if t + 1e-6 < self.next_tick:
            return False
        self.next_tick = (int(t * self.fps + 1e-6) + 1) / self.fps
        return True


def iter_audio(container, sample_rate: int = 16000) -> Iterator[np.ndarray]:
    """Resampled mono chunks of the first audio stream as FFmpeg decodes them."""
    resample = MonoResampler(sample_rate)
    try:
        for frame in container.decode(audio=0):
            yield from resample(frame)
        yield from resample(None)
    except av.error.FFmpegError as err:
        raise MediaError(f"audio decoding failed in {Path(container.name).name}: {ffmpeg_reason(err)}") from None


def decode_video(source: MediaSource, fps: float, max_frames: int | None = None,
                 stopped: list[str] | None = None) -> tuple[np.ndarray, float] | None:
    """RGB uint8 frames [T, H, W, 3] sampled at `fps`, and the time after the last frame kept.

    None when the file has no video stream. Frames are chosen by FrameSampler; with `max_frames`,
    decoding stops once that many are kept (memory bounded whatever the clip's length). `stopped` as
    in `decode_audio`.
    """
    with _open(source) as container:
        if not container.streams.video:
            return None
        frames, last_time = [], 0.0
        try:
            for time_s, frame in iter_video(container, fps):
                frames.append(frame)
                last_time = time_s
                if max_frames and len(frames) >= max_frames:
                    break
        except MediaError as err:
            if stopped is None or not frames:
                raise
            stopped.append(f"{err} after {last_time + 1.0 / fps:.1f} s")
        if not frames:
            raise MediaError(f"{media_name(source)} has a video stream but no decodable frame")
        return np.stack(frames), last_time + 1.0 / fps


def iter_video(container, fps: float) -> Iterator[tuple[float, np.ndarray]]:
    """(time in seconds, RGB frame) of the first video stream at `fps`, as FFmpeg decodes them."""
    stream, name = container.streams.video[0], Path(container.name).name
    check_geometry(stream.codec_context.width, stream.codec_context.height, name)
    stream.thread_type = "AUTO"
    sampler = FrameSampler(fps)
    try:
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else sampler.next_tick
            if sampler.keep(t):
                yield t, rgb_frame(frame, name)
    except av.error.FFmpegError as err:
        raise MediaError(f"video decoding failed in {name}: {ffmpeg_reason(err)}") from None
