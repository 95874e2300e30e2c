"""`cmmsf-run`: infer, stream, serve, bench, eval and backends. Each parses, builds settings, calls, prints."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Optional

import typer

from cmmsf.inputs.errors import UsageError
from cmmsf.runtime.settings import RunSettings

from .apps import run_app
from .common import ExitCode, console, err_console, friendly, positive_ints, split_list
from .options import (DATA_HELP, EnginesDir, EvalSplit, Labels, Modalities, SourcesFile, Threads, engines_or_default,
                      run_settings)
from .reports import report_rows


@run_app.command("infer")
@friendly
@run_settings(asr="auto")
def run_infer(
    paths: list[Path] = typer.Argument(..., help="clip files and/or folders (files grouped by stem)",
                                       metavar="PATHS..."),
    settings: RunSettings = None,  # the Engines, Speech recognition and Video and voice options
    out: Path = typer.Option(Path("results.jsonl"), help="one JSON line per clip (`-` = standard output)",
                             metavar="FILE"),
    batch: int = typer.Option(1, min=1, help="clips per micro-batch", metavar="N"),
    resume: bool = typer.Option(False, "--resume", help="score only the clips not already in --out"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an --out that already holds results"),
    retry: bool = typer.Option(True, "--retry/--no-retry", help="with --resume: run again the clips recorded "
                                                                "as failed"),
    ray: Optional[str] = typer.Option(None, help="run on Ray Data: `local` starts Ray here, `auto` joins the "
                                                "running cluster, or ray://HOST:10001", metavar="ADDRESS"),
    ray_actors: int = typer.Option(1, min=1, help="with --ray: stage actors (one backend each)", metavar="N"),
    num_gpus_per_actor: float = typer.Option(0.0, min=0, help="with --ray: GPUs each stage actor reserves",
                                             metavar="GPUS"),
    wait: bool = typer.Option(False, "--wait", help="when another run is writing --out, wait for it "
                                                    "(default: stop at once, naming it)"),
    plot: Optional[Path] = typer.Option(None, help="a folder for one timeline PNG per clip (score, words, gates)",
                                        metavar="DIR"),
) -> None:
    """Batch inference over clips → results.jsonl, a per-clip table and a summary. Exit 3 when some clips
    failed.

    An --out that already holds results is refused unless --resume (score the rest, retrying failed
    clips) or --overwrite is given."""
    from cmmsf.runtime.infer import InferOptions, LocalRunner, run_infer as infer
    from cmmsf.runtime.results import writes_to_stdout

    human = err_console if writes_to_stdout(out) else console  # JSON lines alone on stdout
    runner = LocalRunner
    if ray:
        from cmmsf.runtime.scale.ray_batch import RayRunner, RaySettings

        cluster = RaySettings(ray, ray_actors, num_gpus_per_actor)
        runner = functools.partial(RayRunner, cluster=cluster)
    result = infer(InferOptions(paths=paths, settings=settings, out=out, batch=batch, resume=resume,
                                overwrite=overwrite, retry=retry, wait=wait, plots=plot),
                   human, runner)
    if result.failed:
        raise typer.Exit(ExitCode.SOME_CLIPS_FAILED)


@run_app.command("stream")
@friendly
@run_settings(asr="auto")
def run_stream(
    source: str = typer.Argument(..., help="a media file, a camera index (0) or a URL", metavar="SOURCE"),
    settings: RunSettings = None,
    window: float = typer.Option(4.0, min=0.1, help="window length in seconds", metavar="SECONDS"),
    hop: float = typer.Option(2.0, min=0.05, help="seconds between window starts (at most --window)",
                              metavar="SECONDS"),
    transcript: Optional[Path] = typer.Option(None, help="transcript for the whole stream (.txt/.srt/.vtt)",
                                              metavar="FILE"),
    realtime: bool = typer.Option(False, "--realtime", help="pace a file as if it were live"),
    out: Optional[Path] = typer.Option(None, help="also write the JSON lines to this file", metavar="FILE"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an --out that already holds results"),
    plot: Optional[Path] = typer.Option(None, help="draw the windows over time to this PNG (spans, words, gates)",
                                        metavar="PNG"),
    connect_timeout: float = typer.Option(10.0, min=0.1, help="seconds to wait for a URL or camera to open",
                                          metavar="SECONDS"),
    read_timeout: float = typer.Option(10.0, min=0.1, help="seconds without data before a URL or camera counts as "
                                       "gone", metavar="SECONDS"),
    view: bool = typer.Option(False, "--view", help="watch it live: a page with the frame and face box, the "
                              "score timeline, the gates and the words"),
    view_port: int = typer.Option(8765, min=0, max=65535, help="the live page's port (0: any free one)",
                                  metavar="PORT"),
    view_address: str = typer.Option("127.0.0.1", help="the live page's listen address (0.0.0.0: all)",
                                     metavar="ADDRESS"),
    view_open: bool = typer.Option(True, "--view-open/--no-view-open", help="open the page in a browser"),
    keep_view: bool = typer.Option(False, "--keep-view", help="keep the page up after the source ends, "
                                   "until Ctrl-C"),
) -> None:
    """Sliding-window inference on a file, camera or URL as it plays; one JSON line per window.

    Without a transcript, each window carries the words recognised in it (--asr). A network or camera
    source that stops sending ends the stream after --read-timeout (no reconnect). --view serves a live
    page of the stream; stopping the stream stops the page."""
    if hop > window:
        raise UsageError(f"--hop {hop:g} is longer than --window {window:g}: the media between windows would "
                         "never be read; choose --hop at most --window")
    from cmmsf.runtime.stream import StreamOptions, ViewOptions, run_stream as stream

    stream(StreamOptions(source=source, settings=settings, window=window, hop=hop, transcript=transcript,
                         realtime=realtime, out=out, overwrite=overwrite, plot=plot, connect_timeout=connect_timeout,
                         read_timeout=read_timeout,
                         view=ViewOptions(address=view_address, port=view_port, open_browser=view_open,
                                          keep=keep_view) if view else None), err_console)


@run_app.command("serve")
@friendly
@run_settings(asr="auto")
def run_serve(
    settings: RunSettings = None,
    address: str = typer.Option("127.0.0.1", help="listen address for HTTP, gRPC and metrics (0.0.0.0: all)",
                                metavar="ADDRESS"),
    http_port: int = typer.Option(8000, help="Triton HTTP/REST port", metavar="PORT"),
    grpc_port: int = typer.Option(8001, help="Triton gRPC port", metavar="PORT"),
    metrics_port: int = typer.Option(8002, help="Triton metrics port (/metrics, Prometheus format)", metavar="PORT"),
    max_batch: int = typer.Option(8, min=1, help="largest dynamic batch (1 = no batching)", metavar="N"),
    max_queue_delay_ms: float = typer.Option(2.0, min=0, help="how long Triton waits to fill a batch", metavar="MS"),
    log_file: Optional[Path] = typer.Option(None, help="Triton's log (default: a temporary file, removed at a "
                                                       "clean stop, kept and named when Triton dies)",
                                            metavar="FILE"),
    grace_period: float = typer.Option(10.0, min=0, help="on Ctrl-C or SIGTERM, seconds running requests have "
                                                        "to be answered (new ones are refused) before Triton stops",
                                       metavar="SECONDS"),
) -> None:
    """Serve the pipeline on Triton Inference Server (PyTriton): models cmmsf_tensors and cmmsf_clip."""
    from cmmsf.runtime.serving.server import ServeOptions, bound_exit, serve

    serve(ServeOptions(settings=settings, address=address, http_port=http_port, grpc_port=grpc_port,
                       metrics_port=metrics_port, max_batch=max_batch, max_queue_delay_ms=max_queue_delay_ms,
                       log_file=log_file, grace_s=grace_period), console)
    bound_exit()  # this process only serves: its exit must not wait on threads PyTriton left behind


@run_app.command("bench")
@friendly
def run_bench(
    engines: EnginesDir = None,
    backends: str = typer.Option("onnxruntime,torch", help="comma-separated backends to compare "
                                 "(`cmmsf-run backends` lists them)", metavar="LIST"),
    batch: str = typer.Option("1,8", help="comma-separated batch sizes", metavar="LIST"),
    precision: str = typer.Option("fp32", help="comma-separated precisions, e.g. fp32,fp16: each backend runs "
                                  "those it can choose", metavar="LIST"),
    runs: int = typer.Option(50, min=3, help="timed runs per backend and batch", metavar="N"),
    warmup: int = typer.Option(5, min=0, help="untimed runs first", metavar="N"),
    threads: Threads = None,
    json_out: Optional[Path] = typer.Option(None, "--json", help="write results as JSON", metavar="FILE"),
    plot: Optional[Path] = typer.Option(None, help="bar chart of p50 latency per stage, log axis (PNG)",
                                        metavar="PNG"),
    front_ends: bool = typer.Option(True, help="also time speech recognition (and Whisper features) at batch 1"),
    profile: bool = typer.Option(False, "--profile", help="per stage: the top operators from each backend's own "
                                 "profiler, FLOPs counted from the graph, GFLOP/s and the machine's measured peak"),
    audio: Optional[Path] = typer.Option(None, help="speech to time the front-ends on (default: the MOSI wav in "
                                         "../shared/data/mosi/clips, else a generated tone); "
                                         "with --serve-model clip, the clip every request sends", metavar="FILE"),
    serve: list[str] = typer.Option([], help="load-test a running server instead: http://HOST:PORT or "
                                             "grpc://HOST:PORT (repeat for both)", metavar="URL"),
    serve_model: str = typer.Option("tensors", help="with --serve: tensors (cmmsf_tensors) or clip (cmmsf_clip)",
                                    metavar="MODEL"),
    clients: str = typer.Option("1,8", help="with --serve: comma-separated numbers of concurrent clients",
                                metavar="LIST"),
    requests: int = typer.Option(200, min=1, help="with --serve: requests per server and client count", metavar="N"),
) -> None:
    """Per-stage and end-to-end latency p50/p90/p99, throughput and memory, backends side by side.

    With --serve, a load test of a running `cmmsf-run serve` (or any Triton serving its models)."""
    sizes = positive_ints(batch, "--batch")
    if serve:
        from cmmsf.runtime.serving.load_test import LoadOptions, read_clip, run_load, typical_request

        opts = LoadOptions(urls=serve, model=serve_model, clients=positive_ints(clients, "--clients"),
                           requests=requests)
        if serve_model == "clip":
            if audio is None:
                raise UsageError("--serve-model clip needs the clip to send: --audio FILE")
            opts.clip, opts.clip_id = read_clip(audio), audio.name
        else:
            opts.tensors = typical_request(engines_or_default(engines))
        rows = run_load(opts, console)
        if json_out:
            json_out.write_text(json.dumps(rows, indent=1) + "\n")
        if any(r["errors"] or r["lost"] for r in rows):
            raise typer.Exit(ExitCode.FAILED)
        return
    from cmmsf.runtime.bench import BenchOptions, run_bench as bench

    bench(BenchOptions(engines=engines_or_default(engines), backends=split_list(backends), batches=sizes,
                       precisions=split_list(precision), runs=runs, warmup=warmup, threads=threads, json_out=json_out,
                       plot=plot, front_ends=front_ends, audio=audio, profile=profile), console)


@run_app.command("eval")
@friendly
@run_settings()
def run_eval(
    data: list[Path] = typer.Argument(..., help=DATA_HELP, metavar="DATA..."),
    settings: RunSettings = None,
    split: EvalSplit = "test",
    labels: Labels = None,
    modalities: Modalities = None,
    sources: SourcesFile = None,
    gates: bool = typer.Option(False, help="hold each source to its gate in the sources file and exit 1 when one "
                                           "is missed (cmmsf-train eval's default; off here, where the data is "
                                           "often a user's own)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the summary and the rows as JSON",
                                            metavar="FILE"),
) -> None:
    """The deployed artifacts through `cmmsf-train eval`'s evaluation: metrics and valence accuracies per
    source and modality subset, the gates, and how many Acc-2 decisions differ from PyTorch.

    --asr defaults to off here: labelled clips are read as training reads them."""
    from cmmsf.evaluation.evaluator import parse_subsets
    from cmmsf.runtime.evaluate import EvalOptions, run_eval as evaluate

    rows, summary = evaluate(EvalOptions(data=data, settings=settings, split=split, labels=labels,
                                         modalities=parse_subsets(modalities), sources=sources, gates=gates), console)
    report_rows(rows, f"{split} split, {settings.engines} on {summary['provider']} (MMSA metrics; accuracies in %)",
                json_out, summary)


@run_app.command("backends")
@friendly
def run_backends(
    engines: EnginesDir = None,
) -> None:
    """Every registered backend: its precisions and devices, and whether it can run the engine folder here
    (and why not), then what `--backend auto` picks."""
    from cmmsf.runtime.backends import LoadRequest, registry, resolve_auto
    from cmmsf.runtime.engine_folder import EngineFolder
    from cmmsf.runtime.report import backends_table

    folder = EngineFolder.open(engines_or_default(engines))
    rows = [(spec, spec.problem(folder, LoadRequest())) for spec in registry().values()]
    console.print(backends_table(rows))
    name, why = resolve_auto(folder)
    console.print(f"auto → {name} ({why})", highlight=False)
