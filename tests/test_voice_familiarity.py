"""Voices unlike those the model learned are left out (cmmsf/inputs/familiarity.py): fitted on generated
voices, carried and sealed by the engine folder, applied by infer and by the evaluator."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cmmsf.inputs.errors import DataError
from cmmsf.inputs.familiarity import UNFAMILIAR, VOICE_FILE, VoiceFamiliarity, fit_familiarity
from cmmsf.inputs.features import ClipInputs

from .media import write_wav


def _voices(rng: np.random.Generator, count: int, shift: float = 0.0, width: int = 12) -> list[np.ndarray]:
    """Clips of 30 steps: a few strong shared directions (one studio) plus noise; `shift` moves the studio."""
    basis = np.random.default_rng(99).standard_normal((3, width))
    return [(rng.standard_normal(3) @ basis + shift + 0.3 * rng.standard_normal((30, width))) for _ in range(count)]


def test_the_bound_holds_the_dev_voices_and_a_voice_from_elsewhere_is_left_out_with_its_reason():
    rng = np.random.default_rng(0)
    stats = fit_familiarity(_voices(rng, 200), _voices(rng, 40))
    dev = np.array([stats.ratio(v) for v in _voices(rng, 40)])
    elsewhere = np.array([stats.ratio(v) for v in _voices(rng, 40, shift=1.5)])
    assert np.mean(dev <= 1) >= 0.95 and np.median(dev) < 0.5
    assert np.all(elsewhere > 1) and np.median(elsewhere) > 5

    heard = stats.check(ClipInputs("near", {"text": None, "audio": _voices(rng, 1)[0], "video": None}))
    assert heard.arrays["audio"] is not None and 0 < heard.notes["voice_familiarity"] <= 1
    left = stats.check(ClipInputs("far", {"text": None, "audio": _voices(rng, 1, shift=1.5)[0], "video": None}))
    assert left.arrays["audio"] is None and left.absent["audio"].startswith(UNFAMILIAR)
    assert left.notes["voice_familiarity"] > 1


def test_statistics_round_trip_and_a_file_that_is_not_one_is_a_data_error(tmp_path):
    rng = np.random.default_rng(1)
    stats = fit_familiarity(_voices(rng, 50), _voices(rng, 10))
    loaded = VoiceFamiliarity.load(stats.save(tmp_path / VOICE_FILE))
    probe = _voices(rng, 1, shift=0.5)[0]
    assert loaded.ratio(probe) == pytest.approx(stats.ratio(probe), rel=1e-4)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="not a voice familiarity file"):
        VoiceFamiliarity.load(tmp_path / "bad.safetensors")
    with pytest.raises(DataError, match="needs training and dev voices"):
        fit_familiarity(_voices(rng, 1), [])


def _tone_wave(path, hz: float, rate: int = 16000) -> np.ndarray:
    from cmmsf.inputs.media import decode_audio

    return decode_audio(write_wav(path, seconds=1.5, tone_hz=hz), rate)


def test_engines_carry_the_statistics_sealed_and_infer_leaves_out_a_voice_unlike_the_training_ones(
        tmp_path, tiny_checkpoint, tiny_config):
    """Fitted on low tones, a low tone is heard and a whistle is left out (absent, with why); a changed file is refused."""
    from rich.console import Console

    from cmmsf.export.build import BuildOptions, build
    from cmmsf.export.profiles import ShapeProfile
    from cmmsf.inputs.features import Preprocessor
    from cmmsf.runtime.engine_folder import EngineFolder, ManifestError
    from cmmsf.runtime.pipeline import Pipeline
    from cmmsf.runtime.settings import RunSettings

    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "ck")
    front = Preprocessor(tiny_config.input_spec())
    train = [front.audio(_tone_wave(tmp_path / f"t{hz}.wav", hz)) for hz in range(180, 420, 12)]
    dev = [front.audio(_tone_wave(tmp_path / f"d{hz}.wav", hz)) for hz in (205, 265, 335, 395)]
    fit_familiarity(train, dev).save(checkpoint / VOICE_FILE)
    engines = tmp_path / "engines"
    build(BuildOptions(checkpoint=str(checkpoint), out=engines,
                       profile=ShapeProfile((1, 1, 2), {"text": 16, "audio": 40, "video": 30})), Console(quiet=True))
    manifest = json.loads((engines / "manifest.json").read_text())
    assert manifest["voice"]["file"] == VOICE_FILE and VOICE_FILE in manifest["model"]["checkpoint_sha256"]

    clips = tmp_path / "clips"
    clips.mkdir()
    write_wav(clips / "tone.wav", seconds=1.5, tone_hz=300)
    write_wav(clips / "whistle.wav", seconds=1.5, tone_hz=1500)  # far above every training voice
    for name in ("tone", "whistle"):
        (clips / f"{name}.txt").write_text("a plain sentence")
    records = {r["id"]: r for r in Pipeline.load(engines).predict([clips])}
    assert "audio" not in records["tone"]["absent"] and records["tone"]["voice_familiarity"] <= 1
    assert records["whistle"]["absent"]["audio"].startswith(UNFAMILIAR) and records["whistle"]["voice_familiarity"] > 1
    assert records["whistle"]["gates"]["audio"] == 0.0
    heard_anyway = Pipeline.load(RunSettings(engines=engines, voice_check=False)).predict([clips / "whistle.wav"])[0]
    assert "audio" not in heard_anyway["absent"] and "voice_familiarity" not in heard_anyway

    (engines / VOICE_FILE).write_bytes((engines / VOICE_FILE).read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ManifestError, match="does not match its sha256"):
        EngineFolder.open(engines).voice_familiarity()
    from cmmsf.export.inspect import inspect_folder

    assert inspect_folder(EngineFolder.open(engines))["files"]["voice"]["status"] == "sha256 mismatch"
    assert not EngineFolder.open(engines).built_from(tmp_path / "elsewhere")


def test_voice_stats_fits_a_checkpoint_and_eval_leaves_out_another_corpus_counting_it_as_0(
        tmp_path, tiny_checkpoint, monkeypatch):
    """`cmmsf-train voice-stats` on a generated corpus, then `cmmsf-train eval`: the same corpus's unseen actors
    are heard, a corpus of voices eight times higher is left out (100%) and its neutral voices score 0."""
    from typer.testing import CliRunner

    from cmmsf.cli import train_app

    from . import test_sources

    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "ck")
    near = test_sources.write_ravdess(tmp_path / "ravdess")
    monkeypatch.setattr(test_sources, "EMOTIONS", {k: 8 * v for k, v in test_sources.EMOTIONS.items()})
    far = test_sources.write_ravdess(tmp_path / "emodb", actors=range(3, 12))
    runner = CliRunner()
    fitted = runner.invoke(train_app, ["voice-stats", "--checkpoint", str(checkpoint), "--data", str(near)])
    assert fitted.exit_code == 0, fitted.output
    assert (checkpoint / VOICE_FILE).is_file() and "48 training voices, 6 dev voices" in fitted.output

    def rows(*extra: str) -> dict[str, dict]:
        out = tmp_path / f"rows{len(extra)}.json"
        done = runner.invoke(train_app, ["eval", "--checkpoint", str(checkpoint), "--data", str(near), "--data",
                                         str(far), "--split", "test", "--modalities", "audio", "--no-gates",
                                         "--json", str(out), *extra])
        assert done.exit_code == 0, done.output
        return {r["source"]: r for r in json.loads(out.read_text())}

    checked = rows()
    assert checked["emodb"]["voice_left_out"] == 100.0 and checked["emodb"]["neutral_abs_median"] == 0.0
    assert checked["ravdess"]["voice_left_out"] <= 50.0
    heard = rows("--no-voice-check")
    assert "voice_left_out" not in heard["emodb"] and heard["emodb"]["neutral_abs_median"] > 0


def test_a_voice_whose_features_are_not_numbers_is_left_out_not_heard():
    """NaN compares false with every bound: garbage samples that overflow the features must not pass."""
    rng = np.random.default_rng(1)
    stats = fit_familiarity(_voices(rng, 200), _voices(rng, 40))
    broken = _voices(rng, 1)[0]
    broken[3] = np.nan
    item = stats.check(ClipInputs("nan", {"text": None, "audio": broken, "video": None}))
    assert item.arrays["audio"] is None and "not finite" in item.absent["audio"]
    assert item.notes["voice_familiarity"] is None
