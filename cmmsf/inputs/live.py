"""Reading a file, camera or network source as it plays, in a background thread.

PyAV waits inside FFmpeg while it connects or waits for data, and Python cannot deliver Ctrl-C there:
a stalled network source held the command until its timeout ran out. Here opening and decoding run in
a daemon thread that hands resampled audio chunks and sampled frames over a bounded queue (which also
keeps memory flat when inference is slower than the source); the caller's thread waits in short
slices, so Ctrl-C ends the command at once. Cameras and URLs get a connect and a read timeout; a source
that goes quiet for longer than the read timeout ends with a MediaError. There is no reconnect.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .media import FrameSampler, MediaError, MonoResampler, ffmpeg_reason, rgb_frame

POLL_S = 0.2
QUEUE_ITEMS = 256
_READERS: set[threading.Thread] = set()


def readers_still_running() -> bool:
    """True while a reader thread is alive, e.g. still blocked inside FFmpeg after Ctrl-C.

    Such a thread must not outlive the interpreter (FFmpeg's interrupt callback takes the GIL during
    shutdown and crashes it): the CLI then leaves with os._exit once its output is flushed."""
    return any(thread.is_alive() for thread in _READERS)


@dataclass
class AudioChunk:
    time_s: float
    samples: np.ndarray
    """Mono float32 at the requested sample rate."""


@dataclass
class Frame:
    time_s: float
    rgb: np.ndarray
    """uint8 [H, W, 3], one of the frames FrameSampler keeps at the requested fps."""


def is_live(source: str) -> bool:
    """A camera index or a URL (anything else is a file path)."""
    return source.isdigit() or "://" in source


def open_source(source: str, connect_timeout: float = 10.0, read_timeout: float = 10.0):
    """A camera index (`0` → /dev/video0 through v4l2), a URL or a file path, opened with PyAV."""
    timeout = (connect_timeout, read_timeout)
    try:
        if source.isdigit():
            return av.open(f"/dev/video{source}", format="v4l2", timeout=timeout)
        if not is_live(source) and not Path(source).is_file():
            raise MediaError(f"no such file: {source}")
        return av.open(source, timeout=timeout if is_live(source) else None)
    except av.error.ExitError:
        raise MediaError(f"cannot open {source}: nothing within the {connect_timeout:g} s connect timeout") from None
    except (av.error.FFmpegError, OSError) as err:
        raise MediaError(f"cannot open {source}: {ffmpeg_reason(err)}") from None


_END = object()


def read_source(source: str, sample_rate: int, fps: float, connect_timeout: float = 10.0,
                read_timeout: float = 10.0) -> Iterator[AudioChunk | Frame]:
    """Audio chunks and sampled frames of `source` in decoding order, read in a background thread."""
    items: queue.Queue = queue.Queue(maxsize=QUEUE_ITEMS)
    stop = threading.Event()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                items.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    last_data = [time.monotonic()]
    timed_out = (f"{source} sent nothing for {read_timeout:g} s (read timeout); the stream ends here, there is no "
                 "automatic reconnect")

    def decode() -> None:
        try:
            with open_source(source, connect_timeout, read_timeout) as container:
                streams = [*container.streams.video[:1], *container.streams.audio[:1]]
                if not streams:
                    raise MediaError(f"{source} has neither audio nor video")
                resample, sampler, last = MonoResampler(sample_rate), FrameSampler(fps), 0.0
                for frame in container.decode(*streams):
                    if stop.is_set():
                        return
                    last, last_data[0] = float(frame.time or 0.0), time.monotonic()
                    if isinstance(frame, av.AudioFrame):
                        for chunk in resample(frame):
                            put(AudioChunk(last, chunk))
                    elif sampler.keep(last):
                        put(Frame(last, rgb_frame(frame, source)))
                for chunk in resample(None):  # the resampler's buffered tail
                    put(AudioChunk(last, chunk))
        except av.error.ExitError:
            put(MediaError(timed_out))
        except av.error.FFmpegError as err:
            # a read cut off by the timeout can surface as a broken packet: name the real cause
            stalled = is_live(source) and time.monotonic() - last_data[0] >= read_timeout
            reason = ffmpeg_reason(err)
            put(MediaError(f"{timed_out} (FFmpeg: {reason})" if stalled else f"decoding {source} failed: {reason}"))
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread, raised there
            put(err)
        finally:
            put(_END)

    reader = threading.Thread(target=decode, name=f"read {source}", daemon=True)
    _READERS.add(reader)
    reader.start()
    try:
        while True:
            try:
                item = items.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
