"""What a newcomer meets first: options declared once, a backend registry, defaults that write nothing
where the user did not ask, and refusals of options that cannot work (one line each)."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cmmsf.cli import export_app, run_app, train_app
from cmmsf.cli.options import GROUPS
from cmmsf.inputs.asr_models import MODELS
from cmmsf.runtime.backends import BackendUnavailableError, backend_names, load_backend, registry, resolve_auto
from cmmsf.runtime.engine_folder import EngineFolder
from cmmsf.runtime.pipeline import Pipeline
from cmmsf.runtime.settings import RunSettings

from .media import transcript_clips, write_wav

ROOT = Path(__file__).resolve().parents[1]


def _commands(app):
    return [c.name or c.callback.__name__ for c in app.registered_commands]


@pytest.mark.parametrize("app", [export_app, run_app, train_app])
def test_help_shows_no_python_type_names(app):
    for command in _commands(app):
        text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        for internal in ("<bool>", "<int>", "<list[", "<Path", "<str>", "{paths}", "<float>"):
            assert internal not in text, (command, internal)


def test_each_run_option_is_declared_once_in_the_source():
    """The run settings' flags are generated from RunSettings' fields: no command spells them out."""
    sources = "".join(p.read_text() for p in (ROOT / "cmmsf" / "cli").glob("*.py"))
    for flag in ("--asr-beam-size", "--asr-vad", "--face-crop", "--asr-model", "--precision\"", "--providers"):
        assert flag not in sources, flag
    assert sources.count("typer.Option(4.0") == 1  # --window's default, written once
    infer = CliRunner().invoke(run_app, ["infer", "--help"], terminal_width=200).output
    serve = CliRunner().invoke(run_app, ["serve", "--help"], terminal_width=200).output
    for names in GROUPS.values():
        for name in names:
            flag = "--" + name.replace("_", "-")
            assert flag in infer and flag in serve, flag


def test_run_settings_are_typed_and_checked():
    assert typing.get_args(RunSettings.model_fields["asr_model"].annotation) == tuple(MODELS)
    with pytest.raises(ValidationError):
        RunSettings(engines=Path("x"), asr="sometimes")
    with pytest.raises(ValidationError):
        RunSettings(engines=Path("x"), backend="no-such-backend")
    settings = RunSettings(engines=Path("x"), threads=2)
    assert settings.replace(asr="auto").asr == "auto" and settings.asr == "off"


def test_every_backend_module_registers_itself_and_auto_falls_back(tiny_engines):
    assert {"onnxruntime", "tensorrt", "torch"} <= set(registry())  # and openvino where installed
    assert backend_names()[0] == "auto"
    engines = EngineFolder.open(tiny_engines)
    name, why = resolve_auto(engines)
    assert name == "onnxruntime" and "tensorrt:" in why  # no plans (and no TensorRT) here: said why
    with pytest.raises(BackendUnavailableError, match="no NoSuchExecutionProvider"):
        load_backend("onnxruntime", engines, providers=("NoSuchExecutionProvider",))
    with load_backend("onnxruntime", engines, providers=("CPUExecutionProvider",)) as backend:
        assert backend.provider == "CPUExecutionProvider"


def test_backends_command_lists_the_registry(tiny_engines):
    result = CliRunner().invoke(run_app, ["backends", "--engines", str(tiny_engines)], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in registry():
        assert name in result.output
    assert "auto → onnxruntime" in result.output


def test_providers_option_reaches_onnx_runtime(tiny_engines, tmp_path):
    write_wav(tmp_path / "a.wav")
    out = tmp_path / "r.jsonl"
    ok = CliRunner().invoke(run_app, ["infer", str(tmp_path / "a.wav"), "--engines", str(tiny_engines), "--out",
                                      str(out), "--providers", "CPUExecutionProvider", "--asr", "off"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(out.read_text())["provider"] == "CPUExecutionProvider"
    bad = CliRunner().invoke(run_app, ["infer", str(tmp_path / "a.wav"), "--engines", str(tiny_engines), "--out",
                                       str(tmp_path / "r2.jsonl"), "--providers", "MadeUpExecutionProvider"])
    said = " ".join(bad.output.split())
    assert bad.exit_code == 1 and "no MadeUpExecutionProvider" in said and "Traceback" not in said


def test_a_bad_choice_names_the_option_and_its_choices(tmp_path):
    result = CliRunner().invoke(run_app, ["infer", str(tmp_path), "--engines", str(tmp_path), "--asr", "bogus"])
    assert result.exit_code == 2 and "--asr must be one of auto, always, off, got 'bogus'" in result.output


def test_out_naming_an_input_is_refused_and_the_input_kept(tiny_engines, tmp_path):
    clip = write_wav(tmp_path / "clip.wav")
    (tmp_path / "clip.txt").write_text("a calm sentence")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for target in ("clip.wav", "clip.txt"):
        result = CliRunner().invoke(run_app, ["infer", str(tmp_path), "--engines", str(tiny_engines),
                                              "--out", str(tmp_path / target)])
        assert result.exit_code == 2 and "is an input" in result.output, result.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert clip.exists()


def test_infer_in_a_folder_of_clips_writes_only_its_results(tiny_engines, tmp_path, monkeypatch):
    """`cd clips && cmmsf-run infer .` leaves nothing in the folder but --out, and shows each clip."""
    write_wav(tmp_path / "one.wav")
    write_wav(tmp_path / "two.wav", tone_hz=500.0)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(run_app, ["infer", ".", "--engines", str(tiny_engines), "--asr", "off"],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.wav", "results.jsonl", "two.wav"]
    assert "one" in result.output and "two" in result.output and "2 clips scored" in result.output


def test_hop_longer_than_window_is_refused(tmp_path):
    result = CliRunner().invoke(run_app, ["stream", str(tmp_path / "x.mp4"), "--engines", str(tmp_path),
                                          "--window", "1", "--hop", "2"])
    assert result.exit_code == 2 and "--hop 2 is longer than --window 1" in " ".join(result.output.split())


def test_default_engines_live_in_the_user_cache(tmp_path, monkeypatch):
    from cmmsf.runtime.locations import CACHE_ENV, default_engines_dir

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    folder = default_engines_dir()
    assert folder.parent == tmp_path / "cache" / "engines" and folder.name.startswith("default-")


def test_an_interrupted_build_leaves_nothing_behind(tiny_checkpoint, tmp_path, monkeypatch):
    from rich.console import Console

    import cmmsf.export.build as build_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "export_stage", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_module.build(build_module.BuildOptions(checkpoint=str(tiny_checkpoint), out=tmp_path / "engines"),
                           Console(quiet=True))
    assert list(tmp_path.iterdir()) == []


def test_serve_decodes_a_clip_request_in_memory(tiny_engines, tmp_path, monkeypatch):
    """`cmmsf_clip` reads the request's bytes as they are: no temporary file, and errors name the clip."""
    import tempfile

    from cmmsf.runtime.pipeline import Pipeline
    from cmmsf.runtime.serving.server import ClipModel

    data = write_wav(tmp_path / "voice.wav").read_bytes()
    pipeline = Pipeline.load(RunSettings(engines=tiny_engines))
    try:
        on_disk = pipeline.predict([tmp_path / "voice.wav"])[0]

        def no_files(*args, **kwargs):
            raise AssertionError("the server wrote a temporary file")

        for name in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryDirectory"):
            monkeypatch.setattr(tempfile, name, no_files)
        good, corrupt, spoken = ClipModel(pipeline).records([(data, "voice.wav", None),
                                                            (b"\x00garbage" * 50, "broken.mp4", None),
                                                            (data, "said.wav", "what a lovely day")])
    finally:
        pipeline.close()
    assert good["score"] == pytest.approx(on_disk["score"], abs=1e-5)
    assert corrupt["id"] == "broken.mp4" and "broken.mp4" in corrupt["error"] and str(tmp_path) not in corrupt["error"]
    assert "/tmp" not in corrupt["error"]
    assert spoken["transcript"] == "what a lovely day" and spoken["present"]["text"]


