"""The three Typer apps: `cmmsf-export`, `cmmsf-run` and `cmmsf-train`. Thin: parse, call, print.

Heavy imports happen inside each command, so `--help` is instant and `cmmsf-run` never loads torch
unless the torch backend is asked for. Known failures print one red line, never a traceback.

Exit codes (`ExitCode`, also in every `--help` and the README) mean one thing each: 0 done; 1 the command
failed (input, engines, output or disk: the red line says which); 2 called wrongly (a mistyped or unusable
option: Click's own code, and `UsageError`'s); 3 `infer` finished but some clips failed (their error lines
are in the results); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Callable, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape

from cmmsf.inputs.errors import CmmsfError, UsageError

# Tables stay readable when output is piped or logged (rich would fall back to 80 columns).
console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    """Click exits 2 on a mistyped option; an unusable value (`UsageError`) gets the same code."""
    SOME_CLIPS_FAILED = 3
    INTERRUPTED = 130


EXIT_CODES_HELP = ("Exit codes: 0 done, 1 failed (the red line says why), 2 called wrongly (an option), "
                   "3 some clips failed (their errors are in the results), 130 interrupted.")

export_app = typer.Typer(help="Export a CM-MSF checkpoint per stage to ONNX and TensorRT. " + EXIT_CODES_HELP,
                         no_args_is_help=True)
run_app = typer.Typer(help="Run exported CM-MSF engines: batch, streaming, benchmarks, evaluation. "
                      + EXIT_CODES_HELP, no_args_is_help=True)
train_app = typer.Typer(help="Train and evaluate CM-MSF checkpoints. " + EXIT_CODES_HELP, no_args_is_help=True)


def _print_version(asked: bool) -> None:
    if asked:
        from cmmsf import __version__

        typer.echo(f"cmmsf {__version__}")
        raise typer.Exit()


def _version_option(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="print the version and exit")] = False,
) -> None:
    """The apps' one shared option: --version (eager, so it works without a command)."""


for _app in (export_app, run_app, train_app):
    _app.callback()(_version_option)

# ---------------------------------------------------------------- options shared by the commands that run engines
# Declared once: every command that reads video has --face-crop, every one that reads audio has --asr, and
# `_settings` turns them into the one RunSettings the pipeline takes (runtime/settings.py).

Engines = Annotated[Optional[Path], typer.Option(
    help="engine folder [default: engines/default, exported from the shipped checkpoint if missing]")]
Backend = Annotated[str, typer.Option(help="auto, tensorrt, onnxruntime or torch")]
Precision = Annotated[str, typer.Option(help="which ONNX graphs ONNX Runtime loads: fp32 or fp16 (TensorRT runs "
                                             "its plans, torch FP32)")]
FaceCrop = Annotated[bool, typer.Option(
    "--face-crop/--no-face-crop",
    help="find and track the face and read only it (a frame without one has no video: `no face`); "
         "--no-face-crop for input that is already a face crop (the centre square is read)")]
VoiceCheck = Annotated[bool, typer.Option(
    "--voice-check/--no-voice-check",
    help="leave out a voice unlike those the checkpoint learned (absent: `voice unlike those it learned`); "
         "--no-voice-check hears every voice")]
Asr = Annotated[str, typer.Option(help="speech recognition: auto (clips and streams without a transcript), "
                                       "always, or off")]
Threads = Annotated[Optional[int], typer.Option(min=1, help="CPU threads per backend session [default: all cores]")]
AsrBeamSize = Annotated[int, typer.Option(min=1, help="Whisper's beam size (1: greedy, the fastest; 5: "
                                                      "faster-whisper's default); the record says which was used")]
AsrVad = Annotated[bool, typer.Option("--asr-vad/--no-asr-vad", help="faster-whisper's voice-activity filter "
                                                                  "before recognition")]
AsrModelName = Annotated[str, typer.Option("--asr-model", help="the Whisper model: tiny.en (English, fast) or base "
                                           "(multilingual, ~4x slower: names the language it hears); each installs "
                                           "offline from a package")]
# the evaluation options `cmmsf-run eval` and `cmmsf-train eval` share (one evaluator, cmmsf/evaluation.py)
EvalSplit = Annotated[str, typer.Option(help="train, dev/valid, test, or all (every speaker: leave one corpus out)")]
Labels = Annotated[Optional[Path], typer.Option(help="labels CSV for a clip folder")]
Modalities = Annotated[Optional[str], typer.Option(help="one subset to keep, e.g. text or text,audio "
                                                        "[default: text, audio, video and all, each on its own]")]
