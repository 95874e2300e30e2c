"""`cmmsf-export build` and `check`: checkpoint → per-stage ONNX (FP32, FP16) → parity → plans → manifest.

One entry point, every step timed and reported the same way, the manifest written last and only when
parity passed, and the next commands printed at the end (the Ultralytics exporter's habits).
"""

from __future__ import annotations

import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import onnx
import onnxruntime
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import cmmsf
from cmmsf.checkpoint import CONFIG, WEIGHTS, load_checkpoint, resolve_checkpoint
from cmmsf.contracts import STAGES
from inputs.errors import CmmsfError
from inputs.hashing import sha256_file
from cmmsf.sample_inputs import make_inputs
from runtime.manifest import (FORMAT_VERSION, MANIFEST, ManifestError, artifact_record, read_manifest,
                              verify_artifacts, write_manifest)

from . import tensorrt_build
from .fp16 import convert_to_fp16
from .onnx_export import OPSET, export_stage
from .parity import ParityReport, check_parity, parity_cases, reference
from .profiles import ShapeProfile, default_profile, input_axes, stage_shapes
from .report import manifest_table, next_commands

PARITY_REPORT = "parity_report.json"


class BuildError(CmmsfError, RuntimeError):
    """A build or check that must stop; the message is meant for the user, not a traceback."""


def checkpoint_hashes(folder: Path) -> dict[str, str]:
    """sha256 of a checkpoint's two files, as the manifest records them."""
    return {name: sha256_file(folder / name) for name in (WEIGHTS, CONFIG)}


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not force:
            raise BuildError(f"{out} already holds a build; pass --force to overwrite it")
        (out / MANIFEST).unlink(missing_ok=True)  # a failed rebuild must not leave the old success claim
    out.mkdir(parents=True, exist_ok=True)


def _export_example(model) -> dict[str, torch.Tensor]:
    """Every stage's example inputs, with distinct sizes per dynamic axis so none is traced as a constant."""
    arrays = make_inputs(model.config, batch=2, text_len=9, audio_len=13, video_len=5, seed=0)
    return {k: torch.from_numpy(v) for k, v in reference(model, arrays).items()}


def _build_name(folder: Path, checkpoint: str) -> str:
    """engines/default for the shipped checkpoint, else the run's name (runs/x/checkpoint → x)."""
    if checkpoint == "default":
        return "default"
    return folder.resolve().parent.name if folder.name == "checkpoint" else folder.name


def _tensor_records(stage: str, config) -> dict[str, list[dict]]:
    spec = STAGES[stage]
    return {kind: [{"name": t.name, "dtype": t.dtype, "axes": list(input_axes(t, config))} for t in tensors]
            for kind, tensors in (("inputs", spec.inputs), ("outputs", spec.outputs))}


def build(checkpoint: str = "default", out: Path | None = None, precision: str = "fp16",
          tensorrt: str = "auto", profile: ShapeProfile | None = None, force: bool = False,
          console: Console | None = None) -> dict:
    """Run the whole build; returns the manifest. Raises BuildError with a one-line reason."""
    console = console or Console()
    if precision not in ("fp16", "fp32") or tensorrt not in ("auto", "on", "off"):
        raise BuildError(f"bad --precision {precision!r} or --tensorrt {tensorrt!r}")
    try:
        ck_folder = resolve_checkpoint(checkpoint)
        model = load_checkpoint(ck_folder)
    except (ValueError, FileNotFoundError) as err:
        raise BuildError(str(err)) from None
    config = model.config
    profile = profile or default_profile(config)
    out = Path(out) if out else Path("engines") / _build_name(ck_folder, checkpoint)
    _prepare_out(out, force)
    trt_reason = tensorrt_build.unavailable_reason() if tensorrt != "off" else "--tensorrt off"
    if tensorrt == "on" and trt_reason:
        raise BuildError(f"--tensorrt on, but {trt_reason}")

    stages: dict[str, dict] = {}
    example = _export_example(model)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), console=console, transient=True)
    with progress:
        task = progress.add_task("exporting", total=len(STAGES))
        for stage in STAGES:
            progress.update(task, description=f"exporting {stage}")
            start = time.perf_counter()
            fp32 = export_stage(model, stage, example, out / f"{stage}.onnx", config)
            fp16 = convert_to_fp16(fp32, out / f"{stage}.fp16.onnx")
            seconds = time.perf_counter() - start
            stages[stage] = {**_tensor_records(stage, config), "export_seconds": round(seconds, 3),
                             "profile_shapes": stage_shapes(stage, config, profile),
                             "artifacts": {"fp32": artifact_record(fp32), "fp16": artifact_record(fp16)}}
            console.print(f"  [green]✓[/] {stage:<14} {seconds:5.1f} s  "
                          f"{fp32.stat().st_size / 1e6:6.1f} MB fp32  {fp16.stat().st_size / 1e6:6.1f} MB fp16")
            progress.advance(task)

    console.print("parity: ONNX Runtime vs PyTorch on min, typical, padded, max and real-sentence inputs…")
    start = time.perf_counter()
    report = run_parity(model, out, stages, config, profile)
    console.print(f"  parity took {time.perf_counter() - start:.1f} s on {report.provider}")
    if not report.passed:
        raise BuildError(f"parity failed; see {out / PARITY_REPORT}:\n  " + "\n  ".join(report.failures))

    tensorrt_info = _build_plans(out, stages, config, profile, precision, trt_reason, console)
    manifest = {
        "format": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"config": config.to_dict(), "checkpoint": str(ck_folder.resolve()),
                  "checkpoint_sha256": checkpoint_hashes(ck_folder)},
        "opset": OPSET, "precision": precision, "profile": profile.to_dict(),
        "versions": {"cmmsf": cmmsf.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
                     "tensorrt": tensorrt_info.get("tensorrt")},
        "tensorrt": tensorrt_info,
        "stages": stages,
        "parity": {k: v for k, v in report.to_dict().items() if k != "errors"},
    }
    write_manifest(out, manifest)
    console.print(manifest_table(manifest))
    console.print(next_commands(str(out)))
    return manifest


