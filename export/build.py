"""`cmmsf-export build` and `check`: checkpoint → per-stage ONNX (FP32, FP16; INT8 when asked) → parity →
plans → manifest.

One entry point, every step timed and reported one way (export/steps.py), parity over the backend
interface (ONNX Runtime for the graphs, TensorRT for the plans), the manifest written last and only
when parity passed, and the next commands printed at the end (the Ultralytics exporter's habits).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import onnx
import onnxruntime
import torch
from rich.console import Console

import cmmsf
from cmmsf.model.checkpoint import CONFIG, WEIGHTS, load_checkpoint, resolve_checkpoint
from cmmsf.contracts import STAGE_ORDER, STAGES, input_axes
from cmmsf.model.network import CMMSF
from cmmsf.sample_inputs import make_inputs
from cmmsf.inputs.backbone_files import tokenizer_file
from cmmsf.inputs.familiarity import VOICE_FILE
from cmmsf.inputs.errors import CmmsfError
from cmmsf.inputs.hashing import sha256_file
from cmmsf.runtime.backends.registry import engine_candidates
from cmmsf.runtime.backends.base import Backend
from cmmsf.runtime.backends.onnxruntime import OnnxRuntimeBackend
from cmmsf.runtime.backends.torch_ref import TorchBackend
from cmmsf.runtime.engine_folder import ONNX_PRECISIONS, Artifact, EngineFolder, ManifestError, checkpoint_reference
from cmmsf.runtime.gpu import device_identity, tensorrt_problem
from cmmsf.runtime.locations import default_engines_dir
from cmmsf.inputs.face_detector import LICENCE as DETECTOR_NOTICE
from cmmsf.inputs.face_detector import SHIPPED as SHIPPED_DETECTOR
from cmmsf.inputs.face_detector import SHIPPED_SHA256 as SHIPPED_DETECTOR_SHA256
from cmmsf.inputs.face_detector import dynamic_graph
from cmmsf.runtime.manifest import (DETECTOR, DETECTOR_LICENCE, DETECTOR_PLAN, MANIFEST, TOKENIZER, Manifest,
                                    artifact_record, write_manifest)

from . import tensorrt_build
from .fp16 import convert_to_fp16
from .onnx_export import OPSET, export_stage
from .parity import ParityReport, check_parity, parity_cases
from .profiles import ShapeProfile, default_profile, stage_shapes
from .report import manifest_table, next_commands
from .steps import StepLog

PARITY_REPORT = "parity_report.json"
PRECISIONS = (*ONNX_PRECISIONS, "int8")
"""--precision: what the TensorRT plans run in; int8 also writes (and guards) the INT8 graphs."""
TENSORRT_MODES = ("auto", "on", "off")


class BuildError(CmmsfError, RuntimeError):
    """A build or check that must stop; the message is meant for the user, not a traceback."""


@dataclass(kw_only=True)
class BuildOptions:
    checkpoint: str = "default"
    out: Path | None = None
    """[default: the user cache for the shipped checkpoint, else engines/<checkpoint name>]"""
    precision: str = "fp16"
    """Precision of the TensorRT plans; FP32 and FP16 graphs are always written, INT8 graphs for int8."""
    data_dir: Path | None = None
    """int8 only: where mosi/, ravdess/, emodb/ and faces/ are (calibration on train, the guard on dev)."""
    tensorrt: str = "auto"
    profile: ShapeProfile | None = None
    """[default: batch 1/1/8 and the config's maximum lengths]"""
    force: bool = False


def checkpoint_hashes(folder: Path) -> dict[str, str]:
    """sha256 of a checkpoint's files (weights, config and, where fitted, voice statistics)."""
    return {name: sha256_file(folder / name) for name in (WEIGHTS, CONFIG, VOICE_FILE) if (folder / name).is_file()}


def _check_out(out: Path, force: bool) -> None:
    """Refuse to replace a file, or a folder that holds something, without --force (nothing is touched)."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise BuildError(f"{out} already holds a build; pass --force to overwrite it")


def _staging(out: Path) -> Path:
    """A fresh folder beside `out` to build in: the build is published by one rename when it is complete,
    so an interrupted or failed build leaves `out` as it was (and a run reading it meanwhile sees the old
    build, never half a new one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _publish(staging: Path, out: Path) -> None:
    """Swap the finished build in: the old folder is renamed aside, the new one renamed in, the old removed."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def _kept_report(staging: Path, out: Path) -> Path:
    """A failed build's parity report, kept beside `out` (the staging folder is removed)."""
    kept = out.parent / f"{out.name}.{PARITY_REPORT}"
    shutil.copyfile(staging / PARITY_REPORT, kept)
    return kept


def _export_example(model: CMMSF) -> dict[str, torch.Tensor]:
    """Every stage's example inputs, with distinct sizes per dynamic axis so none is traced as a constant."""
    arrays = make_inputs(model.config, batch=2, text_len=9, audio_len=13, video_len=5, seed=0)
    return {k: torch.from_numpy(v) for k, v in TorchBackend(model, device="cpu").run(arrays).items()}


def _default_out(folder: Path, checkpoint: str) -> Path:
    """The shipped checkpoint's engines go to the user cache (where `cmmsf-run` finds them); another
    checkpoint's to engines/<run name> (runs/x/checkpoint → engines/x)."""
    if checkpoint == "default":
        return default_engines_dir()
    return Path("engines") / (folder.resolve().parent.name if folder.name == "checkpoint" else folder.name)


def _tensor_records(stage: str, config) -> dict[str, list[dict]]:
    spec = STAGES[stage]
    return {kind: [{"name": t.name, "dtype": t.dtype, "axes": list(input_axes(t, config))} for t in tensors]
            for kind, tensors in (("inputs", spec.inputs), ("outputs", spec.outputs))}


def _onnx_backends(graphs: dict[str, dict[str, Path]]) -> dict[str, Backend]:
    return {kind: OnnxRuntimeBackend(files, kind) for kind, files in graphs.items()}


def run_parity(model: CMMSF, candidates: dict[str, Backend], profile: ShapeProfile, out: Path,
               earlier: ParityReport | None = None) -> ParityReport:
    """Parity of `candidates` against `model` on CPU FP32; writes parity_report.json either way."""
    report = check_parity(TorchBackend(model, device="cpu"), candidates, parity_cases(model.config, profile))
    if earlier is not None:  # plans are checked after the graphs: one report holds both
        report.providers = {**earlier.providers, **report.providers}
        report.errors = earlier.errors + report.errors
        report.chained = {**earlier.chained, **report.chained}
        report.failures = earlier.failures + report.failures
    (out / PARITY_REPORT).write_text(json.dumps(report.to_dict(), indent=1, default=float))
    return report


def _parity_detail(report: ParityReport) -> str:
    return "  ".join(f"{kind}: score err {c['score_max_abs']:.1e}, {c['acc2_flips']} flips / {c['clips']}"
                     for kind, c in report.chained.items())


def build(opts: BuildOptions, console: Console | None = None) -> Manifest:
    """Run the whole build in a staging folder and publish it complete; returns the manifest. Raises
    BuildError with a one-line reason, leaving `--out` as it was."""
    console = console or Console()
    if opts.precision not in PRECISIONS or opts.tensorrt not in TENSORRT_MODES:
        raise BuildError(f"--precision must be one of {', '.join(PRECISIONS)} (got {opts.precision!r}) and "
                         f"--tensorrt one of {', '.join(TENSORRT_MODES)} (got {opts.tensorrt!r})")
    if opts.precision == "int8" and opts.data_dir is None:
        raise BuildError("--precision int8 calibrates on real inputs and guards accuracy on dev splits: give "
                         "--data-dir (the folder holding mosi/, ravdess/, emodb/ and faces/)")
    log = StepLog(console)
    with log.step("load checkpoint") as step:
        try:
            ck_folder = resolve_checkpoint(opts.checkpoint)
            model = load_checkpoint(ck_folder)
        except (ValueError, FileNotFoundError) as err:
            raise BuildError(str(err)) from None
        step.detail = f"{model.config.name} preset from {ck_folder}"
    config = model.config
    profile = opts.profile or default_profile(config)
    final = Path(opts.out) if opts.out else _default_out(ck_folder, opts.checkpoint)
    _check_out(final, opts.force)
    out = _staging(final)
    try:
        _build_stages(opts, model, ck_folder, profile, out, final, log)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    _publish(out, final)
    manifest = EngineFolder.open(final).manifest
    console.print(manifest_table(manifest))
    console.print(next_commands(str(final)))
    return manifest


def _build_stages(opts: BuildOptions, model: CMMSF, ck_folder: Path, profile: ShapeProfile, out: Path,
                  final: Path, log: StepLog) -> None:
    """Every artifact and the manifest into `out` (the staging folder of `final`)."""
    config = model.config
    trt_reason = tensorrt_problem() if opts.tensorrt != "off" else "--tensorrt off"
    if opts.tensorrt == "on" and trt_reason:
        raise BuildError(f"--tensorrt on, but {trt_reason}")

    stages: dict[str, dict] = {}
    example = _export_example(model)
    for stage in STAGE_ORDER:
        with log.step(f"export {stage}") as step:
            fp32 = export_stage(model, stage, example, out / f"{stage}.onnx", config)
            fp16 = convert_to_fp16(fp32, out / f"{stage}.fp16.onnx")
            stages[stage] = {**_tensor_records(stage, config),
                             "profile_shapes": stage_shapes(stage, config, profile),
                             "artifacts": {"fp32": artifact_record(fp32), "fp16": artifact_record(fp16)}}
            step.detail = f"{fp32.stat().st_size / 1e6:6.1f} MB fp32  {fp16.stat().st_size / 1e6:6.1f} MB fp16"

    graphs = {kind: {s: out / stages[s]["artifacts"][kind]["file"] for s in STAGE_ORDER} for kind in ONNX_PRECISIONS}
    with log.step("parity onnx vs pytorch") as step:
        report = run_parity(model, _onnx_backends(graphs), profile, out)
        step.detail = f"{_parity_detail(report)}  on {report.providers['fp32']}"
    if not report.passed:
        raise BuildError(f"parity failed; see {_kept_report(out, final)}:\n  " + "\n  ".join(report.failures))
    calibration = _int8_graphs(config, graphs["fp32"], stages, opts.data_dir, out, log) if opts.precision == "int8" \
        else None

    detector = write_face_detector(out)
    detector_record = {**artifact_record(detector), "licence": artifact_record(detector.with_name(DETECTOR_LICENCE))}
    tensorrt_info = {"status": "skipped", "reason": trt_reason, "tensorrt": None}
    if trt_reason:
        log.skipped("tensorrt plans", f"{trt_reason}; ONNX Runtime runs the ONNX files")
    else:
        tensorrt_info = _build_plans(out, stages, config, profile, opts.precision, log)
        with log.step("parity plans vs pytorch") as step:
            from cmmsf.runtime.backends.tensorrt import TensorRTBackend

            plans = {s: out / stages[s]["artifacts"][Artifact.PLAN.value]["file"] for s in STAGE_ORDER}
            report = run_parity(model, {"plan": TensorRTBackend(plans, opts.precision)}, profile, out, report)
            step.detail = _parity_detail(report)
        if not report.passed:
            raise BuildError(f"plan parity failed; see {_kept_report(out, final)}:\n  "
                             + "\n  ".join(report.failures))
        detector_record["plan"] = _build_detector_plan(out, detector, log)

    tokenizer = out / TOKENIZER
    shutil.copyfile(tokenizer_file(config.text.backbone), tokenizer)  # the device needs no backbone package
    voice = None
    if (ck_folder / VOICE_FILE).is_file():  # the runtime leaves out voices unlike those the model learned
        voice = shutil.copyfile(ck_folder / VOICE_FILE, out / VOICE_FILE)
    else:
        (out / VOICE_FILE).unlink(missing_ok=True)
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"config": config.to_dict(), "checkpoint": checkpoint_reference(ck_folder, out),
                  "checkpoint_sha256": checkpoint_hashes(ck_folder)},
        "opset": OPSET, "precision": opts.precision, "profile": profile.to_dict(),
        "versions": {"cmmsf": cmmsf.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
                     "tensorrt": tensorrt_info.get("tensorrt")},
        "tensorrt": tensorrt_info,
        "asr": asr_record(),
        "tokenizer": artifact_record(tokenizer),
        "detector": detector_record,
        "voice": artifact_record(voice) if voice else None,
        "int8": {"calibration": calibration.record, "guard": {}} if calibration else None,
        "stages": stages,
        "parity": {k: v for k, v in report.to_dict().items() if k != "errors"},
        "build_seconds": log.seconds,
    }
    if calibration:  # the guard reads the folder as a run would: its manifest must exist first
        write_manifest(out, manifest)
        manifest["int8"]["guard"] = _guard_int8(out, stages, opts.data_dir, log)
    with log.step("manifest") as step:
        write_manifest(out, manifest)
        step.detail = str(final / MANIFEST)


