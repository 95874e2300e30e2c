"""An engine folder and its manifest.json: read once, checked once, resolved relative to the folder.

The exporter writes the manifest (atomically, last, and only when parity passed). Everything else
reads a folder through `EngineFolder.open`, which checks the manifest against its typed schema
(runtime/manifest.py), refuses a manifest
edited after the build (its `content_sha256` seals the fields that change results), and verifies each
artifact kind's sha256 once, on first use. Paths are relative to the folder, so a folder copied to
another machine (the usual way onto a Jetson) still works; the checkpoint reference is optional and
only the torch backend and `cmmsf-export check` need it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from enum import Enum
from functools import cached_property
from pathlib import Path

from cmmsf.config import DEFAULT_CHECKPOINT, ModelConfig
from cmmsf.contracts import STAGE_ORDER, STAGES, input_axes
from cmmsf.inputs.errors import CmmsfError
from cmmsf.inputs.face_detector import YuNet, onnx_runner
from cmmsf.inputs.familiarity import VOICE_FILE, VoiceFamiliarity
from cmmsf.inputs.hashing import sha256_file
from cmmsf.inputs.spec import InputSpec
from cmmsf.validation import FileFieldError

from .manifest import (FORMAT_VERSION, MANIFEST, TOKENIZER, ArtifactRecord, Manifest, ProfileRecord, TensorRTRecord,
                       content_sha256, parse_manifest)

DEFAULT_CHECKPOINT_REF = "default"


class Artifact(str, Enum):
    """The kinds of file a stage can have: FP32 ONNX, FP16 ONNX, INT8 (QDQ) ONNX, TensorRT plan."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    PLAN = "plan"


ONNX_PRECISIONS = (Artifact.FP32.value, Artifact.FP16.value)
"""The ONNX graphs every build writes."""
ONNX_KINDS = (*ONNX_PRECISIONS, Artifact.INT8.value)
"""Every kind that is an ONNX graph (int8 only where built with --precision int8)."""


class ManifestError(CmmsfError, RuntimeError):
    """An engine folder that cannot be trusted or used; the message says what to do."""


def checkpoint_reference(checkpoint: Path, engines: Path) -> str:
    """`default` for the shipped checkpoint, else its path relative to the engine folder."""
    if checkpoint.resolve() == DEFAULT_CHECKPOINT.resolve():
        return DEFAULT_CHECKPOINT_REF
    return os.path.relpath(checkpoint.resolve(), engines.resolve())