def test_sinks_close_every_sink_even_when_one_fails(tmp_path):
    from cmmsf.runtime.results import ResultWriter
    from cmmsf.runtime.sinks import ClipTimelines, Sink, Sinks

    class Broken:
        def write(self, record):
            pass

        def finish(self, summary):
            pass

        def close(self):
            raise OSError("disk gone")

    writer = ResultWriter(tmp_path / "r.jsonl", resume=False)
    writer.start()
    sinks = Sinks([Broken(), writer, ClipTimelines(tmp_path / "plots")])
    assert all(isinstance(s, Sink) for s in sinks.sinks)
    sinks.write({"id": "a/b", "score": 1.5, "gates": {"text": 1.0, "audio": 0.0, "video": 0.0},
                 "present": {"text": True, "audio": False, "video": False}})
    with pytest.raises(OSError, match="disk gone"):
        sinks.close()
    assert writer.handle.closed and json.loads((tmp_path / "r.jsonl").read_text())["score"] == 1.5
    assert (tmp_path / "plots" / "a__b.png").stat().st_size > 0


def test_records_are_strict_json_with_nonfinite_numbers_named():
    from cmmsf.runtime.records import to_json

    line = to_json({"id": "x", "score": float("nan"), "gates": {"audio": float("inf"), "text": 0.5}})
    assert "NaN" not in line and "Infinity" not in line
    record = json.loads(line)
    assert record["score"] is None and record["gates"] == {"audio": None, "text": 0.5}
    assert record["nonfinite"] == ["score", "gates.audio"]
    assert json.loads(to_json({"id": "y", "score": 0.25})) == {"id": "y", "score": 0.25}


