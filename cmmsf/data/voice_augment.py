"""Recording-condition augmentation of training voices: what another microphone, room or line does.

Why: a voice branch trained on one corpus learns its studio (RAVDESS: one room, one microphone, one
level) as much as the emotion, and another corpus then reads as one strong emotion. Each training clip
gets a few variants with random gain, band-limiting (telephone to wide band), reverberation, a codec-like
narrow band resample and background noise at a random SNR, so the same emotion is heard through
different channels. Plain numpy, seeded: the same clip and seed give the same variants.
"""

from __future__ import annotations

import numpy as np


def _band_limit(wave: np.ndarray, sample_rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    spectrum = np.fft.rfft(wave)
    freqs = np.fft.rfftfreq(len(wave), 1.0 / sample_rate)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0
    return np.fft.irfft(spectrum, n=len(wave))


def _reverb(wave: np.ndarray, sample_rate: int, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: exponentially decaying noise (-60 dB at rt60), direct path first, mixed wet/dry."""
    taps = max(2, int(rt60_s * sample_rate))
    decay = np.exp(-6.9 * np.arange(taps) / taps)
    response = rng.standard_normal(taps) * decay * 0.3
    response[0] = 1.0
    wet = np.fft.irfft(np.fft.rfft(wave, len(wave) + taps) * np.fft.rfft(response, len(wave) + taps))[: len(wave)]
    return wet * (np.sqrt(np.mean(wave ** 2)) / max(np.sqrt(np.mean(wet ** 2)), 1e-9))


def _noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White or pink-ish (integrated, then high-passed by differencing the mean) noise at snr_db."""
    noise = rng.standard_normal(len(wave))
    if rng.random() < 0.5:
        noise = np.cumsum(noise)
        noise -= np.convolve(noise, np.ones(400) / 400, mode="same")
    power = np.mean(wave ** 2)
    return wave + noise * np.sqrt(power / max(np.mean(noise ** 2), 1e-12) / 10 ** (snr_db / 10))


def recording_variant(wave: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One random channel for `wave` (float32 mono in [-1, 1]): every effect is applied with some chance."""
    out = wave.astype(np.float64)
    if rng.random() < 0.5:
        out = _band_limit(out, sample_rate, rng.uniform(50, 400), rng.uniform(3000, sample_rate / 2))
    if rng.random() < 0.4:
        out = _reverb(out, sample_rate, rng.uniform(0.15, 0.7), rng)
    if rng.random() < 0.25:  # a narrow-band codec: down to 8 kHz and back
        out = _band_limit(out, sample_rate, 0, 3800)
    if rng.random() < 0.6:
        out = _noise(out, rng.uniform(5, 30), rng)
    out *= 10 ** (rng.uniform(-18, 6) / 20)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