def _int8_graphs(config, fp32: dict[str, Path], stages: dict, data_dir: Path, out: Path, log: StepLog):
    """Calibrate on the FP32 graphs, write each stage's INT8 graph, record them; returns the Calibration."""
    from .calibration import CalibrationError, calibrate
    from .quantize import INT8_OPS, KEEP_FLOAT, quantize_stage

    with log.step("int8 calibration") as step:
        try:
            calibration = calibrate(config, OnnxRuntimeBackend(fp32, "fp32"), data_dir)
        except (CalibrationError, FileNotFoundError) as err:
            raise BuildError(str(err)) from None
        step.detail = f"{calibration.record['clips']} clips of {', '.join(calibration.record['sources'])}"
    for stage in STAGE_ORDER:
        ops = INT8_OPS.get(stage, ())
        with log.step(f"int8 {stage}") as step:
            path = quantize_stage(fp32[stage], out / f"{stage}.int8.onnx", calibration.feeds[stage], ops,
                                  KEEP_FLOAT.get(stage)) if ops else fp32[stage]
            stages[stage]["artifacts"]["int8"] = {**artifact_record(path), "quantized_ops": list(ops)}
            step.detail = f"QDQ on {', '.join(ops)}" if ops else "kept in FP32 (quantising it does not pay)"
    return calibration


