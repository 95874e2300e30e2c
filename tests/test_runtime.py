"""The lean runtime: torch-free inference on real decoded media, bad clips, resume, stream, bench, eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cmmsf.cli import run_app
from cmmsf.runtime.backends import load_backend
from cmmsf.runtime.engine_folder import EngineFolder, ManifestError
from cmmsf.runtime.pipeline import Pipeline
from cmmsf.inputs.audio import StreamingLogMel, log_mel
from cmmsf.inputs.media import decode_audio, decode_video

from .media import write_video, write_wav
from .conftest import python_output

runner = CliRunner()


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """Good and bad clips side by side, as a user's folder would hold them."""
    folder = tmp_path_factory.mktemp("clips")
    write_video(folder / "happy.mp4", seconds=2.0)
    (folder / "happy.txt").write_text("i really loved this it was wonderful")
    write_wav(folder / "voice.wav", seconds=1.5)
    (folder / "voice.srt").write_text("1\n00:00:00,000 --> 00:00:01,500\nthat was <i>terrible</i>\n")
    write_video(folder / "silent.mp4", seconds=1.0, audio=False)
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (folder / "empty.mp4").write_bytes(b"")
    return folder


def records_by_id(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_decoding_resamples_and_samples_frames(tmp_path):
    video = write_video(tmp_path / "v.mp4", seconds=2.0, fps=30)
    frames, duration = decode_video(video, fps=15)
    assert frames.shape == (30, 96, 96, 3) and duration == pytest.approx(2.0, abs=0.1)
    audio = decode_audio(write_wav(tmp_path / "a.wav", seconds=1.5, rate=44100))
    assert len(audio) == pytest.approx(1.5 * 16000, rel=0.01) and audio.dtype == np.float32
    assert decode_audio(write_video(tmp_path / "mute.mp4", seconds=1.0, audio=False)) is None


def test_log_mel_rate_and_streaming_equivalence():
    rate = 16000
    t = np.arange(3 * rate) / rate
    wave = (np.sin(2 * np.pi * 220 * t) * (1 + t)).astype(np.float32)
    full = log_mel(wave, rate, 16, 12.5)
    assert full.shape == (37, 16)  # 3 s at 12.5 Hz, the last partial step dropped
    stream = StreamingLogMel(rate, 16, 12.5)
    for start in range(0, len(wave), 777):
        stream.push(wave[start: start + 777])
    np.testing.assert_allclose(stream.window(0, 3.0), full, atol=1e-3)


def test_infer_cli_scores_good_clips_and_reports_bad_ones(clip_folder, tiny_engines, tmp_path):
    out = tmp_path / "results.jsonl"
    result = runner.invoke(run_app, ["infer", str(clip_folder), "--engines", str(tiny_engines), "--out", str(out),
                                     "--batch", "2"])
    assert result.exit_code == 3, result.output  # finished, but some clips failed
    records = records_by_id(out)
    assert set(records) == {"happy", "voice", "silent", "corrupt", "empty"}
    assert records["happy"]["present"] == {"text": True, "audio": True, "video": True}
    assert records["voice"]["present"] == {"text": True, "audio": True, "video": False}
    assert records["voice"]["gates"]["video"] == 0.0
    assert records["silent"]["present"] == {"text": False, "audio": False, "video": True}
    for bad in ("corrupt", "empty"):
        assert "error" in records[bad] and "score" not in records[bad]
    for good in ("happy", "voice", "silent"):
        r = records[good]
        assert -3 <= r["score"] <= 3 and r["provider"] == "CPUExecutionProvider"
        stages = {"text_encoder", "audio_encoder", "video_encoder", "interaction", "mgf_head"}
        assert set(r["stage_ms"]) == stages | ({"vad"} if r["present"]["audio"] else set())
    assert "3 clips scored, 2 failed" in result.output


def test_resume_repeats_and_loses_nothing(clip_folder, tiny_engines, tmp_path):
    out = tmp_path / "results.jsonl"
    full = Pipeline.load(tiny_engines).predict([clip_folder])
    first = next(r for r in full if r["id"] == "happy")
    out.write_text(json.dumps(first) + "\n" + '{"id": "voice", "sco')  # killed mid-line
    result = runner.invoke(run_app, ["infer", str(clip_folder), "--engines", str(tiny_engines), "--out", str(out),
                                     "--resume"])
    assert result.exit_code == 3, result.output  # corrupt and empty clips fail again
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["id"] for r in lines]
    assert sorted(ids) == sorted({"happy", "voice", "silent", "corrupt", "empty"})  # each exactly once
    assert lines[0] == first


