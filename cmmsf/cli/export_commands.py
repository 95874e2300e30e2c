"""`cmmsf-export`: build, check, inspect and triton. Each parses, calls and prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cmmsf.inputs.errors import UsageError

from .apps import export_app
from .common import ExitCode, console, err_console, friendly

@export_app.command("build")
@friendly
def export_build(
    checkpoint: str = typer.Option("default", help="`default` (shipped) or a checkpoint folder"),
    out: Optional[Path] = typer.Option(None, help="output folder (default: the user cache for the shipped "
                                       "checkpoint, where cmmsf-run finds it; engines/NAME for another)",
                                       metavar="DIR"),
    precision: str = typer.Option("fp16", help="TensorRT plan precision: fp16, fp32, or int8 (also writes INT8 "
                                  "ONNX graphs, calibrated and guarded on --data-dir)"),
    data_dir: Optional[Path] = typer.Option(None, help="int8: the folder holding mosi/, ravdess/, emodb/ and "
                                            "faces/ (train splits calibrate, dev splits guard accuracy)"),
    tensorrt: str = typer.Option("auto", help="auto: build plans where TensorRT and a GPU exist; on; off"),
    batch: str = typer.Option("1,1,8", help="profile batch MIN,OPT,MAX"),
    max_len: str = typer.Option("", help="profile max lengths, e.g. text=64,audio=150,video=180"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing build"),
) -> None:
    """Checkpoint → per-stage ONNX (FP32, FP16; INT8 with --precision int8), parity checks, TensorRT plans,
    manifest.json."""
    from cmmsf.model.checkpoint import CONFIG, resolve_checkpoint
    from cmmsf.config import ModelConfig
    from cmmsf.export.build import BuildOptions, build
    from cmmsf.export.profiles import ShapeProfile, default_profile, parse_batch, parse_max_len

    base = default_profile(ModelConfig.load(resolve_checkpoint(checkpoint) / CONFIG))
    profile = ShapeProfile(parse_batch(batch), parse_max_len(max_len, base.max_len))
    build(BuildOptions(checkpoint=checkpoint, out=out, precision=precision, tensorrt=tensorrt, profile=profile,
                       force=force, data_dir=data_dir), console)


@export_app.command("check")
@friendly
def export_check(folder: Path = typer.Argument(..., help="an engine folder")) -> None:
    """Re-hash every artifact and the checkpoint, then re-run parity."""
    from cmmsf.export.build import check

    check(folder, console)


@export_app.command("tune")
@friendly
def export_tune(
    folder: Path = typer.Argument(..., help="an engine folder", metavar="DIR"),
    data_dir: Optional[Path] = typer.Option(None, help="where mosi/, ravdess/ and faces/ are: their dev splits guard "
                                            "reduced precision (FP16, INT8, BF16); without them the verdicts "
                                            "recorded with the checkpoint, else only FP32 compute may win",
                                            metavar="DIR"),
    runs: int = typer.Option(30, min=3, help="timed runs per candidate, spread over --rounds", metavar="N"),
    rounds: int = typer.Option(3, min=1, help="interleaved rounds (the minimum of their medians counts)",
                               metavar="N"),
    record: bool = typer.Option(False, "--record", help="with --data-dir: keep the reduced-precision verdicts "
                                "beside the checkpoint's weights, where tuning without data (a user's first "
                                "run) reads them"),
) -> None:
    """Time every stage on every backend × precision that runs here and passes parity and the accuracy
    guard; write the winners to DIR/tuning.json, where `--backend auto` runs each stage on its winner."""
    from cmmsf.export.tune import TuneOptions, tune

    if record and data_dir is None:
        raise UsageError("--record keeps the verdicts measured on --data-dir: give both")
    tune(TuneOptions(folder=folder, data_dir=data_dir, runs=runs, rounds=rounds, record=record), console)


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