class EngineFolder:
    """One built engine folder. Create with `EngineFolder.open(path)`."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = path
        self.manifest = manifest
        self._verified: set[str] = set()

    @classmethod
    def open(cls, path: str | Path) -> "EngineFolder":
        """Read and validate `path/manifest.json`; raises ManifestError with what to do."""
        path = Path(path)
        file = path / MANIFEST
        rebuild = f"rebuild with `cmmsf-export build --out {path} --force`"
        if not file.is_file():
            builder = build_in_progress(path)
            if builder:
                raise ManifestError(f"{path} is being built by {builder}; wait for it to finish (the folder "
                                    "appears complete, or not at all)")
            raise ManifestError(f"{path} has no {MANIFEST}: build it with `cmmsf-export build --out {path}`")
        try:
            manifest = json.loads(file.read_text())
        except (ValueError, UnicodeDecodeError, RecursionError) as err:  # ValueError: a 5,000-digit integer too
            raise ManifestError(f"{file} is not valid JSON ({str(err).splitlines()[0][:160]}); {rebuild}") from None
        if not isinstance(manifest, dict):
            raise ManifestError(f"{file} is not a CM-MSF manifest: it holds a {type(manifest).__name__}, not an "
                                f"object; {rebuild}")
        if manifest.get("format") != FORMAT_VERSION:
            raise ManifestError(f"{file} has format {manifest.get('format')!r}, this runtime reads "
                                f"{FORMAT_VERSION}; {rebuild}")
        try:
            typed = parse_manifest(manifest, file)
        except FileFieldError as err:
            raise ManifestError(f"{file} is not a CM-MSF manifest: {err}; {rebuild}") from None
        if typed.content_sha256 != content_sha256(manifest):
            raise ManifestError(f"{file} was edited after the build (its content no longer matches its "
                                f"content_sha256); {rebuild}")
        folder = cls(path, typed)
        try:
            folder.config  # noqa: B018 - parse once now, so a bad config is a manifest error here
        except (TypeError, ValueError) as err:
            raise ManifestError(f"{file} holds an unusable model config ({err}); {rebuild}") from None
        problem = contract_problem(typed, folder.config)
        if problem:
            raise ManifestError(f"{file} does not match the stage contracts: {problem}; {rebuild}")
        return folder

    # ------------------------------------------------------------------ typed access

    @cached_property
    def config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.manifest.model.config)

    @property
    def profile(self) -> ProfileRecord:
        """batch (min, opt, max) and max_len per modality."""
        return self.manifest.profile

    def _outside(self, path: Path) -> bool:
        """A file that is a link to somewhere outside the folder: its bytes are not the folder's to vouch for."""
        return path.is_symlink() and not path.resolve().is_relative_to(self.path.resolve())

    def _sealed_file(self, name: str, sha256: str) -> Path:
        """One of the folder's sealed files (not a stage artifact), refused unless it matches its sha256."""
        path = self.path / name
        if self._outside(path) or not path.is_file() or sha256_file(path) != sha256:
            raise ManifestError(f"{path} is missing or does not match its sha256 in {MANIFEST}; rebuild with "
                                f"`cmmsf-export build --out {self.path} --force`")
        return path

    @cached_property
    def tokenizer_file(self) -> Path:
        """The folder's own `tokenizer.json`, checked against its sha256 once."""
        return self._sealed_file(TOKENIZER, self.manifest.tokenizer.sha256)

    @cached_property
    def detector_file(self) -> Path:
        """The folder's face detector graph, checked against its sha256 once (its licence notice too)."""
        record = self.manifest.detector
        self._sealed_file(record.licence.file, record.licence.sha256)
        return self._sealed_file(record.file, record.sha256)

    @cached_property
    def detector_plan(self) -> Path | None:
        """The face detector's TensorRT plan, checked against its sha256 once; None where none was built."""
        plan = self.manifest.detector.plan
        return None if plan is None else self._sealed_file(plan.file, plan.sha256)

    def face_detector(self) -> YuNet:
        """YuNet on the folder's own detector graph (ONNX Runtime's CPU kernels)."""
        return YuNet(onnx_runner(self.detector_file.read_bytes()))

    def voice_familiarity(self) -> VoiceFamiliarity | None:
        """The folder's voice statistics, checked against their sha256; None when it carries none."""
        record = self.manifest.voice
        return None if record is None else VoiceFamiliarity.load(self._sealed_file(record.file, record.sha256))

    def input_spec(self) -> InputSpec:
        """The config's input rules, tokenised with this folder's own tokenizer and with each max length
        bounded by the build profile, so a clip longer than these engines admit is truncated (and listed
        in `truncated`), never sent past the profile."""
        spec, top = self.config.input_spec(), self.profile.max_len
        return dataclasses.replace(spec, text_backbone=str(self.tokenizer_file),
                                   text_max_len=min(spec.text_max_len, int(top["text"])),
                                   audio_max_len=min(spec.audio_max_len, int(top["audio"])),
                                   video_max_len=min(spec.video_max_len, int(top["video"])))

    @property
    def typical_lengths(self) -> dict[str, int]:
        """The profile's opt length per modality (half the max): what benchmarks feed."""
        return {m: max(1, int(top) // 2) for m, top in self.profile.max_len.items()}

    @property
    def tensorrt(self) -> TensorRTRecord:
        return self.manifest.tensorrt

    @property
    def has_plans(self) -> bool:
        return self.tensorrt.status == "built" and Artifact.PLAN.value in self.kinds()

    def record(self, stage: str, kind: str) -> ArtifactRecord:
        return self.manifest.stages[stage].artifacts[kind]

    def kinds(self) -> list[str]:
        """Artifact kinds every stage has: fp32, fp16 and, where built, plan."""
        return self.manifest.kinds()

    # ------------------------------------------------------------------ verification

    def problems(self, kinds: list[str] | tuple[str, ...] | None = None) -> list[str]:
        """Re-hash artifacts of `kinds` (all by default); one line per missing or changed file.

        Kinds found intact are remembered, so `files()` does not hash them again."""
        out, seen, bad = [], set(), set()
        for stage in STAGE_ORDER:
            for kind, record in self.manifest.stages[stage].artifacts.items():
                if kinds is not None and kind not in kinds:
                    continue
                seen.add(kind)
                path = self.path / record.file
                if self._outside(path):
                    out.append(f"{stage} {kind}: {record.file} is a link to {path.resolve()}, outside the folder")
                elif not path.is_file():
                    out.append(f"{stage} {kind}: {record.file} is missing")
                elif path.stat().st_size != record.bytes or sha256_file(path) != record.sha256:
                    out.append(f"{stage} {kind}: {record.file} does not match its sha256 in {MANIFEST}")
                elif kind in ONNX_KINDS and (problem := graph_problem(stage, path, self.config)):
                    out.append(f"{stage} {kind}: {record.file} {problem}")
                else:
                    continue
                bad.add(kind)
        self._verified.update((seen - bad) & set(self.kinds()))
        return out

    def files(self, kind: str, stages: tuple[str, ...] | None = None) -> dict[str, Path]:
        """Stage → verified path of one artifact kind, for `stages` only where given (the tuned `auto` loads
        a backend for some stages); hashes are checked once per kind and folder, every stage's."""
        if kind not in self.kinds():
            if kind == Artifact.PLAN.value:
                raise ManifestError(f"{self.path} has no TensorRT plans ({self.tensorrt.reason}); "
                                    "build them on this GPU with `cmmsf-export build --tensorrt on`")
            raise ManifestError(f"{self.path} has no {kind!r} artifacts; kinds here: {', '.join(self.kinds())}")
        if kind not in self._verified:  # problems() remembers a kind it found intact
            problems = self.problems((kind,))
            if problems:
                raise ManifestError("refusing to load tampered or incomplete artifacts: " + "; ".join(problems)
                                    + f". Rebuild with `cmmsf-export build --out {self.path} --force`")
        return {s: self.path / self.record(s, kind).file for s in (stages or STAGE_ORDER)}

    # ------------------------------------------------------------------ the checkpoint it came from

    @property
    def checkpoint_ref(self) -> str:
        return self.manifest.model.checkpoint

    def checkpoint_dir(self) -> Path | None:
        """The checkpoint folder the engines were built from, if it is here and unchanged, else None."""
        return self._checkpoint

    @cached_property
    def _checkpoint(self) -> Path | None:
        """Looked up once per folder: it hashes the checkpoint's weights (47 MB for edge)."""
        ref = self.checkpoint_ref
        if not ref:
            return None
        folder = DEFAULT_CHECKPOINT if ref == DEFAULT_CHECKPOINT_REF else (self.path / ref)
        return folder if self.built_from(folder) else None

    def checkpoint_problem(self) -> str | None:
        """Why `checkpoint_dir()` is None, in one line (None when the checkpoint is usable)."""
        if self.checkpoint_dir() is not None:
            return None
        ref = self.checkpoint_ref or "(none recorded)"
        return (f"the checkpoint these engines were built from ({ref}, relative to {self.path}) is not here "
                "or has changed since the build")

    def built_from(self, checkpoint: Path) -> bool:
        """True when `checkpoint` holds exactly the files (by sha256) these engines were built from (voice
        statistics fitted since the build make it another checkpoint)."""
        recorded = self.manifest.model.checkpoint_sha256
        return bool(recorded) and (VOICE_FILE in recorded) == (checkpoint / VOICE_FILE).is_file() and all(
            (checkpoint / name).is_file() and sha256_file(checkpoint / name) == digest for name, digest in recorded.items())


def build_in_progress(path: Path) -> str | None:
    """`pid N` of a live `cmmsf-export build` staging this folder (`.<name>.building-<pid>` beside it)."""
    for staging in path.parent.glob(f".{path.name}.building-*"):
        pid = staging.name.rsplit("-", 1)[-1]
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            return f"pid {pid}"
    return None


def contract_problem(manifest: Manifest, config: ModelConfig) -> str | None:
    """Each stage's recorded inputs and outputs against the contract (names, order, dtypes, axes)."""
    for stage, spec in STAGES.items():
        record = manifest.stages[stage]
        for kind, tensors, recorded in (("inputs", spec.inputs, record.inputs),
                                        ("outputs", spec.outputs, record.outputs)):
            want = [(t.name, t.dtype, list(input_axes(t, config))) for t in tensors]
            got = [(t.name, t.dtype, t.axes) for t in recorded]
            if got != want:
                return f"{stage}'s {kind} are {_io(got)}, the contract's {_io(want)}"
    return None


def graph_problem(stage: str, path: Path, config: ModelConfig) -> str | None:
    """The graph's own inputs and outputs against the stage's contract (names, order, dtypes, ranks): a
    graph of another stage (or model) is refused when the folder is opened for it, before a session
    loads it. Read with the onnx package, which parses the graph without running it."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as err:  # noqa: BLE001 - any parse failure is "not an ONNX graph"
        return f"is not an ONNX graph ({type(err).__name__})"
    weights = {w.name for w in graph.initializer}

    def described(values) -> list[tuple[str, str, int]]:
        return [(v.name, tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                 len(v.type.tensor_type.shape.dim)) for v in values if v.name not in weights]

    spec = STAGES[stage]
    for kind, tensors, values in (("inputs", spec.inputs, graph.input), ("outputs", spec.outputs, graph.output)):
        want = [(t.name, t.dtype, len(input_axes(t, config))) for t in tensors]
        try:
            got = described(values)
        except (KeyError, ValueError):
            return f"has {kind} of a type no stage uses"
        if got != want:
            return f"has {kind} {_io(got)}, not {stage}'s {_io(want)}: it is another stage's or model's graph"
    return None


def _io(tensors: list[tuple]) -> str:
    return "(" + ", ".join(f"{t[0]}:{t[1]}" for t in tensors) + ")"