def _guard_int8(out: Path, stages: dict, data_dir: Path, log: StepLog) -> dict[str, str]:
    """The accuracy guard (export/tune.py) on the dev splits, each quantised stage alone and the whole INT8
    chain, against the FP32 graphs; BuildError naming what crossed its bound."""
    from cmmsf.runtime.tuning import StagewiseBackend

    from .tune import AccuracyGuard

    engines = EngineFolder.open(out)
    quantised = [s for s in STAGE_ORDER if stages[s]["artifacts"]["int8"]["quantized_ops"]]
    guard = AccuracyGuard(engines, data_dir, log.console)
    verdicts: dict[str, str] = {}
    try:
        with OnnxRuntimeBackend.from_engines(engines, "int8") as int8:
            fp32 = {s: guard.pipeline.backend for s in STAGE_ORDER}
            for stage in quantised:
                with log.step(f"int8 guard {stage}") as step:
                    verdicts[stage] = guard.verdict(StagewiseBackend({**fp32, stage: int8}))
                    step.detail = verdicts[stage]
            with log.step("int8 guard chain") as step:
                verdicts["chain"] = guard.verdict(int8)
                step.detail = verdicts["chain"]
    finally:
        guard.close()
    failed = {k: v for k, v in verdicts.items() if not v.startswith("passed")}
    if failed:
        raise BuildError("the INT8 graphs fail the accuracy guard against FP32 on the dev splits, so no folder "
                         "was written:\n  " + "\n  ".join(f"{k}: {v}" for k, v in failed.items()))
    return verdicts