SourcesFile = Annotated[Optional[Path], typer.Option(help="splits and gates [default: cmmsf/recipes/sources.json]")]

EXTRA_OF = {"torch": "export", "transformers": "export", "safetensors": "export", "onnxconverter_common": "export",
            "pytriton": "serve", "tritonclient": "serve", "ray": "ray", "pyarrow": "ray"}
"""Which extra brings a module the base install leaves out (pyproject.toml)."""


def friendly(command: Callable) -> Callable:
    """One red line for what the user can fix, a report for what only we can.

    Exit 1 (2 for an unusable option value) with `error: <message>` for a `CmmsfError` (our own words:
    bad input, a missing file, tampered artifacts, a bad config field) and for an `OSError` (the machine's:
    a path, a permission, a full disk). Anything else is a bug in this package: its traceback goes to a
    file, and the red line says so and where (CMMSF_TRACEBACK=1 shows it in place)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            live = sys.modules.get("cmmsf.inputs.live")
            if live is not None and live.readers_still_running():
                # a reader blocked inside FFmpeg would crash the interpreter's shutdown; every finally
                # (results, sessions) has run by now, so flush and leave at once
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(ExitCode.INTERRUPTED)
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except ModuleNotFoundError as err:
            extra = EXTRA_OF.get((err.name or "").split(".")[0])
            if extra is None:
                raise
            err_console.print(f"[red]error:[/] this needs {err.name}, which the base (runtime) install leaves out: "
                              + escape(f"pip install 'cmmsf[{extra}]'"), highlight=False)
            raise typer.Exit(ExitCode.FAILED) from None
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException, click.Abort):
            raise  # the command's own exit code, or Click's usage error
        except UsageError as err:
            err_console.print(f"[red]usage error:[/] {escape(str(err))}", highlight=False)
            raise typer.Exit(ExitCode.USAGE) from None
        except CmmsfError as err:
            err_console.print(f"[red]error:[/] {escape(str(err))}", highlight=False)
            raise typer.Exit(ExitCode.FAILED) from None
        except OSError as err:
            message = f"{err.filename or ''}{': ' if err.filename else ''}{err.strerror}" if err.strerror else str(err)
            err_console.print(f"[red]error:[/] {escape(message)}", highlight=False)
            raise typer.Exit(ExitCode.FAILED) from None
        except Exception as err:  # noqa: BLE001 - a bug: keep its traceback, say where
            if os.environ.get("CMMSF_TRACEBACK"):
                raise
            report = write_bug_report(err)
            err_console.print(f"[red]internal error (a bug in cmmsf, not in what you did):[/] "
                              f"{escape(type(err).__name__)}: {escape(str(err)[:300])}. The traceback is in "
                              f"{escape(str(report))}; please report it with that file", highlight=False)
            raise typer.Exit(ExitCode.FAILED) from None

    return wrapper


def write_bug_report(err: BaseException) -> Path:
    """The traceback of an unexpected exception, with the command line and versions, in a fresh file of
    the temporary folder."""
    import platform
    import tempfile
    import traceback

    from cmmsf import __version__

    fd, name = tempfile.mkstemp(prefix="cmmsf-bug-", suffix=".txt")
    with os.fdopen(fd, "w") as report:
        report.write(f"cmmsf {__version__}, Python {platform.python_version()}, {platform.platform()}\n")
        report.write("command: " + " ".join(sys.argv) + "\n\n")
        report.write("".join(traceback.format_exception(err)))
    return Path(name)


# ---------------------------------------------------------------- cmmsf-export


@export_app.command("build")
@friendly
def export_build(
    checkpoint: str = typer.Option("default", help="`default` (shipped) or a checkpoint folder"),
    out: Optional[Path] = typer.Option(None, help="output folder [default: engines/<checkpoint>]"),
    precision: str = typer.Option("fp16", help="TensorRT plan precision: fp16 or fp32"),
    tensorrt: str = typer.Option("auto", help="auto: build plans where TensorRT and a GPU exist; on; off"),
    batch: str = typer.Option("1,1,8", help="profile batch MIN,OPT,MAX"),
    max_len: str = typer.Option("", help="profile max lengths, e.g. text=64,audio=150,video=180"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing build"),
) -> None:
    """Checkpoint → per-stage ONNX (FP32, FP16), parity checks, TensorRT plans, manifest.json."""
    from cmmsf.checkpoint import CONFIG, resolve_checkpoint
    from cmmsf.config import ModelConfig
    from cmmsf.export.build import BuildOptions, build
    from cmmsf.export.profiles import ShapeProfile, default_profile, parse_batch, parse_max_len

    base = default_profile(ModelConfig.load(resolve_checkpoint(checkpoint) / CONFIG))
    profile = ShapeProfile(parse_batch(batch), parse_max_len(max_len, base.max_len))
    build(BuildOptions(checkpoint=checkpoint, out=out, precision=precision, tensorrt=tensorrt, profile=profile,
                       force=force), console)


@export_app.command("check")
@friendly
def export_check(folder: Path = typer.Argument(..., help="an engine folder")) -> None:
    """Re-hash every artifact and the checkpoint, then re-run parity."""
    from cmmsf.export.build import check

    check(folder, console)


@export_app.command("inspect")
@friendly
def export_inspect(
    folder: Path = typer.Argument(..., help="an engine folder"),
    json_out: bool = typer.Option(False, "--json", help="print the stages' I/O and artifacts as JSON instead"),
) -> None:
    """Every stage's inputs and outputs (name, dtype, shape, profile min/opt/max) and every artifact
    (precision, size, sha256, re-hashed), then the build's manifest. Exit 1 if an artifact is changed."""
    from cmmsf.export.inspect import inspect_folder
    from cmmsf.export.report import artifacts_table, io_table, manifest_table
    from cmmsf.runtime.engine_folder import EngineFolder

    engines = EngineFolder.open(folder)
    report = inspect_folder(engines)
    bad = [f"{stage} {kind}: {a['file']} {a['status']}" for stage, info in report["stages"].items()
           for kind, a in info["artifacts"].items() if a["status"] != "ok"]
    bad += [f"{f['file']} {f['status']}" for f in report["files"].values() if f["status"] != "ok"]
    if json_out:
        typer.echo(json.dumps(report, indent=1))
        if bad:
            raise typer.Exit(ExitCode.FAILED)
        return
    console.print(io_table(report))
    console.print(artifacts_table(report))
    console.print(manifest_table(engines.manifest))
    trt = engines.tensorrt
    console.print(f"TensorRT: {trt.status} {trt.reason or trt.gpu or ''}")
    console.print(f"checkpoint: {engines.checkpoint_ref} ({engines.checkpoint_problem() or 'present and unchanged'})")
    console.print(f"versions: {json.dumps(engines.manifest.versions)}")
    console.print("sealed files: " + "; ".join(f"{f['file']} {f['bytes'] / 1e3:.0f} kB {f['sha256'][:12]}… {f['status']}"
                                              for f in report["files"].values())
                  + ("" if "voice" in report["files"] else "; no voice statistics (every voice is heard)"),
                  highlight=False)
    if bad:
        err_console.print("[red]error:[/] changed or missing artifacts: " + "; ".join(bad), highlight=False)
        raise typer.Exit(ExitCode.FAILED)