@pytest.mark.parametrize("change,says", [
    (lambda x: x.update(audio=np.full_like(x["audio"], np.nan)), "audio holds"),
    (lambda x: x["video"].__setitem__((0, 0), np.inf), "non-finite"),
    (lambda x: x["input_ids"].__setitem__((0, 0), -1), "outside the vocabulary"),
    (lambda x: x["input_ids"].__setitem__((0, 0), 2 ** 31 - 1), "outside the vocabulary"),
    (lambda x: x.update(input_ids=x["input_ids"][:, :0], text_mask=x["text_mask"][:, :0]), "no text steps"),
])
def test_values_no_input_can_have_are_one_line_refusals(tiny_engines, change, says):
    """The one validator the pipeline and the server share (issue 40): a client's garbage is refused
    before any stage runs, in a line that names the tensor."""
    from cmmsf.runtime.pipeline import ShapeError
    from cmmsf.sample_inputs import make_inputs

    pipeline = Pipeline.load(RunSettings(engines=tiny_engines, backend="onnxruntime"))
    try:
        inputs = make_inputs(pipeline.config, batch=2, text_len=5, audio_len=10, video_len=4, seed=1)
        pipeline.check_batch(inputs)  # the untouched batch passes
        change(inputs)
        with pytest.raises(ShapeError, match=says):
            pipeline.run_batch(inputs)
        empty = make_inputs(pipeline.config, batch=2, text_len=5, audio_len=10, video_len=4, seed=1)
        for modality in ("text", "audio", "video"):
            empty[f"{modality}_mask"][1] = False
        with pytest.raises(ShapeError, match="row 1 has every mask false"):
            pipeline.check_evidence(empty)
    finally:
        pipeline.close()


