"""`cmmsf-export inspect DIR`: what a deployment engineer asks first, as `polygraphy inspect model` answers it.

For every stage: each input and output as the ONNX graph itself declares it (name, dtype, shape with the
dynamic axes named), beside the build profile's min / opt / max shape of each input; and each artifact's
precision, file, size and sha256, re-hashed here against the manifest. A graph is parsed only after its
file matched its hash; a graph whose inputs or outputs differ between the FP32 and FP16 files (the FP16
export keeps I/O in FP32) is reported. TensorRT plans need TensorRT to read their bindings: they are
listed by size and hash only. An INT8 graph also says what really runs in int8: the operator types whose
inputs are dequantised, counted in the graph itself (the question "is my engine really INT8?").
"""

from __future__ import annotations

from pathlib import Path

import onnx

from cmmsf.contracts import STAGE_ORDER
from cmmsf.inputs.hashing import sha256_file
from cmmsf.runtime.engine_folder import ONNX_KINDS, EngineFolder

from .quantize import quantized_ops


def _dtype(elem_type: int) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name if elem_type else "undefined"


def tensors(values) -> list[dict]:
    """A graph's inputs or outputs: name, dtype and shape (a dim_param name for a dynamic axis)."""
    out = []
    for value in values:
        tensor = value.type.tensor_type
        shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tensor.shape.dim]
        out.append({"name": value.name, "dtype": _dtype(tensor.elem_type), "shape": shape})
    return out


def graph_io(model: onnx.ModelProto) -> dict[str, list[dict]]:
    """The inputs and outputs a graph declares (initialisers excluded)."""
    weights = {init.name for init in model.graph.initializer}
    return {"inputs": tensors(v for v in model.graph.input if v.name not in weights),
            "outputs": tensors(model.graph.output)}


def artifact_status(folder: Path, record) -> str:
    path = folder / record.file
    if not path.is_file():
        return "missing"
    if path.stat().st_size != record.bytes or sha256_file(path) != record.sha256:
        return "sha256 mismatch"
    return "ok"


def inspect_folder(engines: EngineFolder) -> dict:
    """Every stage's I/O, profile and artifacts, and the folder's other sealed files (the face detector
    and its licence, tokenizer, voice statistics), as plain data (what `--json` prints)."""
    stages = {}
    for stage in STAGE_ORDER:
        record = engines.manifest.stages[stage]
        artifacts, graphs = {}, {}
        for kind, artifact in record.artifacts.items():
            status = artifact_status(engines.path, artifact)
            artifacts[kind] = {"file": artifact.file, "bytes": artifact.bytes, "sha256": artifact.sha256,
                               "status": status}
            if kind in ONNX_KINDS and status == "ok":  # parsed only once its hash matched
                model = onnx.load(str(engines.path / artifact.file), load_external_data=False)
                artifacts[kind]["opset"] = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                                               default=None)
                graphs[kind] = graph_io(model)
                if kind == "int8":
                    artifacts[kind]["int8_ops"] = quantized_ops(engines.path / artifact.file)
        differs = any(graphs[k] != graphs["fp32"] for k in graphs if "fp32" in graphs)
        read = next((k for k in ONNX_KINDS if k in graphs), None)
        io = graphs[read] if read else {"inputs": [], "outputs": []}
        for tensor in io["inputs"]:
            shapes = record.profile_shapes.get(tensor["name"])
            tensor["profile"] = dict(zip(("min", "opt", "max"), shapes)) if shapes else None
        stages[stage] = {**io, "artifacts": artifacts,
                         "io_read_from": read,
                         "io_differs": differs}
    profile = engines.manifest.profile
    detector = engines.manifest.detector
    sealed = {"face_detector": detector, "face_detector licence": detector.licence, "face_detector plan": detector.plan,
              "tokenizer": engines.manifest.tokenizer, "voice": engines.manifest.voice}
    files = {name: {"file": r.file, "bytes": r.bytes, "sha256": r.sha256, "status": artifact_status(engines.path, r)}
             for name, r in sealed.items() if r is not None}
    return {"folder": str(engines.path), "preset": engines.manifest.model.config["name"],
            "opset": engines.manifest.opset, "profile": {"batch": list(profile.batch), "max_len": profile.max_len},
            "tensorrt": engines.manifest.tensorrt.status, "stages": stages, "files": files}