@export_app.command("triton")
@friendly
def export_triton(
    engines: list[Path] = typer.Option(..., help="engine folder; repeat for TensorRT plans of the same model "
                                                 "built on GPUs of different compute capability"),
    out: Path = typer.Option(Path("model_repository"), help="the model repository folder to write"),
    format: str = typer.Option("auto", help="auto (plans where every folder has them, else ONNX), onnx or plan"),
    precision: str = typer.Option("fp16", help="which ONNX graphs onnxruntime_onnx models serve: fp16 or fp32"),
    max_queue_delay_ms: float = typer.Option(2.0, min=0, help="Triton's dynamic-batching queue delay"),
    force: bool = typer.Option(False, "--force", help="replace an existing repository"),
) -> None:
    """Engine folder(s) → a Triton Inference Server model repository: one model per stage + an ensemble."""
    from cmmsf.export.triton_repository import TritonRepositoryOptions, write_repository

    write_repository(TritonRepositoryOptions(engines=engines, out=out, format=format, precision=precision,
                                             max_queue_delay_ms=max_queue_delay_ms, force=force), console)


# ---------------------------------------------------------------- cmmsf-run

def _engines_or_default(engines: Optional[Path], out: Console = console) -> Path:
    """The given engine folder, or engines/default, exported on the fly from the shipped checkpoint."""
    if engines is not None:
        return engines
    from cmmsf.export.default_engines import ensure_default_engines

    return ensure_default_engines(out)