def write_face_detector(out: Path) -> Path:
    """YuNet's graph, with a free input size, and its licence notice into the folder (the shipped bytes
    checked against their upstream sha256 first)."""
    raw = SHIPPED_DETECTOR.read_bytes()
    if hashlib.sha256(raw).hexdigest() != SHIPPED_DETECTOR_SHA256:
        raise BuildError(f"{SHIPPED_DETECTOR} does not match YuNet's upstream sha256; reinstall cmmsf")
    path = out / DETECTOR
    path.write_bytes(dynamic_graph(raw))
    shutil.copyfile(DETECTOR_NOTICE, out / DETECTOR_LICENCE)
    return path


def asr_record() -> dict | None:
    """The speech recognition model runs before the engines and changes their text input: record it."""
    from cmmsf.inputs.asr_models import DEFAULT_MODEL, MODELS, AsrMissingError, model_dir, model_sha256

    package = MODELS[DEFAULT_MODEL].packages[0]
    try:
        model_dir(DEFAULT_MODEL)  # raises AsrMissingError when the package is not installed
        return {"package": package, "version": version(package), "model": DEFAULT_MODEL,
                "model_sha256": model_sha256(DEFAULT_MODEL)}
    except AsrMissingError:
        return None


def _build_plans(out: Path, stages: dict, config, profile: ShapeProfile, precision: str, log: StepLog) -> dict:
    """Every stage's plan; returns the manifest's `tensorrt` record (what the plans are tied to)."""
    here = device_identity()
    for stage in STAGE_ORDER:
        with log.step(f"tensorrt {stage}") as step:
            path = tensorrt_build.choose_build_path(here.tensorrt, precision)
            source = out / stages[stage]["artifacts"][path.onnx_kind]["file"]
            try:
                how = tensorrt_build.build_engine(source, out / f"{stage}.plan", stage_shapes(stage, config, profile),
                                                  precision, out / "timing.cache")
            except tensorrt_build.EngineBuildError as err:
                raise BuildError(str(err)) from None
            stages[stage]["artifacts"][Artifact.PLAN.value] = {**artifact_record(out / f"{stage}.plan"), **how}
            step.detail = f"{path.network} from {path.onnx_kind} ONNX"
    return {"status": "built", "gpu": here.gpu, "compute_capability": here.compute_capability,
            "tensorrt": here.tensorrt}