def test_batched_and_single_clip_scores_agree(clip_folder, tiny_engines):
    pipeline = Pipeline.load(tiny_engines)
    one = {r["id"]: r["score"] for r in pipeline.predict([clip_folder], batch_size=1) if "score" in r}
    three = {r["id"]: r["score"] for r in pipeline.predict([clip_folder], batch_size=3) if "score" in r}
    assert one.keys() == three.keys() and all(abs(one[k] - three[k]) < 2e-4 for k in one)


def test_runtime_never_imports_torch(clip_folder, tiny_engines):
    code = (
        "import sys; import cmmsf.runtime; from cmmsf.runtime.pipeline import Pipeline;"
        f"r = Pipeline.load({str(tiny_engines)!r}).predict([{str(clip_folder)!r}]);"
        "assert any('score' in x for x in r);"
        "print('torch' in sys.modules)"
    )
    assert python_output(code).strip() == "False"


def test_tampered_engine_is_refused_before_loading(tiny_engines, tmp_path):
    import shutil

    copy = tmp_path / "e"
    shutil.copytree(tiny_engines, copy)
    (copy / "text_encoder.onnx").write_bytes(b"not a model")
    with pytest.raises(ManifestError, match="text_encoder fp32"):
        load_backend("onnxruntime", EngineFolder.open(copy))