def test_symlinked_folders_are_followed_once_and_a_loop_is_skipped(tmp_path):
    from cmmsf.inputs.clips import find_clips

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "talk.txt").write_text("a fine day")
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "own.txt").write_text("hello there")
    (tmp_path / "clips" / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real" / "back").symlink_to(tmp_path / "clips", target_is_directory=True)  # a loop
    skipped: list[Path] = []
    ids = [c.id for c in find_clips([tmp_path / "clips"], skipped)]
    assert ids == ["linked/talk", "own"]
    assert [p.name for p in skipped] == ["back"]  # counted, not walked round


def test_a_utf16_transcript_with_its_byte_order_mark_is_text(tmp_path):
    from cmmsf.inputs.text import read_transcript

    (tmp_path / "w.txt").write_bytes("Ça va très bien".encode("utf-16"))
    transcript = read_transcript(tmp_path / "w.txt")
    assert transcript.text == "Ça va très bien" and transcript.decoding == "utf-16" and transcript.problem is None


def test_ctrl_c_says_how_many_clips_are_written_and_how_to_resume(tiny_engines, tmp_path, monkeypatch):
    from cmmsf.runtime import infer

    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.txt").write_text(f"words of {name}")
    real = infer.LocalRunner.records

    def interrupted(self, clips, batch):
        yield next(iter(real(self, clips, batch)))
        raise KeyboardInterrupt

    monkeypatch.setattr(infer.LocalRunner, "records", interrupted)
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(run_app, ["infer", str(tmp_path), "--engines", str(tiny_engines), "--out", str(out)],
                                terminal_width=200)
    said = " ".join(result.output.split())
    assert result.exit_code == 130 and f"interrupted: 1 of 3 clips are in {out}" in said and "--resume" in said
    assert len(out.read_text().splitlines()) == 1


def test_audio_of_nothing_but_nan_is_said_so_not_called_silent(tiny_engines, tmp_path):
    import av

    path = tmp_path / "nan.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_f32le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.full((1, 16000), np.nan, np.float32), format="flt", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    (tmp_path / "nan.txt").write_text("some words")
    pipeline = Pipeline.load(RunSettings(engines=tiny_engines))
    try:
        record = pipeline.predict([path])[0]
    finally:
        pipeline.close()
    assert record["absent"]["audio"] == "every sample was NaN or infinite", record
    assert record["audio_nonfinite_samples"] > 0


def test_sigterm_prints_the_same_summary_and_exits_143(tiny_engines, tmp_path):
    """A real `kill` of a real run (never of the test process): the summary Ctrl-C prints, exit 143, and
    --resume scores the rest, each clip once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    clips = transcript_clips(tmp_path / "clips", 400)
    out = tmp_path / "r.jsonl"
    command = [sys.executable, "-m", "cmmsf.cli", "infer", str(clips), "--engines", str(tiny_engines),
               "--out", str(out)]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "COLUMNS": "200"})
    deadline = time.monotonic() + 120
    while not (out.is_file() and out.read_text().count("\n") >= 3) and run.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=60)
    said = " ".join((stdout + stderr).split())
    written = len(out.read_text().splitlines())
    assert run.returncode == 143 and f"terminated: {written} of 400 clips are in {out}" in said, said[-1500:]
    assert "--resume" in said and "Traceback" not in said
    finished = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-1500:]
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == [f"c{n:03d}" for n in range(400)]  # each exactly once


def test_a_file_name_that_is_not_utf8_gives_an_id_strict_json_accepts(tiny_engines, tmp_path):
    import os

    folder = tmp_path / "clips"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.txt"), "w") as handle:  # Latin-1 bytes in the name
        handle.write("a lovely little place")
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(run_app, ["infer", str(folder), "--engines", str(tiny_engines), "--out", str(out)])
    assert result.exit_code == 0, result.output
    raw = out.read_bytes()
    assert b"\\ud" not in raw  # no lone surrogate escape, which strict parsers reject
    assert json.loads(raw.decode("utf-8"))["id"] == "caf\\xe9"
