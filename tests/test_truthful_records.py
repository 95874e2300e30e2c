"""Records and summaries tell the truth, and no input file can hang or flood a run (issue 17, items 4 and 6).

Every input is generated here: a cut container, white noise, a FIFO, /dev/zero, an oversized transcript.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import av
import pytest
from typer.testing import CliRunner

from cmmsf.cli import run_app
from cmmsf.inputs.files import TRANSCRIPT_MAX_BYTES, InputFileError, read_small_file

from .media import write_video, write_wav

runner = CliRunner()
MOSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "mosi" / "clips"


def flat(text: str) -> str:
    return " ".join(text.split())


def records_of(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}


def write_noise(path: Path, seconds: float, rate: int = 16000) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        noise = (np.random.default_rng(0).standard_normal(int(seconds * rate)) * 0.2 * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(noise.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


def test_read_small_file_refuses_what_is_not_a_small_regular_file(tmp_path):
    (tmp_path / "ok.txt").write_text("hello")
    assert read_small_file(tmp_path / "ok.txt") == b"hello"
    os.mkfifo(tmp_path / "pipe.txt")
    (tmp_path / "huge.txt").write_bytes(b"a" * (TRANSCRIPT_MAX_BYTES + 1))
    for path, says in ((tmp_path / "pipe.txt", "is a FIFO, not a regular file"),
                       (Path("/dev/zero"), "is a character device, not a regular file"),
                       (tmp_path / "huge.txt", "is larger than 4 MB"),
                       (tmp_path / "missing.txt", "No such file or directory"),
                       (tmp_path, "is a folder")):
        started = time.monotonic()
        with pytest.raises(InputFileError, match=says):
            read_small_file(path)
        assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_stream_transcript_on_dev_zero_or_a_fifo_fails_in_under_a_second(tiny_engines, tmp_path, kind):
    write_wav(tmp_path / "a.wav", seconds=1.0)
    transcript = Path("/dev/zero")
    if kind == "fifo":
        transcript = tmp_path / "words.txt"
        os.mkfifo(transcript)
    started = time.monotonic()
    result = runner.invoke(run_app, ["stream", str(tmp_path / "a.wav"), "--engines", str(tiny_engines),
                                     "--transcript", str(transcript)])
    assert time.monotonic() - started < 1.0
    assert result.exit_code == 1 and "not a regular file" in flat(result.output) and "Traceback" not in result.output


def test_a_cut_file_says_so_and_noise_is_marked_as_no_speech(tiny_engines, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    full = write_video(tmp_path / "full.mkv", seconds=6.0, fps=15)
    data = full.read_bytes()
    (clips / "cut.mkv").write_bytes(data[: len(data) // 3])  # Matroska states its duration up front
    shutil.copy(full, clips / "long.mkv")  # longer than the tiny model reads: cut on purpose, not flagged
    write_video(clips / "whole.mkv", seconds=1.5, fps=15)
    write_noise(clips / "noise.wav", seconds=4.0)
    out = tmp_path / "r.jsonl"
    result = runner.invoke(run_app, ["infer", str(clips), "--engines", str(tiny_engines), "--out", str(out)])
    assert result.exit_code == 0, result.output
    got = records_of(out)
    cut, whole, long, noise = got["cut"], got["whole"], got["long"], got["noise"]
    assert cut["duration_s"] == pytest.approx(6.0, abs=0.2) and cut["decoded_s"] < 3.0
    assert any("could be decoded: the file may be cut short" in w for w in cut["warnings"]), cut
    assert whole["decoded_s"] == pytest.approx(whole["duration_s"], abs=0.3)
    assert long["truncated"] and long["decoded_s"] < 4.0
    for record in (whole, long):
        assert not any("cut short" in w for w in record.get("warnings", [])), record
    assert noise["speech_s"] == 0 and any("no speech in the audio" in w for w in noise["warnings"])
    assert "warnings" in flat(result.output) and "see `warnings` in their records" in flat(result.output)


@pytest.mark.skipif(not MOSI.is_dir(), reason="needs ../shared/data/mosi/clips")
def test_real_speech_is_measured_as_speech(tiny_engines, tmp_path):
    out = tmp_path / "r.jsonl"
    result = runner.invoke(run_app, ["infer", str(MOSI / "03bSnISJMiM_1.wav"), "--engines", str(tiny_engines),
                                     "--out", str(out), "--asr", "off"])
    assert result.exit_code == 0, result.output
    record = records_of(out)["03bSnISJMiM_1"]
    assert record["speech_s"] > 2.5 and not any("no speech" in w for w in record.get("warnings", []))


def test_files_that_are_not_clips_are_counted_and_bad_sidecars_fail_only_their_clip(tiny_engines, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "good.txt").write_text("what a lovely day")
    (clips / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    (clips / "other.jpg").write_bytes(b"\xff\xd8\xff")
    (clips / "paper.pdf").write_bytes(b"%PDF-1.4")
    os.mkfifo(clips / "pipe.txt")  # not a regular file: skipped and counted, never opened
    write_wav(clips / "big.wav", seconds=0.5)
    (clips / "big.txt").write_bytes(b"word " * (TRANSCRIPT_MAX_BYTES // 5 + 1))
    out = tmp_path / "r.jsonl"
    result = runner.invoke(run_app, ["infer", str(clips), "--engines", str(tiny_engines), "--out", str(out)])
    assert result.exit_code == 3, result.output  # big's transcript failed that clip only
    got = records_of(out)
    assert set(got) == {"good", "big"} and "score" in got["good"]
    assert got["big"]["error"] == f"the transcript {clips / 'big.txt'} is larger than 4 MB; that is not a transcript"
    said = flat(result.output)
    assert "skipped 4 files that are not clips: .jpg ×2, (not a regular file), .pdf" in said, said


def test_the_build_profile_bounds_every_path(tmp_path, tiny_config):
    """Engines built with shorter maxima than the config's: clips are truncated to the profile (and say
    so); tensors past it are refused before any work, with the limit named."""
    from cmmsf.sample_inputs import make_inputs
    from cmmsf.runtime.pipeline import Pipeline, ShapeError

    from .conftest import build_engines

    engines = build_engines(tmp_path, tiny_config, {"text": 8, "audio": 20, "video": 10})
    pipeline = Pipeline.load(engines)
    write_video(tmp_path / "clip.mp4", seconds=2.5, fps=15)
    (tmp_path / "clip.txt").write_text("one two three four five six seven eight nine ten eleven twelve")
    record = pipeline.predict([tmp_path / "clip.mp4"])[0]
    assert sorted(record["truncated"]) == ["audio", "text", "video"] and -3 <= record["score"] <= 3
    for name, length, says in (("audio", 21, "audio has 21 audio steps; these engines take at most 20"),
                               ("video", 11, "video has 11 video steps; these engines take at most 10")):
        lengths = {"text_len": 5, "audio_len": 10, "video_len": 5, f"{name}_len": length}
        with pytest.raises(ShapeError, match=says):
            pipeline.run_batch(make_inputs(tiny_config, batch=1, **lengths))
    wide = make_inputs(tiny_config, batch=1, text_len=5, audio_len=10, video_len=5)
    wide["audio"] = np.zeros((1, 10, tiny_config.audio.feature_dim + 1), np.float32)
    with pytest.raises(ShapeError, match="audio has 17 on axis Fa, these engines take 16"):
        pipeline.run_batch(wide)
    pipeline.run_batch(make_inputs(tiny_config, batch=1, text_len=8, audio_len=20, video_len=10))  # the max runs
    pipeline.close()


def test_a_server_pipeline_runs_without_the_memory_arena(tiny_engines):
    """ONNX Runtime's CPU arena keeps its largest allocation for good (the shipped engines: 0.45 → 1.79 GB
    after five maximum-size batches); `serve` loads its pipeline with the arena off."""
    from cmmsf.runtime.pipeline import Pipeline
    from cmmsf.runtime.settings import RunSettings

    for arena in (True, False):
        pipeline = Pipeline.load(RunSettings(engines=tiny_engines, backend="onnxruntime", memory_arena=arena))
        options = [s.session.get_session_options() for s in pipeline.backend.sessions.values()]
        assert [o.enable_cpu_mem_arena for o in options] == [arena] * 5
        pipeline.close()
