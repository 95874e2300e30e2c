"""Log-mel features in numpy at the paper's 12.5 Hz (§4.2), identical for training and deployment.

A standard 25 ms / 10 ms STFT and an HTK mel filterbank, then groups of frames are averaged down to
`frame_rate_hz` steps (8 frames at 12.5 Hz) and each clip is normalised per mel band, which makes the
features independent of recording gain.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

N_FFT, WIN, HOP = 512, 400, 160  # at 16 kHz: 32 ms FFT, 25 ms window, 10 ms hop


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_mels: int, n_fft: int = N_FFT) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters evenly spaced on the HTK mel scale."""
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(20.0)), _hz_to_mel(np.array(sample_rate / 2)),
                                   n_mels + 2))
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - low) / (centre - low)
    falling = (high - bins[None, :]) / (high - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def mel_frames(wave: np.ndarray, sample_rate: int, n_mels: int, first: int = 0) -> np.ndarray:
    """Log-mel of every complete 25 ms frame from frame index `first` on: [frames, n_mels]."""
    count = 1 + (len(wave) - WIN) // HOP if len(wave) >= WIN else 0
    if count <= first:
        return np.zeros((0, n_mels), dtype=np.float32)
    index = np.arange(WIN)[None, :] + HOP * np.arange(first, count)[:, None]
    spectrum = np.abs(np.fft.rfft(wave[index] * np.hanning(WIN).astype(np.float32), n=N_FFT)) ** 2
    return np.log(spectrum @ mel_filterbank(sample_rate, n_mels).T + 1e-6).astype(np.float32)


def frames_per_step(sample_rate: int, frame_rate_hz: float) -> int:
    """How many 10 ms frames one model step averages (8 at 12.5 Hz)."""
    return max(1, int(round(sample_rate / HOP / frame_rate_hz)))


def normalise(steps: np.ndarray) -> np.ndarray:
    """Per-band mean/variance normalisation over a clip (or a streaming window)."""
    return ((steps - steps.mean(axis=0)) / (steps.std(axis=0) + 1e-3)).astype(np.float32)


def log_mel(wave: np.ndarray, sample_rate: int, n_mels: int, frame_rate_hz: float) -> np.ndarray:
    """[steps, n_mels] float32 at `frame_rate_hz`; at least one step even for a tiny clip."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if len(wave) < WIN:
        wave = np.pad(wave, (0, WIN - len(wave)))
    frames = mel_frames(wave, sample_rate, n_mels)
    group = frames_per_step(sample_rate, frame_rate_hz)
    steps = len(frames) // group
    pooled = (frames[: steps * group].reshape(steps, group, n_mels).mean(axis=1) if steps
              else frames.mean(axis=0, keepdims=True))
    return normalise(pooled)


class StreamingLogMel:
    """The same features computed as audio arrives: each 10 ms frame and each step exactly once.

    `window(start, end)` returns the steps inside a time span, normalised over that span, so a
    streaming window sees what `log_mel` would give for the same audio cut out as a clip.
    """

    def __init__(self, sample_rate: int, n_mels: int, frame_rate_hz: float):
        self.sample_rate, self.n_mels, self.rate = sample_rate, n_mels, frame_rate_hz
        self.group = frames_per_step(sample_rate, frame_rate_hz)
        self.wave = np.zeros(0, dtype=np.float32)
        self.offset = 0  # samples dropped from the front of self.wave
        self.frames_done = 0
        self.pending = np.zeros((0, n_mels), dtype=np.float32)
        self.steps: list[np.ndarray] = []
        self.steps_dropped = 0

    def push(self, chunk: np.ndarray) -> None:
        self.wave = np.concatenate([self.wave, chunk.astype(np.float32, copy=False)])
        local_first = self.frames_done - self.offset // HOP
        new = mel_frames(self.wave, self.sample_rate, self.n_mels, local_first)
        self.frames_done += len(new)
        self.pending = np.concatenate([self.pending, new])
        while len(self.pending) >= self.group:
            self.steps.append(self.pending[: self.group].mean(axis=0))
            self.pending = self.pending[self.group:]
        drop = (self.frames_done - self.offset // HOP) * HOP  # samples no future frame starts in
        if drop > 0:
            self.wave, self.offset = self.wave[drop:], self.offset + drop

    @property
    def seconds(self) -> float:
        """Media time covered by the steps made so far (forgotten ones included)."""
        return (self.steps_dropped + len(self.steps)) / self.rate

    @property
    def held_steps(self) -> int:
        """Steps held for the next windows."""
        return len(self.steps)

    def window(self, start_s: float, end_s: float) -> np.ndarray | None:
        first = int(start_s * self.rate) - self.steps_dropped
        last = min(int(end_s * self.rate) - self.steps_dropped, len(self.steps))
        first = max(first, 0)
        return normalise(np.stack(self.steps[first:last])) if last > first else None

    def forget_before(self, start_s: float) -> None:
        """Drop the steps before `start_s`: no later window reads them, so memory stays flat."""
        drop = min(max(0, int(start_s * self.rate) - self.steps_dropped), len(self.steps))
        del self.steps[:drop]
        self.steps_dropped += drop


class StreamingWave:
    """The raw samples of a stream that no window has finished with: a window's audio cut out as a clip's
    would be (for voice-activity detection, the silence rule and the Whisper front-end)."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self.wave = np.zeros(0, np.float32)
        self.offset = 0
        """Samples dropped from the front of self.wave."""

    def push(self, chunk: np.ndarray) -> None:
        self.wave = np.concatenate([self.wave, np.asarray(chunk, np.float32)])

    @property
    def seconds(self) -> float:
        return (self.offset + len(self.wave)) / self.sample_rate

    def window(self, start_s: float, end_s: float) -> np.ndarray | None:
        """The samples in [start_s, end_s), None when none have arrived."""
        first = max(int(start_s * self.sample_rate) - self.offset, 0)
        last = min(int(end_s * self.sample_rate) - self.offset, len(self.wave))
        return self.wave[first:last] if last > first else None

    def forget_before(self, start_s: float) -> None:
        drop = min(max(0, int(start_s * self.sample_rate) - self.offset), len(self.wave))
        self.wave, self.offset = self.wave[drop:], self.offset + drop


SILENCE_PEAK = 1e-4
"""Audio whose loudest sample stays below this (-80 dBFS) carries nothing to hear: absent."""


def audible(wave: np.ndarray | None, sample_rate: int) -> bool:
    """At least 20 ms of audio whose loudest sample reaches SILENCE_PEAK."""
    return wave is not None and len(wave) >= sample_rate // 50 and float(np.max(np.abs(wave))) >= SILENCE_PEAK
