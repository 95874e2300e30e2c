"""manifest.json as a typed object: what an engine folder is, checked by pydantic when it is read.

The exporter writes it (export/build.py, through `write_manifest`); everything else reads it as a
`Manifest` (through `EngineFolder.open`), so a field is an attribute with a type, not a nested dict
lookup, and a manifest that lacks a field, has one nobody declared or a value of the wrong type is
refused in one line naming it. Reports (`parity`, `build_seconds`) stay plain data: nothing computes
with them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cmmsf.contracts import STAGE_ORDER, StageName
from cmmsf.inputs.hashing import sha256_file
from cmmsf.validation import FileFieldError, describe

MANIFEST = "manifest.json"
FORMAT_VERSION = 6
"""2: checkpoint recorded relative to the folder (or `default`), content sealed by content_sha256;
3: the speech recognition model's hash (`asr`) is sealed too; 4: the text tokenizer ships in the
folder (`tokenizer.json`, sealed), so a device needs no backbone package (which pulls torch); 5: the
checkpoint's voice familiarity statistics ship in the folder too (`voice`, sealed; None without them);
6: the face detector ships in the folder (`detector`: YuNet's graph and its licence notice, sealed)."""

SEALED_FIELDS = ("asr", "detector", "format", "model", "opset", "precision", "profile", "stages", "tensorrt",
                 "tokenizer", "voice")
"""The manifest fields that change what the engines compute or which files they are (`asr`, the speech
recognition model's hash, is optional: builds without ASR installed have none)."""
SEALED_WHERE_PRESENT = ("int8",)
"""Sealed too, where the build wrote them (absent from the hash otherwise, so folders built before the
field existed keep their seal)."""

TOKENIZER = "tokenizer.json"
DETECTOR = "face_detector.onnx"
DETECTOR_LICENCE = "face_detector.LICENSE"
DETECTOR_PLAN = "face_detector.plan"

ArtifactKind = Literal["fp32", "fp16", "int8", "plan"]
"""FP32 ONNX, FP16 ONNX, INT8 (QDQ) ONNX, TensorRT plan (engine_folder.Artifact names them)."""

# Sane bounds, so an edited number is refused at open naming its field, not met deep in a backend
FileBytes = Annotated[int, Field(ge=0, le=1 << 40)]
BatchSize = Annotated[int, Field(ge=1, le=4096)]
Length = Annotated[int, Field(ge=1, le=1_000_000)]
Dim = Annotated[int, Field(ge=1, le=1_000_000)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArtifactRecord(_Record):
    """One file of the folder: its name (inside the folder), sha256 and size."""

    file: str
    sha256: str
    bytes: FileBytes
    build_path: Literal["strongly_typed", "weakly_typed"] | None = None
    """Plans only, with the three below: how TensorRT built it (export/tensorrt_build.py)."""
    built_from: Literal["fp16", "fp32", "int8"] | None = None
    fp16_flag: bool | None = None
    workspace_bytes: FileBytes | None = None
    quantized_ops: list[str] | None = None
    """INT8 graphs only: the operator types quantised (export/quantize.py); empty where the stage kept its
    FP32 graph because quantising it did not pay."""

    @field_validator("file")
    @classmethod
    def _inside_the_folder(cls, name: str) -> str:
        if Path(name).name != name:
            raise ValueError(f"{name!r} is not a file inside the folder")
        return name


class TensorRecord(_Record):
    name: str
    dtype: str
    axes: list[str]


class StageRecord(_Record):
    artifacts: dict[ArtifactKind, ArtifactRecord]
    inputs: list[TensorRecord]
    outputs: list[TensorRecord]
    profile_shapes: dict[str, Annotated[list[Annotated[list[Dim], Field(max_length=8)]],
                                        Field(min_length=3, max_length=3)]]
    """Input name → [min, opt, max] shapes of the build profile."""

    @field_validator("artifacts")
    @classmethod
    def _both_onnx_precisions(cls, artifacts: dict) -> dict:
        if not {"fp32", "fp16"} <= set(artifacts):
            raise ValueError("lacks its fp32/fp16 artifacts")
        return artifacts


class ModelRecord(_Record):
    config: dict[str, Any]
    """The checkpoint's ModelConfig (checked by `ModelConfig.from_dict` when the folder opens)."""
    checkpoint: str = ""
    """`default` or the checkpoint folder relative to the engine folder; optional."""
    checkpoint_sha256: dict[str, str] = {}


class TokenizerRecord(_Record):
    """The folder's own tokenizer (engines carry it, so a device needs no backbone package)."""

    file: Literal["tokenizer.json"]
    sha256: str
    bytes: FileBytes


class LicenceRecord(_Record):
    file: Literal["face_detector.LICENSE"]
    sha256: str
    bytes: FileBytes


class DetectorRecord(_Record):
    """The folder's face detector (YuNet, cmmsf/inputs/face_detector.py) and its licence notice."""

    file: Literal["face_detector.onnx"]
    sha256: str
    bytes: FileBytes
    licence: LicenceRecord
    plan: ArtifactRecord | None = None
    """Its TensorRT plan (`face_detector.plan`), where the folder's plans were built: the TensorRT backend
    detects on the GPU. Absent from folders built without TensorRT (and before the plan existed)."""


class VoiceRecord(_Record):
    """The folder's voice familiarity statistics (cmmsf/inputs/familiarity.py)."""

    file: Literal["voice_familiarity.safetensors"]
    sha256: str
    bytes: FileBytes


class ProfileRecord(_Record):
    batch: tuple[BatchSize, BatchSize, BatchSize]
    """min, opt, max."""
    max_len: dict[Literal["text", "audio", "video"], Length]

    @field_validator("batch")
    @classmethod
    def _ordered(cls, batch: tuple[int, int, int]) -> tuple[int, int, int]:
        if not batch[0] <= batch[1] <= batch[2]:
            raise ValueError(f"must be min <= opt <= max, got {list(batch)}")
        return batch


class TensorRTRecord(_Record):
    status: Literal["built", "skipped"]
    reason: str | None = None
    """Why no plans were built (status skipped)."""
    tensorrt: str | None = None
    gpu: str | None = None
    compute_capability: str | None = None


class AsrRecord(_Record):
    package: str
    version: str
    model_sha256: str
    model: str = "tiny.en"
    """The Whisper model (cmmsf/inputs/asr_models.py); folders built before the choice existed ran tiny.en."""


class Int8Record(_Record):
    """How the INT8 graphs were made and judged (export/quantize.py, export/calibration.py)."""

    calibration: dict[str, Any]
    """Sources, split, clip count and sha256 of the calibration set."""
    guard: dict[str, str]
    """Stage (and `chain`) → the accuracy guard's verdict against the FP32 graphs on the dev splits."""


class Manifest(_Record):
    format: Literal[6]
    content_sha256: str
    created: str
    model: ModelRecord
    opset: Annotated[int, Field(ge=7, le=40)]
    precision: Literal["fp16", "fp32", "int8"]
    """What the TensorRT plans (where built) run in; int8: the folder has INT8 graphs (`int8`)."""
    profile: ProfileRecord
    versions: dict[str, str | None]
    tensorrt: TensorRTRecord
    asr: AsrRecord | None
    """The speech recognition model the engines were built beside (None: none was installed)."""
    tokenizer: TokenizerRecord
    detector: DetectorRecord
    """YuNet, the stage before the video encoder: it finds the face each frame is cropped to."""
    voice: VoiceRecord | None = None
    """Absent for a checkpoint without voice statistics: every voice is heard."""
    int8: Int8Record | None = None
    """Present where the folder was built with --precision int8."""
    stages: dict[StageName, StageRecord]
    parity: dict[str, Any]
    build_seconds: dict[str, float]

    @model_validator(mode="after")
    def _every_stage(self) -> "Manifest":
        if set(self.stages) != set(STAGE_ORDER):
            raise ValueError(f"stages must be exactly {', '.join(STAGE_ORDER)}")
        return self

    def kinds(self) -> list[str]:
        """Artifact kinds every stage has: fp32, fp16 and, where built, int8 and plan."""
        return [k for k in ("fp32", "fp16", "int8", "plan") if all(k in self.stages[s].artifacts for s in STAGE_ORDER)]


def parse_manifest(data: Any, file: Path) -> Manifest:
    """A parsed manifest.json as a Manifest; FileFieldError in one line naming the field."""
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        raise FileFieldError(describe(err, file.name)) from None


def content_sha256(manifest: dict[str, Any]) -> str:
    """sha256 of the sealed fields, serialised canonically (sorted keys, no whitespace)."""
    sealed = {k: manifest.get(k) for k in SEALED_FIELDS}
    sealed.update({k: manifest[k] for k in SEALED_WHERE_PRESENT if manifest.get(k) is not None})
    return hashlib.sha256(json.dumps(sealed, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Seal and write via a temporary file and an atomic rename: a reader never sees half a manifest."""
    manifest = {**manifest, "format": FORMAT_VERSION}
    manifest["content_sha256"] = content_sha256(manifest)
    path = folder / MANIFEST
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".manifest.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def artifact_record(path: Path) -> dict[str, Any]:
    """The manifest entry of one file: name relative to the folder, sha256, size."""
    return {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
