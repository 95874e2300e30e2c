"""The `whisper` audio front-end: Whisper encoder states as the audio encoder's input steps.

Whisper's encoder (tiny.en, the model the ASR front-end already loads) was pretrained on 680k hours of
speech; its states carry how something is said as well as what. It runs through CTranslate2 on the
clip's own length (no padding to 30 s: 20 ms for 4 s of audio on 2 cores), and its 50 Hz states are
averaged to the model's step rate. Training, `infer` and each `stream` window call this one function.
"""

from __future__ import annotations

import numpy as np

from .asr import SpeechRecognizer
from .audio import StreamingWave

ENCODER_HZ = 50.0
"""Whisper's encoder emits one state per 20 ms."""
MAX_FRAMES = 3000
"""Whisper hears at most 30 s (3000 log-mel frames) at once."""


def whisper_features(recognizer: SpeechRecognizer, wave: np.ndarray, frame_rate_hz: float) -> np.ndarray:
    """16 kHz mono float32 → [steps, width] float32 encoder states at `frame_rate_hz` (at least one step)."""
    import ctranslate2

    model = recognizer.model
    mel = model.feature_extractor(np.ascontiguousarray(wave, dtype=np.float32))  # [80, frames] at 100 Hz
    frames = min(mel.shape[1] - mel.shape[1] % 2, MAX_FRAMES)
    if frames < 2:
        mel, frames = np.pad(mel, ((0, 0), (0, 2 - mel.shape[1]))), 2
    states = np.asarray(model.model.encode(ctranslate2.StorageView.from_array(
        np.ascontiguousarray(mel[None, :, :frames], dtype=np.float32)), to_cpu=True))[0]
    group = max(1, int(round(ENCODER_HZ / frame_rate_hz)))
    steps = len(states) // group
    pooled = states[: steps * group].reshape(steps, group, -1).mean(axis=1) if steps else states.mean(0, keepdims=True)
    return pooled.astype(np.float32)


class StreamingWhisper:
    """The `whisper` front-end for `stream`: the same interface as StreamingLogMel.

    Keeps the raw audio no window has finished with and encodes each window's span when asked, so a
    window sees exactly what `whisper_features` gives for that audio cut out as a clip."""

    def __init__(self, recognizer: SpeechRecognizer, sample_rate: int, frame_rate_hz: float):
        self.recognizer, self.sample_rate, self.rate = recognizer, sample_rate, frame_rate_hz
        self.samples = StreamingWave(sample_rate)

    def push(self, chunk: np.ndarray) -> None:
        self.samples.push(chunk)

    @property
    def seconds(self) -> float:
        return self.samples.seconds

    @property
    def held_steps(self) -> int:
        """Audio held, in model steps (what memory holds for the next windows)."""
        return int(len(self.samples.wave) * self.rate / self.sample_rate)

    def window(self, start_s: float, end_s: float) -> np.ndarray | None:
        wave = self.samples.window(start_s, end_s)
        if wave is None or len(wave) < self.sample_rate // 50:
            return None
        return whisper_features(self.recognizer, wave, self.rate)

    def forget_before(self, start_s: float) -> None:
        self.samples.forget_before(start_s)