def _settings(engines: Optional[Path], backend: str = "auto", precision: str = "fp32", asr: str = "off",
              face_crop: bool = True, threads: Optional[int] = None, out: Console = console, *,
              asr_beam_size: int = 1, asr_vad: bool = True, asr_model: str = "tiny.en", voice_check: bool = True):
    """The shared options as the one RunSettings every command passes whole."""
    from cmmsf.runtime.settings import RunSettings

    return RunSettings(engines=_engines_or_default(engines, out), backend=backend, precision=precision, asr=asr,
                       asr_beam_size=asr_beam_size, asr_vad=asr_vad, asr_model=asr_model, face_crop=face_crop,
                       voice_check=voice_check, threads=threads)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _positive_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in _split(text)]
    except ValueError:
        raise UsageError(f"{option} wants comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"{option} wants positive integers, got {text!r}")
    return values


@run_app.command("infer")
@friendly
def run_infer(
    paths: list[Path] = typer.Argument(..., help="clip files and/or folders (files grouped by stem)"),
    engines: Engines = None,
    out: Path = typer.Option(Path("results.jsonl"), help="one JSON line per clip (`-` = standard output)"),
    batch: int = typer.Option(1, min=1, help="clips per micro-batch"),
    resume: bool = typer.Option(False, "--resume", help="skip clip ids already in --out"),
    backend: Backend = "auto",
    precision: Precision = "fp32",
    face_crop: FaceCrop = True,
    voice_check: VoiceCheck = True,
    asr: Asr = "auto",
    asr_beam_size: AsrBeamSize = 1,
    asr_vad: AsrVad = True,
    asr_model: AsrModelName = "tiny.en",
    threads: Threads = None,
    ray: Optional[str] = typer.Option(None, help="run on Ray Data: `local` starts Ray here, `auto` joins the "
                                                "running cluster, or ray://HOST:10001"),
    ray_actors: int = typer.Option(1, min=1, help="with --ray: stage actors (one backend each)"),
    num_gpus_per_actor: float = typer.Option(0.0, min=0, help="with --ray: GPUs each stage actor reserves"),
    wait: bool = typer.Option(False, "--wait", help="when another run is writing --out, wait for it "
                                                    "[default: stop at once, naming it]"),
    plot: Optional[Path] = typer.Option(None, help="a folder for one timeline PNG per clip (score, words, gates)"),
) -> None:
    """Batch inference over clips → results.jsonl and a summary table. Exit 3 when some clips failed."""
    from cmmsf.runtime.infer import InferOptions, LocalScorer, run_infer as infer
    from cmmsf.runtime.results import writes_to_stdout

    human = err_console if writes_to_stdout(out) else console  # JSON lines alone on stdout
    scorer = LocalScorer
    if ray:
        from cmmsf.runtime.scale.ray_batch import RayScorer, RaySettings

        cluster = RaySettings(ray, ray_actors, num_gpus_per_actor)
        scorer = functools.partial(RayScorer, cluster=cluster)
    settings = _settings(engines, backend, precision, asr, face_crop, threads, human, asr_beam_size=asr_beam_size,
                         asr_vad=asr_vad, asr_model=asr_model, voice_check=voice_check)
    records = infer(InferOptions(paths=paths, settings=settings, out=out, batch=batch, resume=resume, wait=wait,
                                 plots=plot),
                    human, scorer)
    if any("error" in r for r in records):
        raise typer.Exit(ExitCode.SOME_CLIPS_FAILED)


@run_app.command("stream")
@friendly
def run_stream(
    source: str = typer.Argument(..., help="a media file, a camera index (0) or a URL"),
    engines: Engines = None,
    window: float = typer.Option(4.0, help="window length in seconds"),
    hop: float = typer.Option(2.0, help="seconds between window starts"),
    transcript: Optional[Path] = typer.Option(None, help="transcript for the whole stream (.txt/.srt/.vtt)"),
    realtime: bool = typer.Option(False, "--realtime", help="pace a file as if it were live"),
    out: Optional[Path] = typer.Option(None, help="also write the JSON lines to this file"),
    plot: Optional[Path] = typer.Option(None, help="draw the windows over time to this PNG (spans, words, gates)"),
    backend: Backend = "auto",
    precision: Precision = "fp32",
    connect_timeout: float = typer.Option(10.0, min=0.1, help="seconds to wait for a URL or camera to open"),
    read_timeout: float = typer.Option(10.0, min=0.1, help="seconds without data before a URL or camera counts as gone"),
    asr: Asr = "auto",
    asr_beam_size: AsrBeamSize = 1,
    asr_vad: AsrVad = True,
    asr_model: AsrModelName = "tiny.en",
    face_crop: FaceCrop = True,
    voice_check: VoiceCheck = True,
    threads: Threads = None,
    view: bool = typer.Option(False, "--view", help="watch it live: a page with the frame and face box, the "
                              "score timeline, the gates and the words"),
    view_port: int = typer.Option(8765, min=0, max=65535, help="the live page's port (0: any free one)"),
    view_address: str = typer.Option("127.0.0.1", help="the live page's listen address (0.0.0.0: all)"),
    view_open: bool = typer.Option(True, "--view-open/--no-view-open", help="open the page in a browser"),
    keep_view: bool = typer.Option(False, "--keep-view", help="keep the page up after the source ends, "
                                   "until Ctrl-C"),
) -> None:
    """Sliding-window inference on a file, camera or URL as it plays; one JSON line per window.

    Without a transcript, each window carries the words recognised in it (--asr). A network or camera
    source that stops sending ends the stream after --read-timeout (no reconnect). --view serves a live
    page of the stream on 127.0.0.1:8765; stopping the stream stops the page."""
    from cmmsf.runtime.stream import StreamOptions, ViewOptions, run_stream as stream

    stream(StreamOptions(source=source, settings=_settings(engines, backend, precision, asr, face_crop, threads,
                                                           err_console, asr_beam_size=asr_beam_size,
                                                           asr_vad=asr_vad, asr_model=asr_model, voice_check=voice_check),
                         window=window, hop=hop, transcript=transcript, realtime=realtime, out=out, plot=plot,
                         connect_timeout=connect_timeout, read_timeout=read_timeout,
                         view=ViewOptions(address=view_address, port=view_port, open_browser=view_open,
                                          keep=keep_view) if view else None), err_console)


@run_app.command("serve")
@friendly
def run_serve(
    engines: Engines = None,
    address: str = typer.Option("127.0.0.1", help="listen address for HTTP, gRPC and metrics (0.0.0.0: all)"),
    http_port: int = typer.Option(8000, help="Triton HTTP/REST port"),
    grpc_port: int = typer.Option(8001, help="Triton gRPC port"),
    metrics_port: int = typer.Option(8002, help="Triton metrics port (/metrics, Prometheus format)"),
    max_batch: int = typer.Option(8, min=1, help="largest dynamic batch (1 = no batching)"),
    max_queue_delay_ms: float = typer.Option(2.0, min=0, help="how long Triton waits to fill a batch"),
    backend: Backend = "auto",
    precision: Precision = "fp32",
    asr: Asr = "auto",
    asr_beam_size: AsrBeamSize = 1,
    asr_vad: AsrVad = True,
    asr_model: AsrModelName = "tiny.en",
    face_crop: FaceCrop = True,
    voice_check: VoiceCheck = True,
    threads: Threads = None,
    log_file: Optional[Path] = typer.Option(None, help="Triton's log [default: a temporary file, removed at a "
                                                       "clean stop, kept and named when Triton dies]"),
    grace_period: float = typer.Option(10.0, min=0, help="on Ctrl-C or SIGTERM, seconds running requests have "
                                                        "to be answered (new ones are refused) before Triton stops"),
) -> None:
    """Serve the pipeline on Triton Inference Server (PyTriton): models cmmsf_tensors and cmmsf_clip."""
    from cmmsf.runtime.serving.server import ServeOptions, serve

    serve(ServeOptions(settings=_settings(engines, backend, precision, asr, face_crop, threads,
                                                 asr_beam_size=asr_beam_size, asr_vad=asr_vad,
                                                 asr_model=asr_model, voice_check=voice_check), address=address,
                       http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, max_batch=max_batch,
                       max_queue_delay_ms=max_queue_delay_ms, log_file=log_file, grace_s=grace_period), console)


@run_app.command("bench")
@friendly
def run_bench(
    engines: Engines = None,
    backends: str = typer.Option("onnxruntime,torch", help="comma-separated backends to compare"),
    batch: str = typer.Option("1,8", help="comma-separated batch sizes"),
    precision: str = typer.Option("fp32", help="comma-separated ONNX precisions for onnxruntime, e.g. fp32,fp16"),
    runs: int = typer.Option(50, min=3, help="timed runs per backend and batch"),
    warmup: int = typer.Option(5, min=0, help="untimed runs first"),
    threads: Threads = None,
    json_out: Optional[Path] = typer.Option(None, "--json", help="write results as JSON"),
    plot: Optional[Path] = typer.Option(None, help="bar chart of p50 latency per stage, log axis (PNG)"),
    front_ends: bool = typer.Option(True, help="also time speech recognition (and Whisper features) at batch 1"),
    audio: Optional[Path] = typer.Option(None, help="speech to time the front-ends on [default: the MOSI wav in "
                                         "../shared/data/mosi/clips, else a generated tone]; "
                                         "with --serve-model clip, the clip every request sends"),
    serve: list[str] = typer.Option([], help="load-test a running server instead: http://HOST:PORT or "
                                             "grpc://HOST:PORT (repeat for both)"),
    serve_model: str = typer.Option("tensors", help="with --serve: tensors (cmmsf_tensors) or clip (cmmsf_clip)"),
    clients: str = typer.Option("1,8", help="with --serve: comma-separated numbers of concurrent clients"),
    requests: int = typer.Option(200, min=1, help="with --serve: requests per server and client count"),
) -> None:
    """Per-stage and end-to-end latency p50/p90/p99, throughput and memory, backends side by side.

    With --serve, a load test of a running `cmmsf-run serve` (or any Triton serving its models)."""
    sizes = _positive_ints(batch, "--batch")
    if serve:
        from cmmsf.runtime.serving.load_test import LoadOptions, read_clip, run_load, typical_request

        opts = LoadOptions(urls=serve, model=serve_model, clients=_positive_ints(clients, "--clients"),
                           requests=requests)
        if serve_model == "clip":
            if audio is None:
                raise UsageError("--serve-model clip needs the clip to send: --audio FILE")
            opts.clip, opts.clip_id = read_clip(audio), audio.name
        else:
            opts.tensors = typical_request(_engines_or_default(engines))
        rows = run_load(opts, console)
        if json_out:
            json_out.write_text(json.dumps(rows, indent=1) + "\n")
        if any(r["errors"] or r["lost"] for r in rows):
            raise typer.Exit(ExitCode.FAILED)
        return
    from cmmsf.runtime.bench import BenchOptions, run_bench as bench

    bench(BenchOptions(engines=_engines_or_default(engines), backends=_split(backends), batches=sizes,
                       precisions=_split(precision), runs=runs, warmup=warmup, threads=threads, json_out=json_out,
                       plot=plot, front_ends=front_ends, audio=audio), console)


@run_app.command("eval")
@friendly
def run_eval(
    data: list[Path] = typer.Argument(..., help="transcript CSV, MMSA pickle, clip folder, or a RAVDESS- or "
                                      "faces-style folder; several for several sources"),
    engines: Engines = None,
    split: EvalSplit = "test",
    labels: Labels = None,
    modalities: Modalities = None,
    sources: SourcesFile = None,
    gates: bool = typer.Option(False, help="hold each source to its gate in the sources file and exit 1 when one "
                                           "is missed (cmmsf-train eval's default; off here, where the data is "
                                           "often a user's own)"),
    backend: Backend = "auto",
    precision: Precision = "fp32",
    face_crop: FaceCrop = True,
    voice_check: VoiceCheck = True,
    asr: Asr = "off",
    asr_beam_size: AsrBeamSize = 1,
    asr_vad: AsrVad = True,
    asr_model: AsrModelName = "tiny.en",
    threads: Threads = None,
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the summary and the rows as JSON"),
) -> None:
    """The deployed artifacts through `cmmsf-train eval`'s evaluation: metrics and valence accuracies per
    source and modality subset, the gates, and how many Acc-2 decisions differ from PyTorch.

    --asr defaults to off here: labelled clips are read as training reads them."""
    from cmmsf.evaluation import parse_subsets
    from cmmsf.runtime.evaluate import EvalOptions, run_eval as evaluate

    settings = _settings(engines, backend, precision, asr, face_crop, threads, asr_beam_size=asr_beam_size,
                         asr_vad=asr_vad, asr_model=asr_model, voice_check=voice_check)
    rows, summary = evaluate(EvalOptions(data=data, settings=settings, split=split, labels=labels,
                                         modalities=parse_subsets(modalities), sources=sources, gates=gates), console)
    _report_rows(rows, f"{split} split, {settings.engines} on {summary['provider']} (MMSA metrics; accuracies in %)",
                 json_out, summary)


# ---------------------------------------------------------------- cmmsf-train


@train_app.command("fit")
@friendly
def train_fit(
    data: list[Path] = typer.Option(..., help="transcript CSV, MMSA pickle, clip folder, or a RAVDESS- or "
                                    "faces-style folder; repeat to train on several sources at once"),
    out: Path = typer.Option(Path("runs/fit"), help="run folder"),
    preset: str = typer.Option("edge", help="paper, edge or tiny"),
    variant: str = typer.Option("full", help="full, no-bilstm, no-mgf, cm-msf-i, cm-msf-ii, text-bert, text-lstm"),
    config: Optional[Path] = typer.Option(None, help="a config JSON instead of a preset"),
    recipe: str = typer.Option("edge", help="training recipe: edge, paper, or a JSON file (cmmsf/recipes/)"),
    labels: Optional[Path] = typer.Option(None, help="labels CSV for a clip folder"),
    epochs: Optional[int] = typer.Option(None, min=1, help="[default: the recipe's]"),
    batch_size: Optional[int] = typer.Option(None, min=1, help="[default: the recipe's]"),
    lr: Optional[float] = typer.Option(None, help="[default: the recipe's]"),
    loss: Optional[str] = typer.Option(None, help="l1 or mse [default: the recipe's]"),
    seed: int = typer.Option(0),
    seeds: int = typer.Option(1, min=1, help="train this many seeds and report mean ± std"),
    modality_dropout: Optional[float] = typer.Option(None, help="probability of masking a whole modality"),
    patience: Optional[int] = typer.Option(None, help="early stop after this many stale epochs (0 = never)"),
    init: Optional[str] = typer.Option(None, help="start from this checkpoint's weights (`default` or a folder)"),
    sources: Optional[Path] = typer.Option(None, help="emotion→sentiment mapping and splits "
                                           "[default: cmmsf/recipes/sources.json]"),
    select_data: Optional[list[Path]] = typer.Option(None, help="a source never trained on: its dev split picks "
                                                     "the checkpoint, its test split is reported (leave one "
                                                     "corpus out); repeatable"),
    fresh: Optional[list[str]] = typer.Option(None, help="a stage left freshly initialised when starting from "
                                              "--init, e.g. audio_encoder; repeatable"),
    select: Optional[str] = typer.Option(None, help="mae, valence3 or hap_neg [default: the recipe's]"),
) -> None:
    """Train on real data: checkpoint, metrics.json and train.log in the run folder (resumable)."""
    from cmmsf.config import ModelConfig, preset as make_preset, with_variant
    from cmmsf.train import TrainOptions, fit
    from cmmsf.runtime.report import metrics_table

    model_config = with_variant(ModelConfig.load(config) if config else make_preset(preset), variant)
    opts = TrainOptions.from_recipe(recipe, epochs=epochs, batch_size=batch_size, lr=lr, loss=loss, seed=seed,
                                    modality_dropout=modality_dropout, patience=patience, init=init,
                                    fresh=fresh or None, select=select)
    summary = fit(model_config, data, out, opts, seeds, labels, console, sources, select_data)
    means = {split: {k: v["mean"] for k, v in m.items()} for split, m in summary["summary"].items()}
    stds = {split: {k: v["std"] for k, v in m.items() if k != "n"} for split, m in summary["summary"].items()}
    console.print(f"mean ± std over {seeds} seed(s):")
    console.print(metrics_table(means, stds))
    console.print(f"run folder: {out}  (checkpoint: {out / ('seed_%d' % seed if seeds > 1 else '') / 'checkpoint'})")


@train_app.command("voice-stats")
@friendly
def train_voice_stats(
    data: list[Path] = typer.Option(..., help="the speech the checkpoint's voice was trained on (its train split "
                                    "is fitted, its dev split sets the bound); repeat for several sources"),
    checkpoint: str = typer.Option("default", help="`default` or a checkpoint folder: the statistics are written "
                                   "into it"),
    labels: Labels = None,
    sources: SourcesFile = None,
) -> None:
    """Fit which voices the checkpoint knows: a voice unlike them is left out at run time (absent, with why)."""
    from cmmsf.checkpoint import CONFIG, resolve_checkpoint
    from cmmsf.config import ModelConfig
    from cmmsf.voice_stats import fit_voice_statistics, write_voice_statistics

    folder = resolve_checkpoint(checkpoint)
    with console.status("reading the voices' front-end states…"):
        stats, report = fit_voice_statistics(ModelConfig.load(folder / CONFIG), data, labels, sources, console)
    path = write_voice_statistics(stats, folder)
    console.print(f"{report['train_voices']} training voices, {report['dev_voices']} dev voices; bound "
                  f"{report['bound']:.3g}: left out {report['train_left_out_pct']:.1f}% of train, "
                  f"{report['dev_left_out_pct']:.1f}% of dev")
    console.print(f"wrote {path} (rebuild engine folders of this checkpoint to carry it)")


@train_app.command("adapt-faces")
@friendly
def train_adapt_faces(
    data: list[Path] = typer.Option(..., help="faces-style folders (faces/, fer2013/): their train splits teach "
                                    "the backbone, their dev splits pick the epoch"),
    init: str = typer.Option("default", help="`default` or a checkpoint folder whose video backbone is `fer`"),
    out: Path = typer.Option(Path("runs/faces_adapted"), help="run folder: the checkpoint goes to OUT/checkpoint"),
    epochs: int = typer.Option(6, min=1),
    lr: float = typer.Option(3e-4, min=0.0),
    seed: int = typer.Option(0),
    sources: SourcesFile = None,
) -> None:
    """Adapt the FER2013 face backbone to the detector's crops (7 expressions, every class weighted alike),
    before `fit --recipe video_detected --init OUT/checkpoint` trains the video encoder on it."""
    from cmmsf.face_adapt import AdaptOptions, adapt_backbone

    report = adapt_backbone(init, data, out, AdaptOptions(epochs=epochs, lr=lr, seed=seed), console.print, sources)
    console.print(f"kept epoch {report['best_epoch']} of {epochs} (best mean dev 3-way valence) in "
                  f"{report['seconds']:.0f} s: {out / 'checkpoint'}")


@train_app.command("eval")
@friendly
def train_eval(
    data: list[Path] = typer.Option(..., help="transcript CSV, MMSA pickle, clip folder, or a RAVDESS- or "
                                    "faces-style folder; repeat for several sources"),
    checkpoint: str = typer.Option("default", help="`default` or a checkpoint folder"),
    split: EvalSplit = "test",
    labels: Labels = None,
    modalities: Modalities = None,
    sources: SourcesFile = None,
    gates: bool = typer.Option(True, help="exit 1 when a source misses its gate"),
    voice_check: VoiceCheck = True,
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the rows as JSON"),
) -> None:
    """MMSA metrics and valence accuracies per source and per modality subset, with the gates."""
    from cmmsf.checkpoint import load_checkpoint, resolve_checkpoint
    from cmmsf.evaluation import evaluate_sources, parse_subsets
    from cmmsf.inputs.familiarity import load_voice_familiarity
    from cmmsf.scoring import ModelScorer

    subsets = parse_subsets(modalities)
    voice = load_voice_familiarity(resolve_checkpoint(checkpoint)) if voice_check else None
    _, rows = evaluate_sources(ModelScorer(load_checkpoint(checkpoint), voice), data, split, labels, sources, subsets,
                               gates, console)
    _report_rows(rows, f"{split} split, {checkpoint} (MMSA metrics; accuracies in %)", json_out, None)


def _report_rows(rows: list, title: str, json_out: Optional[Path], extra: Optional[dict]) -> None:
    """Both eval commands: the per-source table, `--json` (the rows, with `extra` beside them), and exit 1
    when a gate is missed."""
    from cmmsf.evaluation import row_records
    from cmmsf.runtime.report import subset_view

    console.print(subset_view(rows, title))
    if json_out:
        json_out.write_text(json.dumps(row_records(rows) if extra is None else {**extra, "rows": row_records(rows)},
                                       indent=1) + "\n")
        console.print(f"wrote {json_out}")
    failed = [f"{r.source} {r.subset}" for r in rows if r.failures]
    if failed:
        err_console.print(f"[red]gate missed:[/] {', '.join(failed)}")
        raise typer.Exit(ExitCode.FAILED)


if __name__ == "__main__":
    run_app()
