"""`cmmsf-export triton`: engine folders → a model repository for NVIDIA Triton Inference Server.

One Triton model per stage (`onnxruntime_onnx` with the FP16 or FP32 graph, or `tensorrt_plan`
where plans exist) and one `ensemble` that wires the five stages by the contract names, so NGC's
Triton containers serve the same chain `Backend.run` runs here. Every `config.pbtxt` is generated from
`cmmsf/contracts.py`: the batch axis is Triton's implicit one (`max_batch_size`), length axes are -1
and feature axes take the config's sizes. Written without Triton installed (a Jetson exporting for
its own server need not carry the client); the tests parse each file with Triton's own schema.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from cmmsf.config import ModelConfig
from cmmsf.contracts import PIPELINE_INPUTS, STAGE_ORDER, STAGES, TensorSpec, sample_dims
from cmmsf.inputs.errors import CmmsfError
from cmmsf.runtime.engine_folder import Artifact, EngineFolder

ENSEMBLE = "cmmsf"
STAGE_PREFIX = "cmmsf_"
TRITON_DTYPES = {"float32": "TYPE_FP32", "int32": "TYPE_INT32", "bool": "TYPE_BOOL"}
FORMATS = ("auto", "onnx", "plan")


class RepositoryError(CmmsfError, ValueError):
    """Engine folders that cannot make one repository; the message says why."""


class Symbol(str):
    """A protobuf enum value (TYPE_FP32, KIND_GPU): written bare, not quoted."""


def to_pbtxt(message: dict[str, Any], indent: int = 0) -> str:
    """A dict as protobuf text format: dicts are messages, lists of dicts repeated messages, lists of
    scalars `[a, b]`, `Symbol`s enum values."""
    pad, lines = "  " * indent, []
    for key, value in message.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", to_pbtxt(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines += [f"{pad}{key} {{", to_pbtxt(item, indent + 1), f"{pad}}}"]
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)


def _scalar(value: Any) -> str:
    if isinstance(value, Symbol):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def tensor_config(spec: TensorSpec, config: ModelConfig) -> dict[str, Any]:
    """One `input`/`output` entry: the batch axis left to max_batch_size, lengths -1, widths fixed.

    A tensor that is only [B] (the score) has no dims left; Triton wants `dims: [1]` reshaped to []."""
    dims = sample_dims(spec, config)
    entry: dict[str, Any] = {"name": spec.name, "data_type": Symbol(TRITON_DTYPES[spec.dtype]),
                             "dims": dims or [1]}
    if not dims:
        entry["reshape"] = {"shape": []}
    return entry


def stage_config(stage: str, config: ModelConfig, max_batch: int, queue_delay_us: int,
                 plan_files: dict[str, str] | None) -> dict[str, Any]:
    """config.pbtxt of one stage: ONNX Runtime, or TensorRT with one plan per compute capability."""
    spec = STAGES[stage]
    message: dict[str, Any] = {
        "name": STAGE_PREFIX + stage,
        "platform": "tensorrt_plan" if plan_files else "onnxruntime_onnx",
        "max_batch_size": max_batch,
        "input": [tensor_config(t, config) for t in spec.inputs],
        "output": [tensor_config(t, config) for t in spec.outputs],
        "dynamic_batching": {"max_queue_delay_microseconds": queue_delay_us},
    }
    if plan_files:
        message["default_model_filename"] = next(iter(plan_files.values()))
        if len(plan_files) > 1:
            message["cc_model_filenames"] = [{"key": cc, "value": f} for cc, f in plan_files.items()]
    else:
        message["default_model_filename"] = "model.onnx"
    return message


def ensemble_config(config: ModelConfig, max_batch: int) -> dict[str, Any]:
    """The `cmmsf` ensemble: pipeline inputs in, score/logits/gates out, the five stages in order, each
    stage input mapped from the tensor of the same contract name."""
    return {
        "name": ENSEMBLE,
        "platform": "ensemble",
        "max_batch_size": max_batch,
        "input": [tensor_config(t, config) for t in PIPELINE_INPUTS],
        "output": [tensor_config(t, config) for t in STAGES[STAGE_ORDER[-1]].outputs],
        "ensemble_scheduling": {"step": [
            {"model_name": STAGE_PREFIX + stage, "model_version": -1,
             "input_map": [{"key": n, "value": n} for n in STAGES[stage].input_names],
             "output_map": [{"key": n, "value": n} for n in STAGES[stage].output_names]}
            for stage in STAGE_ORDER]},
    }


@dataclass(kw_only=True)
class TritonRepositoryOptions:
    engines: list[Path]
    """One folder, or several holding TensorRT plans of the same model built on different GPUs."""
    out: Path
    format: str = "auto"
    """auto: TensorRT plans where every folder has them, else ONNX; onnx; plan."""
    precision: str = "fp16"
    """Which ONNX graph an onnxruntime_onnx model serves: fp16 or fp32."""
    max_queue_delay_ms: float = 2.0
    force: bool = False


def _plan_folders(folders: list[EngineFolder], fmt: str) -> list[EngineFolder]:
    """The folders whose plans are served (empty: ONNX), checked to be one model on distinct GPUs."""
    with_plans = [f for f in folders if f.has_plans]
    if fmt == "onnx" or (fmt == "auto" and len(with_plans) < len(folders)):
        return []
    if len(with_plans) < len(folders):
        lacking = ", ".join(str(f.path) for f in folders if not f.has_plans)
        raise RepositoryError(f"--format plan: {lacking} has no TensorRT plans; build them on its GPU with "
                              "`cmmsf-export build --tensorrt on`, or use --format onnx")
    capabilities = [str(f.tensorrt.compute_capability or "") for f in with_plans]
    if len(set(capabilities)) < len(capabilities) or not all(capabilities):
        raise RepositoryError(f"plans for several GPUs need one folder per compute capability, got {capabilities}")
    return with_plans


def _same_model(folders: list[EngineFolder]) -> None:
    """Plans of several GPUs must come from one set of graphs, or one repository would mix models."""
    first = folders[0]
    for other in folders[1:]:
        for stage in STAGE_ORDER:
            if other.record(stage, Artifact.FP32.value).sha256 != first.record(stage, Artifact.FP32.value).sha256:
                raise RepositoryError(f"{other.path} holds another model than {first.path} ({stage} differs); "
                                      "one repository serves one model")


def write_repository(opts: TritonRepositoryOptions, console: Console) -> Path:
    """Write the repository to a temporary sibling, then rename it into place: never half a repository."""
    if opts.format not in FORMATS:
        raise RepositoryError(f"--format must be one of {', '.join(FORMATS)}, got {opts.format!r}")
    if opts.precision not in (Artifact.FP16.value, Artifact.FP32.value):
        raise RepositoryError(f"--precision must be fp16 or fp32, got {opts.precision!r}")
    if not opts.engines:
        raise RepositoryError("name at least one engine folder with --engines")
    if opts.out.exists() and not opts.force:
        raise RepositoryError(f"{opts.out} exists; pass --force to replace it")
    folders = [EngineFolder.open(p) for p in opts.engines]
    _same_model(folders)
    planned = _plan_folders(folders, opts.format)
    primary = folders[0]
    config, max_batch = primary.config, int(primary.profile.batch[2])
    delay_us = int(round(opts.max_queue_delay_ms * 1000))

    opts.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=opts.out.parent, prefix=f".{opts.out.name}."))
    try:
        onnx_files = primary.files(opts.precision) if not planned else {}
        plan_files = [f.files(Artifact.PLAN.value) for f in planned]  # hashes verified before copying
        for stage in STAGE_ORDER:
            version = staging / (STAGE_PREFIX + stage) / "1"
            version.mkdir(parents=True)
            names: dict[str, str] | None = None
            if planned:
                several = len(planned) > 1
                names = {}
                for folder, files in zip(planned, plan_files):
                    cc = str(folder.tensorrt.compute_capability)
                    name = f"model.sm{cc.replace('.', '')}.plan" if several else "model.plan"
                    shutil.copy2(files[stage], version / name)
                    names[cc] = name
            else:
                shutil.copy2(onnx_files[stage], version / "model.onnx")
            (version.parent / "config.pbtxt").write_text(
                to_pbtxt(stage_config(stage, config, max_batch, delay_us, names)) + "\n")
        (staging / ENSEMBLE / "1").mkdir(parents=True)  # Triton wants a version folder, even an empty one
        (staging / ENSEMBLE / "config.pbtxt").write_text(to_pbtxt(ensemble_config(config, max_batch)) + "\n")
        (staging / "README.md").write_text(repository_readme(primary, planned, opts, max_batch))
        if opts.out.exists():
            shutil.rmtree(opts.out)
        os.replace(staging, opts.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    kind = (f"TensorRT plans for compute capability {', '.join(str(f.tensorrt.compute_capability) for f in planned)}"
            if planned else f"ONNX Runtime, {opts.precision} graphs")
    console.print(f"Triton model repository: {opts.out} ({len(STAGE_ORDER)} stages + ensemble `{ENSEMBLE}`; {kind})")
    return opts.out


def repository_readme(primary: EngineFolder, planned: list[EngineFolder], opts: TritonRepositoryOptions,
                      max_batch: int) -> str:
    """How to serve the repository with NGC's container, and what each model takes."""
    trt = primary.tensorrt.tensorrt if planned else None
    image = ("the `nvcr.io/nvidia/tritonserver:<release>-py3` release whose TensorRT is "
             f"{trt} (the version that built the plans; see NVIDIA's support matrix)" if planned else
             "any recent `nvcr.io/nvidia/tritonserver:<release>-py3` release (ONNX Runtime backend)")
    inputs = ", ".join(f"`{t.name}`" for t in PIPELINE_INPUTS)
    return f"""# CM-MSF Triton model repository

Written by `cmmsf-export triton` from `{primary.path}`. Models:

- `{ENSEMBLE}`: the whole pipeline (an ensemble). Send {inputs} (the stage contracts of
  `cmmsf/contracts.py`, preprocessed as `cmmsf-run` does: `cmmsf.runtime.pipeline.preprocessor_for` on
  the engine folder, whose tokenizer and voice statistics find the face, tokenise the words and leave out
  a voice unlike those the model learned); get `score`, `logits`, `gates`.
- {', '.join(f'`{STAGE_PREFIX}{s}`' for s in STAGE_ORDER)}: one per stage, for clients that run part
  of the chain themselves.

Every model batches dynamically up to {max_batch} requests (queue delay {opts.max_queue_delay_ms:g} ms).
Triton batches requests whose shapes agree: clients that pad to a few fixed lengths batch best.
Lengths beyond the build's profile ({dict(primary.profile.max_len)}) are refused by TensorRT plans.

Serve it with {image}:

```
docker run --gpus all --rm -p8000:8000 -p8001:8001 -p8002:8002 \\
  -v "$PWD/{opts.out.name}:/models" nvcr.io/nvidia/tritonserver:<release>-py3 \\
  tritonserver --model-repository=/models
```

Without a GPU drop `--gpus all` (ONNX graphs run on CPU). Health: `curl localhost:8000/v2/health/ready`;
metrics: `curl localhost:8002/metrics`.
"""
