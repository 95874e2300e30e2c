"""Test media made on the spot with PyAV and OpenCV: a drawn face that moves, a tone that sweeps."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def draw_face(size: int, t: float) -> np.ndarray:
    """A drawn face a CNN detector finds (YuNet scores it about 0.9 from 48 to 200 pixels): hair, an oval
    face, brows, eyes with irises, a nose and a mouth that opens and closes, softened like a photo, on a
    grey background; it sways a little over time `t`."""
    unit = size / 96.0
    px = lambda v: int(round(v * unit))  # noqa: E731
    frame = np.full((size, size, 3), 90, dtype=np.uint8)
    c, cy = size // 2 + int(4 * unit * np.sin(2 * np.pi * t)), size // 2
    cv2.ellipse(frame, (c, cy - px(6)), (px(30), px(36)), 0, 0, 360, (40, 30, 25), -1)  # hair
    cv2.rectangle(frame, (c - px(10), cy + px(20)), (c + px(10), size), (190, 150, 120), -1)  # neck
    cv2.ellipse(frame, (c, cy + px(2)), (px(24), px(31)), 0, 0, 360, (215, 175, 145), -1)  # face
    for side in (-1, 1):
        cv2.line(frame, (c + side * px(5), cy - px(10)), (c + side * px(16), cy - px(11)), (50, 35, 30),
                 max(1, px(2.5)))  # brow
        cv2.ellipse(frame, (c + side * px(10), cy - px(4)), (px(6), px(3)), 0, 0, 360, (240, 240, 240), -1)
        cv2.circle(frame, (c + side * px(10), cy - px(4)), max(1, px(2.6)), (40, 30, 25), -1)  # iris
    nose = np.array([[c, cy - px(3)], [c - px(4), cy + px(9)], [c + px(4), cy + px(9)]], np.int32)
    cv2.fillPoly(frame, [nose], (190, 145, 115))
    mouth = max(1, int(px(3) * (1 + np.sin(6 * t))))
    cv2.ellipse(frame, (c, cy + px(17)), (px(9), mouth), 0, 0, 360, (150, 60, 60), -1)
    return cv2.GaussianBlur(frame, (0, 0), max(0.6, 0.8 * unit))


def write_video(path: Path, seconds: float = 2.0, fps: int = 30, size: int = 96, audio: bool = True,
                tone_hz: float = 440.0, codec: str | None = None, audio_codec: str = "aac",
                frame_size: tuple[int, int] | None = None, audio_rate: int = 16000, face: bool | float = True) -> Path:
    """A drawn face (centred in a `frame_size` (width, height) frame if given; an empty room with
    face=False, or once `face` seconds have passed when it is a number), with a tone track unless
    audio=False; H.264 (or MPEG-4) and AAC unless other codecs are named. The suffix picks the container."""
    width, height = frame_size or (size, size)
    with av.open(str(path), "w") as container:
        codec = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
        video = container.add_stream(codec, rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p"
        if codec == "libx264" and width * height > 2_000_000:
            video.options = {"preset": "ultrafast"}  # 8K and beyond: seconds, not minutes
        sound = None
        if audio:
            sound = container.add_stream(audio_codec, rate=audio_rate)
            sound.layout = "mono"
            if audio_codec != "aac":
                sound.bit_rate = 64000  # wmav2 will not open without one
        for i in range(int(seconds * fps)):
            shown = face is True or (face is not False and i / fps < face)
            picture = draw_face(size, i / fps) if shown else np.full((size, size, 3), 90, np.uint8)
            if (width, height) != (size, size):
                canvas = np.full((height, width, 3), 90, np.uint8)
                top, left = (height - size) // 2, (width - size) // 2
                canvas[top: top + size, left: left + size] = picture
                picture = canvas
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            rate, chunk = audio_rate, sound.codec_context.frame_size or 1024
            t = np.arange(int(seconds * rate)) / rate
            wave = (0.3 * np.sin(2 * np.pi * tone_hz * t * (1 + 0.2 * t))).astype(np.float32)
            sample_format = sound.codec_context.format.name
            for start in range(0, len(wave), chunk):
                block = wave[start: start + chunk]
                if sample_format != "flt":  # e.g. mp2 and wmav2 take other sample formats: let FFmpeg convert
                    frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
                    frame.sample_rate = rate
                    frame = av.AudioResampler(format=sample_format, layout="mono", rate=rate).resample(frame)[0]
                else:
                    frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


def write_wav(path: Path, seconds: float = 1.5, rate: int = 44100, tone_hz: float = 300.0,
              amplitude: float = 0.4) -> Path:
    """Stereo 16-bit PCM WAV at another rate than the model's, to exercise resampling (amplitude 0: silence)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "stereo"
        t = np.arange(int(seconds * rate)) / rate
        tone = (amplitude * np.sin(2 * np.pi * tone_hz * t) * 32767).astype(np.int16)
        interleaved = np.stack([tone, tone], axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def transcript_clips(folder: Path, count: int) -> Path:
    """`count` transcript-only clips c0, c1, … (zero-padded to one width) in `folder`, alternately bad and good."""
    folder.mkdir(parents=True, exist_ok=True)
    width = len(str(count - 1))
    for n in range(count):
        (folder / f"c{n:0{width}d}.txt").write_text(f"clip {n} was {'good' if n % 2 else 'bad'}")
    return folder
