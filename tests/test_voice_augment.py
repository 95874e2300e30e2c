"""Recording-channel augmentation of training voices: each effect does what it says, and the speech loader
gives train voices (only) their channel variants, drawn at random when a clip is read for training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmmsf.config import preset
from cmmsf.data.examples import Skipped
from cmmsf.data.sources import load_sources_config, load_speech
from cmmsf.data.voice_augment import _band_limit, _noise, _reverb, recording_variant

from .test_sources import write_ravdess

RATE = 16000
CHANNELS = Path(__file__).resolve().parents[1] / "experiments" / "recipes" / "sources_channels.json"


def tone(hz: float, seconds: float = 1.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(int(RATE * seconds)) / RATE)).astype(np.float32)


def band_energy(wave: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / RATE)
    return float(spectrum[(freqs >= low) & (freqs <= high)].sum())


def test_a_band_limit_keeps_the_band_and_removes_the_rest():
    wave = tone(1000) + tone(6000)
    out = _band_limit(wave.astype(np.float64), RATE, 300, 3400)
    np.testing.assert_allclose(band_energy(out, 900, 1100), band_energy(wave, 900, 1100), rtol=0.01)
    assert band_energy(out, 5500, 6500) < 1e-6 * band_energy(wave, 5500, 6500)


def test_noise_is_added_at_the_asked_signal_to_noise_ratio():
    wave = tone(440).astype(np.float64)
    rng = np.random.default_rng(3)
    for snr_db in (5.0, 20.0):
        noisy = _noise(wave, snr_db, rng)
        measured = 10 * np.log10(np.mean(wave ** 2) / np.mean((noisy - wave) ** 2))
        assert abs(measured - snr_db) < 0.5, (snr_db, measured)


def test_a_room_keeps_the_level_and_spreads_a_click_over_its_reverberation_time():
    click = np.zeros(RATE, np.float64)
    click[100] = 1.0
    wet = _reverb(click, RATE, 0.5, np.random.default_rng(0))
    np.testing.assert_allclose(np.sqrt(np.mean(wet ** 2)), np.sqrt(np.mean(click ** 2)), rtol=1e-6)
    tail = np.abs(wet[100 + int(0.05 * RATE): 100 + int(0.4 * RATE)])
    assert (tail > 1e-4).mean() > 0.5  # the click now rings on for hundreds of milliseconds


def test_a_variant_is_a_clean_seeded_wave_of_the_same_length():
    wave = tone(300, 0.8) + tone(5000, 0.8)
    first = [recording_variant(wave, RATE, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])  # seeded: the same channel twice
    rng = np.random.default_rng(1)
    variants = [recording_variant(wave, RATE, rng) for _ in range(30)]
    assert all(v.dtype == np.float32 and v.shape == wave.shape and np.isfinite(v).all()
               and np.abs(v).max() <= 1.0 for v in variants)
    highs = np.array([band_energy(v, 4800, 5200) / max(band_energy(v, 280, 320), 1e-12) for v in variants])
    ratio = band_energy(wave, 4800, 5200) / band_energy(wave, 280, 320)
    assert (highs < 0.1 * ratio).sum() >= 5  # some channels lose the high band (telephone, codec)
    assert (np.abs(highs / ratio - 1) < 0.3).sum() >= 3  # and some keep it


def test_train_voices_carry_their_channel_variants_and_dev_voices_none(tmp_path):
    folder = write_ravdess(tmp_path / "ravdess", actors=range(1, 21))
    config, sources = preset("tiny"), load_sources_config(CHANNELS)
    wanted = sources["ravdess"]["channel_variants"]
    assert wanted == 3 and load_sources_config()["ravdess"].get("channel_variants", 0) == 0
    # the rest is sources.json's, untouched by the file that extends it
    assert {k: v for k, v in sources["ravdess"].items() if k != "channel_variants"} == load_sources_config()["ravdess"]
    assert sources["faces"] == load_sources_config()["faces"]
    train = load_speech(folder, "ravdess", "train", config, sources, Skipped())
    dev = load_speech(folder, "ravdess", "dev", config, sources, Skipped())
    assert train and dev
    counts = [len(it.variants) for it in train]
    assert max(counts) == wanted and all(not it.variants for it in dev)
    # a channel that leaves nothing to hear is dropped (a high-pass above a 180 Hz generated tone)
    assert sum(c == wanted for c in counts) >= 0.75 * len(counts)
    clip = next(it for it in train if len(it.variants) == wanted)
    assert all(v.shape == clip.audio.shape for v in clip.variants)
    assert all(not np.allclose(v, clip.audio) for v in clip.variants)  # another channel, other steps
    rng = np.random.default_rng(0)
    drawn = {next(i for i, known in enumerate((clip.audio, *clip.variants)) if known is heard)
             for heard in (clip.sample(rng).arrays["audio"] for _ in range(60))}
    assert drawn == set(range(wanted + 1))  # the original and every variant are read in training
    assert clip.sample().arrays["audio"] is clip.audio  # evaluation reads the voice as recorded