def test_missing_engine_folder_is_a_clear_error(clip_folder, tmp_path):
    result = runner.invoke(run_app, ["infer", str(clip_folder), "--engines", str(tmp_path / "none"),
                                     "--out", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "has no manifest.json: build it with `cmmsf-export build" in " ".join(result.output.split())
    assert not (tmp_path / "r.jsonl").exists()  # nothing written before the engines are known good


def test_folder_without_clips_is_a_clear_error(tiny_engines, tmp_path):
    result = runner.invoke(run_app, ["infer", str(tmp_path), "--engines", str(tiny_engines)])
    assert result.exit_code == 1 and "no clips" in result.output


def test_stream_windows_cover_the_clip(tiny_engines, tmp_path):
    video = write_video(tmp_path / "talk.mp4", seconds=3.0)
    (tmp_path / "talk.txt").write_text("this is fine")
    out, plot = tmp_path / "windows.jsonl", tmp_path / "timeline.png"
    result = runner.invoke(run_app, ["stream", str(video), "--engines", str(tiny_engines), "--window", "1.0",
                                     "--hop", "0.5", "--out", str(out), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    windows = [json.loads(line) for line in out.read_text().splitlines()]
    assert windows[0]["start_s"] == 0.0 and windows[-1]["end_s"] == pytest.approx(3.0, abs=0.1)
    assert all("score" in w and w["present"]["text"] for w in windows)
    assert [w["start_s"] for w in windows] == [0.5 * i for i in range(len(windows))]
    assert plot.stat().st_size > 1000 and "real-time factor" in result.output


WINDOW_ONLY = {"start_s", "end_s", "latency_ms"}
"""What a stream window's record has beyond a clip's: its span and its latency."""
PER_RUN = {"id", "stage_ms", "duration_s"}
"""Fields that name or time the run (a window's id is its span) rather than describe the input."""


@pytest.mark.parametrize("framing", ["face in a frame", "audio only"])
def test_a_window_over_the_whole_clip_is_the_clip(tiny_engines, tmp_path, framing):
    """One spine: `stream` with a window covering the clip gives `infer`'s score, gates and fields."""
    if framing == "audio only":
        media = write_wav(tmp_path / "talk.wav", seconds=2.0)
    else:
        media = write_video(tmp_path / "talk.mp4", seconds=2.5, frame_size=(320, 240))
    (tmp_path / "talk.txt").write_text("what a lovely surprise")
    infer_out, stream_out = tmp_path / "infer.jsonl", tmp_path / "stream.jsonl"
    result = runner.invoke(run_app, ["infer", str(media), "--engines", str(tiny_engines), "--out", str(infer_out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(run_app, ["stream", str(media), "--engines", str(tiny_engines), "--window", "30",
                                     "--hop", "30", "--out", str(stream_out)])
    assert result.exit_code == 0, result.output
    [clip] = records_by_id(infer_out).values()
    [window] = [json.loads(line) for line in stream_out.read_text().splitlines()]
    assert set(window) - set(clip) == WINDOW_ONLY and set(clip) - set(window) == set()
    assert window["score"] == pytest.approx(clip["score"], abs=1e-4)
    assert window["gates"] == pytest.approx(clip["gates"], abs=1e-4)
    assert window["end_s"] == pytest.approx(clip["decoded_s"], abs=0.05)
    same = set(clip) - PER_RUN - {"score", "gates", "absent"}
    assert {k: window[k] for k in same} == {k: clip[k] for k in same}
    assert window["absent"].keys() == clip["absent"].keys()
    assert clip["present"]["text"] and clip["present"]["audio"]
    assert clip["present"]["video"] == (framing == "face in a frame")


def test_bench_compares_backends_and_precisions_in_one_report(tiny_engines, tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(run_app, ["bench", "--engines", str(tiny_engines), "--backends", "onnxruntime,torch",
                                     "--precision", "fp32,fp16", "--batch", "1,2", "--runs", "3", "--warmup", "1",
                                     "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    # the detector is timed once per place it runs: all three run it on ONNX Runtime's CPU kernels
    assert set(report["results"]) == {"onnxruntime fp32", "onnxruntime fp16", "torch fp32", "asr tiny.en", "asr base",
                                      "face_detector onnxruntime fp32"}
    detector = report["results"].pop("face_detector onnxruntime fp32")["1"]  # one 640×480 frame, the sealed YuNet
    assert detector["end_to_end_ms"]["p50"] > 0 and detector["provider"].startswith("onnxruntime CPU")
    assert report["lengths"] == {"text": 8, "audio": 20, "video": 15}  # the profile's opt lengths
    for model in ("tiny.en", "base"):  # both Whisper models (the test extra installs both) on real speech
        asr = report["results"].pop(f"asr {model}")["1"]
        assert asr["end_to_end_ms"]["p50"] > 0 and asr["provider"].startswith("ctranslate2")
        assert asr["audio"] == "3.3 s of `03bSnISJMiM_1.wav`"
    for label, rows in report["results"].items():
        assert set(rows) == {"1", "2"}
        for batch, r in rows.items():
            assert r["precision"] == label.split()[1]
            assert r["provider"] == ("torch-eager-cpu" if label.startswith("torch") else "CPUExecutionProvider")
            assert set(r["stages"]) == {"text_encoder", "audio_encoder", "video_encoder", "interaction", "mgf_head"}
            assert r["clips_per_s"] == pytest.approx(int(batch) * 1e3 / r["end_to_end_ms"]["p50"], rel=1e-2, abs=0.01)
            assert 0 <= r["overhead_pct"] < 100  # stage times are nested inside the end-to-end time
    assert result.output.count("×") >= 4  # a speed-up over torch for each ONNX Runtime row


def test_eval_with_deployed_artifacts(tiny_engines, tmp_path):
    data = tmp_path / "labels.csv"
    data.write_text("id,text,label,mode\na,good movie,1.5,test\nb,bad movie,-2,test\nc,ok,0,test\nd,,1,test\n")
    out = tmp_path / "m.json"
    result = runner.invoke(run_app, ["eval", str(data), "--engines", str(tiny_engines), "--json", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 3 and metrics["acc2_decisions_differing_from_torch"] == 0
    assert metrics["max_abs_score_difference"] < 1e-4


def test_untrained_modalities_are_masked_but_reported_present(tiny_config):
    from cmmsf.inputs.features import ClipInputs, Preprocessor

    tiny_config.trained_modalities = ["text"]
    item = ClipInputs("x", {"text": np.arange(40, dtype=np.int32), "audio": np.zeros((5, 16), np.float32),
                            "video": None})
    Preprocessor(tiny_config.input_spec()).assemble(item)
    assert item.masked == ["audio"] and item.arrays["audio"] is None
    assert item.present == {"text": True, "audio": True, "video": False}
    assert item.truncated == ["text"] and len(item.arrays["text"]) == tiny_config.text.max_len


def test_the_video_encoder_runs_a_big_batch_in_bounded_slices(tiny_engines, monkeypatch):
    """Memory per batch is bounded (issue 40 item 7): a batch's frames beyond FRAMES_PER_CALL go through
    the video encoder in row slices, and the outputs are those of one call."""
    import cmmsf.runtime.backends.base as base
    from cmmsf.sample_inputs import make_inputs

    pipeline = Pipeline.load(tiny_engines)
    inputs = make_inputs(pipeline.config, batch=4, video_len=20)
    whole = pipeline.backend.run(inputs)
    calls = []
    real = type(pipeline.backend).run_stage
    monkeypatch.setattr(type(pipeline.backend), "run_stage",
                        lambda self, stage, feeds: calls.append((stage, len(next(iter(feeds.values())))))
                        or real(self, stage, feeds))
    monkeypatch.setattr(base, "FRAMES_PER_CALL", 45)  # two rows of 20 frames per call
    sliced = pipeline.backend.run(inputs)
    assert [rows for stage, rows in calls if stage == "video_encoder"] == [2, 2]
    assert [rows for stage, rows in calls if stage != "video_encoder"] == [4, 4, 4, 4]
    for name in ("u_video", "score"):
        np.testing.assert_allclose(sliced[name], whole[name], atol=2e-5, rtol=1e-5)