def run_parity(model, out: Path, stages: dict, config, profile: ShapeProfile) -> ParityReport:
    """Parity of the folder's ONNX graphs against `model`; writes parity_report.json either way."""
    graphs = {kind: {s: out / stages[s]["artifacts"][kind]["file"] for s in STAGES} for kind in ("fp32", "fp16")}
    report = check_parity(model, graphs, parity_cases(config, profile))
    (out / PARITY_REPORT).write_text(json.dumps(report.to_dict(), indent=1, default=float))
    return report


def _build_plans(out: Path, stages: dict, config, profile: ShapeProfile, precision: str,
                 reason: str | None, console: Console) -> dict:
    if reason:
        console.print(f"[yellow]TensorRT plans skipped: {reason}.[/] ONNX Runtime runs the ONNX files.")
        return {"status": "skipped", "reason": reason, "tensorrt": None}
    identity = {}
    for stage in STAGES:
        start = time.perf_counter()
        path = tensorrt_build.choose_build_path(tensorrt_build.installed_version(), precision)
        source = out / stages[stage]["artifacts"][path.onnx_kind]["file"]
        try:
            identity = tensorrt_build.build_engine(source, out / f"{stage}.plan",
                                                   stage_shapes(stage, config, profile), precision,
                                                   out / "timing.cache")
        except tensorrt_build.EngineBuildError as err:
            raise BuildError(str(err)) from None
        stages[stage]["artifacts"]["plan"] = {**artifact_record(out / f"{stage}.plan"), **identity}
        console.print(f"  [green]✓[/] {stage:<14} plan in {time.perf_counter() - start:.1f} s")
    return {"status": "built", **identity}


def check(folder: Path, console: Console | None = None) -> ParityReport:
    """Re-hash every artifact and the checkpoint, then re-run parity. Raises BuildError on a problem."""
    console = console or Console()
    try:
        manifest = read_manifest(folder)
    except ManifestError as err:
        raise BuildError(str(err)) from None
    problems = verify_artifacts(folder, manifest)
    ck_folder = Path(manifest["model"]["checkpoint"])
    if not ck_folder.is_dir():
        problems.append(f"checkpoint {ck_folder} recorded in the manifest is gone")
    elif checkpoint_hashes(ck_folder) != manifest["model"]["checkpoint_sha256"]:
        problems.append(f"checkpoint {ck_folder} changed since the build")
    if problems:
        raise BuildError("check failed:\n  " + "\n  ".join(problems))
    console.print(f"[green]✓[/] {sum(len(s['artifacts']) for s in manifest['stages'].values())} artifacts "
                  "match their sha256; re-running parity…")
    model = load_checkpoint(ck_folder)
    profile = ShapeProfile(tuple(manifest["profile"]["batch"]), manifest["profile"]["max_len"])
    report = run_parity(model, folder, manifest["stages"], model.config, profile)
    if not report.passed:
        raise BuildError("parity failed:\n  " + "\n  ".join(report.failures))
    for precision, chained in report.chained.items():
        console.print(f"[green]✓[/] {precision}: chained score max abs error {chained['score_max_abs']:.2e}, "
                      f"{chained['acc2_flips']} Acc-2 flips over {chained['clips']} clips")
    return report