DETECTOR_PLAN_TOLERANCE = 0.02
"""Largest difference allowed between the detector plan's raw outputs and ONNX Runtime's (scores in [0, 1],
offsets in grid cells): TensorRT computes FP32 convolutions in TF32 on Ampere and later (10 mantissa bits)."""


def _build_detector_plan(out: Path, detector: Path, log: StepLog) -> dict:
    """The face detector's plan (built in FP32: a detection is a small part of a frame's cost, and its boxes
    decide the crops), checked against ONNX Runtime on two frame sizes; returns its manifest record."""
    import numpy as np
    import tensorrt as trt

    from cmmsf.inputs.face_detector import PLAN_SHAPES, onnx_runner
    from cmmsf.runtime.backends.tensorrt import PlanRunner

    with log.step("tensorrt face_detector") as step:
        plan = out / DETECTOR_PLAN
        try:
            how = tensorrt_build.build_engine(detector, plan, PLAN_SHAPES, "fp32", out / "timing.cache")
        except tensorrt_build.EngineBuildError as err:
            raise BuildError(str(err)) from None
        reference, rng = onnx_runner(detector.read_bytes()), np.random.default_rng(0)
        runner = PlanRunner(trt.Runtime(trt.Logger(trt.Logger.WARNING)), plan)
        worst = 0.0
        for height, width in ((480, 640), (224, 224)):
            blob = rng.uniform(0, 255, (1, 3, height, width)).astype(np.float32)
            expected, got = reference(blob), runner(blob)
            worst = max(worst, *(float(np.abs(expected[k] - got[k].reshape(expected[k].shape)).max())
                                 for k in expected))
        runner.memory.close()
        if worst > DETECTOR_PLAN_TOLERANCE:
            raise BuildError(f"face detector plan parity failed: outputs differ from ONNX Runtime's by {worst:.3g} "
                             f"(tolerance {DETECTOR_PLAN_TOLERANCE})")
        step.detail = f"fp32, max |plan - onnxruntime| {worst:.2g}"
    return {**artifact_record(plan), **how}


def _registered_backends(engines: EngineFolder, console: Console) -> dict[str, Backend]:
    """Every registered backend × precision that can run the folder here, keyed by what it runs (fp32,
    fp16, plan; `… on NAME` where two backends run the same artifact); the others are named with why."""
    candidates: dict[str, Backend] = {}
    for spec, precision, request, problem in engine_candidates(engines):
        kind = spec.artifact or precision
        kind = f"{kind} on {spec.name}" if kind in candidates else kind
        if problem:
            console.print(f"[yellow]{kind} ({spec.name}) not checked: {problem}[/]", highlight=False)
            continue
        candidates[kind] = spec.load(engines, request)
    return candidates


def check(folder: Path, console: Console | None = None) -> ParityReport:
    """Re-hash every artifact and the checkpoint, then re-run parity. Raises BuildError on a problem."""
    console = console or Console()
    try:
        engines = EngineFolder.open(folder)
    except ManifestError as err:
        raise BuildError(str(err)) from None
    problems = engines.problems()
    checkpoint_problem = engines.checkpoint_problem()
    if checkpoint_problem:
        problems.append(checkpoint_problem + "; `check` re-runs parity against it")
    if problems:
        raise BuildError("check failed:\n  " + "\n  ".join(problems))
    console.print(f"[green]✓[/] manifest sealed; {sum(len(engines.files(k)) for k in engines.kinds())} artifacts "
                  "match their sha256; re-running parity…")
    model = load_checkpoint(engines.checkpoint_dir())
    profile = ShapeProfile(tuple(engines.profile.batch), dict(engines.profile.max_len))
    report = run_parity(model, _registered_backends(engines, console), profile, folder)
    if not report.passed:
        raise BuildError("parity failed:\n  " + "\n  ".join(report.failures))
    for kind, chained in report.chained.items():
        console.print(f"[green]✓[/] {kind} on {report.providers[kind]}: chained score max abs error "
                      f"{chained['score_max_abs']:.2e}, {chained['acc2_flips']} Acc-2 flips over {chained['clips']} clips")
    return report
