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


def log_mel(wave: np.ndarray, sample_rate: int, n_mels: int, frame_rate_hz: float) -> np.ndarray:
    """[steps, n_mels] float32 at `frame_rate_hz`; at least one step even for a tiny clip."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if len(wave) < WIN:
        wave = np.pad(wave, (0, WIN - len(wave)))
    count = 1 + (len(wave) - WIN) // HOP
    index = np.arange(WIN)[None, :] + HOP * np.arange(count)[:, None]
    spectrum = np.abs(np.fft.rfft(wave[index] * np.hanning(WIN).astype(np.float32), n=N_FFT)) ** 2
    mel = np.log(spectrum @ mel_filterbank(sample_rate, n_mels).T + 1e-6)
    group = max(1, int(round(sample_rate / HOP / frame_rate_hz)))
    steps = max(1, count // group)
    pooled = mel[: steps * group].reshape(steps, group, n_mels).mean(axis=1) if count >= group else mel.mean(0, keepdims=True)
    return ((pooled - pooled.mean(axis=0)) / (pooled.std(axis=0) + 1e-3)).astype(np.float32)
