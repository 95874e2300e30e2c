"""The Python API behind `cmmsf-run infer`: `Pipeline.load(engines).predict(paths)`.

An engine folder (opened once), one backend, and the input handling of `cmmsf/inputs/`; each batch goes
through the one stage chain (`Backend.run`), timed per stage, and becomes result records.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmmsf.config import ModelConfig
from cmmsf.contracts import (LENGTH_AXES, MODALITIES, OUTPUTS, PIPELINE_INPUTS, SENTIMENT_CLASSES, class_of,
                             input_axes, static_axis_sizes)
from cmmsf.inputs.clips import Clip, find_clips
from cmmsf.inputs.errors import CmmsfError
from cmmsf.inputs.asr import SpeechRecognizer
from cmmsf.inputs.face_detector import YuNet
from cmmsf.inputs.features import ClipInputs, Preprocessor, collate, truncate_to_limits

from .backends import check_choice, load_backend
from .backends.base import Backend
from .engine_folder import EngineFolder, ManifestError
from .settings import RunSettings


@dataclass
class BatchResult:
    outputs: dict[str, np.ndarray]
    stage_ms: dict[str, float]


def error_record(clip_id: str, err: BaseException) -> dict:
    """The line a clip that could not be scored gets, wherever it failed: its id and why, in one plain
    sentence for the failures we expect (`CmmsfError`); anything else is a bug, named by its type so it
    can be reported."""
    return {"id": clip_id, "error": str(err) if isinstance(err, CmmsfError) else f"{type(err).__name__}: {err}"}


class ShapeError(CmmsfError, ValueError):
    """Input tensors the engines' build profile does not admit; the message names the tensor and the limit."""


def polarity(score: float) -> str:
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


class Pipeline:
    """Engines + backend + preprocessing for one engine folder."""

    def __init__(self, backend: Backend, engines: EngineFolder, note: str = "",
                 preprocessor: Preprocessor | None = None):
        self.backend, self.engines, self.note = backend, engines, note
        self.preprocessor = preprocessor or Preprocessor(engines.input_spec())

    @classmethod
    def load(cls, settings: RunSettings | str | Path) -> "Pipeline":
        """The pipeline `settings` describe (runtime/settings.py); an engine folder's path alone means the
        default settings for it."""
        settings = RunSettings.of(settings)
        check_choice(settings.backend, settings.precision)
        folder = EngineFolder.open(settings.engines)
        # before any session loads: a bad --asr or a missing or different ASR model is one clear error
        preprocessor = preprocessor_for(folder, settings, detector=False)
        backend = load_backend(settings.backend, folder, precision=settings.precision, threads=settings.threads,
                               memory_arena=settings.memory_arena, providers=settings.providers,
                               device=settings.device)
        if preprocessor.face_crop:  # the face detector runs where the stages run
            preprocessor.detector = YuNet(backend.graph_runner(folder.detector_file))
        return cls(backend, folder, backend.note, preprocessor)

    @property
    def config(self) -> ModelConfig:
        return self.engines.config

    def check_batch(self, batch: dict[str, np.ndarray], max_batch: int | None = None) -> None:
        """Refuse, before any work, a batch the build profile does not admit: every contract input present
        with its rank and fixed sizes (dtypes are cast by the backend), each length at most the profile's
        max, and at most `max_batch` rows where given. Attention costs the square of a length: one request
        100× too long took a server from 9 to 19 GB before this check."""
        config, limits = self.config, self.engines.profile.max_len
        sizes = static_axis_sizes(config)
        rows = {len(batch[s.name]) for s in PIPELINE_INPUTS if s.name in batch and np.ndim(batch[s.name])}
        for spec in PIPELINE_INPUTS:
            array = batch.get(spec.name)
            axes = input_axes(spec, config)
            if array is None:
                raise ShapeError(f"the input {spec.name} is missing (the contract: {', '.join(axes)})")
            if array.ndim != len(axes):
                raise ShapeError(f"{spec.name} has {array.ndim} axes, the contract has {len(axes)} ({', '.join(axes)})")
            for axis, size in zip(axes, array.shape):
                if axis in LENGTH_AXES and size > limits[LENGTH_AXES[axis]]:
                    raise ShapeError(f"{spec.name} has {size} {LENGTH_AXES[axis]} steps; these engines take at "
                                     f"most {limits[LENGTH_AXES[axis]]} (the build profile's max)")
                if axis in sizes and size != sizes[axis]:
                    raise ShapeError(f"{spec.name} has {size} on axis {axis}, these engines take {sizes[axis]}")
        if len(rows) > 1:
            raise ShapeError(f"the inputs disagree on the batch size: {sorted(rows)}")
        if max_batch is not None and rows and max(rows) > max_batch:
            raise ShapeError(f"a batch of {max(rows)} rows; at most {max_batch}")
        self.check_values(batch)

    def check_values(self, batch: dict[str, np.ndarray]) -> None:
        """Refuse values no input can have: a length axis of 0 steps (a modality that is not there has
        its mask false instead), a NaN or an infinity in a float input, a token id outside the tokenizer's
        vocabulary. Each is the client's error in one line, never a traceback from inside a stage."""
        for spec in PIPELINE_INPUTS:
            array = batch[spec.name]
            for axis, size in zip(input_axes(spec, self.config), array.shape):
                if axis in LENGTH_AXES and size < 1:
                    raise ShapeError(f"{spec.name} has no {LENGTH_AXES[axis]} steps; at least 1 (a modality "
                                     "that is not there has its mask false)")
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise ShapeError(f"{spec.name} holds {int((~np.isfinite(array)).sum())} non-finite values "
                                 "(NaN or infinity)")
        ids, vocab = batch.get("input_ids"), self.config.text.vocab_size
        if ids is not None and ids.size and np.issubdtype(ids.dtype, np.integer) and \
                (ids.min() < 0 or ids.max() >= vocab):
            raise ShapeError(f"input_ids holds token ids outside the vocabulary [0, {vocab}): "
                             f"{int(ids.min())}..{int(ids.max())}")

    @staticmethod
    def check_evidence(batch: dict[str, np.ndarray]) -> None:
        """Refuse a row with no real step in any modality (every mask false): it has nothing to score.
        For requests from outside; the evaluator's own abstaining rows are scored and then set to 0."""
        masks = [np.asarray(batch[f"{m}_mask"], bool).reshape(len(batch[f"{m}_mask"]), -1).any(axis=1)
                 for m in MODALITIES]
        empty = np.flatnonzero(~np.logical_or.reduce(masks))
        if empty.size:
            raise ShapeError(f"row {int(empty[0])} has every mask false: no text, audio or video to score")

    def run_batch(self, batch: dict[str, np.ndarray]) -> BatchResult:
        """All five stages on one padded batch (checked against the build profile first), with
        milliseconds per stage."""
        self.check_batch(batch)
        stage_ms: dict[str, float] = {}
        tensors = self.backend.run(batch, stage_ms)
        return BatchResult({k: tensors[k] for k in OUTPUTS}, stage_ms)

    def scores(self, items: list[ClipInputs], batch_size: int = 32) -> np.ndarray:
        """Scores of already-preprocessed items, in order, run in padded batches."""
        spec = self.preprocessor.spec
        items = [truncate_to_limits(item, spec) for item in items]  # data prepared for the config's limits
        chunks = [items[i: i + batch_size] for i in range(0, len(items), batch_size)]
        return np.concatenate([self.run_batch(collate(c, spec)).outputs["score"] for c in chunks]
                              or [np.zeros(0, np.float32)])

    def predict_inputs(self, items: list[ClipInputs]) -> list[dict]:
        """Result records for already-preprocessed clips, run as one micro-batch."""
        result = self.run_batch(collate(items, self.preprocessor.spec))
        records = []
        for row, item in enumerate(items):
            score = float(result.outputs["score"][row])
            records.append({
                "id": item.id, "score": round(score, 4), "polarity": polarity(score),
                "label7": SENTIMENT_CLASSES[class_of(score)],
                "gates": {m: round(float(g), 4) for m, g in zip(MODALITIES, result.outputs["gates"][row])},
                "present": item.present, "absent": item.absent, "masked": item.masked, "truncated": item.truncated,
                **item.notes,
                "duration_s": None if item.duration_s is None else round(item.duration_s, 3),
                "batch": len(items),
                "stage_ms": {k: round(v, 3) for k, v in {**item.front_ms, **result.stage_ms}.items()},
                "backend": self.backend.name, "precision": self.backend.precision,
                "provider": self.backend.provider,
                **({"stage_backends": labels} if (labels := self.backend.stage_labels()) else {}),
            })
        return records

    def predict_prepared(self, entries: list[ClipInputs | dict]) -> list[dict]:
        """Records in order for preprocessed clips mixed with error records (passed through as they are);
        the clips run as one micro-batch. For callers that preprocess elsewhere (a server, Ray tasks)."""
        out = list(entries)
        ready = [i for i, entry in enumerate(entries) if isinstance(entry, ClipInputs)]
        if ready:
            for index, record in zip(ready, self.predict_inputs([entries[i] for i in ready])):
                out[index] = record
        return out  # type: ignore[return-value] - every ClipInputs became its record

    def iter_predict(self, clips: list[Clip], batch_size: int = 1) -> Iterator[dict]:
        """Yield one record per clip, error records included; a bad clip never stops the others."""
        pending: list[ClipInputs] = []
        for clip in clips:
            try:
                pending.append(self.preprocessor.from_clip(clip))
            except Exception as err:  # noqa: BLE001 - any failure of one clip becomes its error line
                yield error_record(clip.id, err)
            if len(pending) >= batch_size:
                yield from self.predict_inputs(pending)
                pending = []
        if pending:
            yield from self.predict_inputs(pending)

    def predict(self, paths: list[str | Path], batch_size: int = 1) -> list[dict]:
        """Every clip under `paths` → its record (see README for the fields)."""
        return list(self.iter_predict(order_by_size(find_clips([Path(p) for p in paths])), batch_size))

    def close(self) -> None:
        self.backend.close()


def preprocessor_for(engines: EngineFolder, settings: RunSettings, detector: bool = True) -> Preprocessor:
    """The input handling these engines need, its ASR model checked against theirs: what `Pipeline.load`
    uses, and what a worker that only decodes (Ray tasks) builds on its own. `detector`: give it the
    folder's face detector on ONNX Runtime (Pipeline.load gives it its backend's instead)."""
    recognizer = (SpeechRecognizer(beam_size=settings.asr_beam_size, vad=settings.asr_vad, model=settings.asr_model)
                  if settings.asr != "off" else None)
    preprocessor = Preprocessor(engines.input_spec(), face_crop=settings.face_crop, asr=settings.asr,
                                recognizer=recognizer,
                                voice=engines.voice_familiarity() if settings.voice_check else None,
                                detector=engines.face_detector() if settings.face_crop and detector else None)
    if settings.asr != "off" or preprocessor.speech is not None:
        check_asr_model(engines, recognizer.spec.name if recognizer else None, preprocessor.speech is not None)
    return preprocessor


def check_asr_model(engines: EngineFolder, recognizer_model: str | None, audio_front_end: bool = False) -> None:
    """Refuse the Whisper model the engines were built beside when this machine's copy of it differs
    (other audio steps for the `whisper` front-end, other words, other scores). A model chosen with
    --asr-model other than the recorded one is the user's choice: each record names it and its hash.
    Engines built without a record of it are not checked."""
    from cmmsf.inputs.asr_models import model_sha256

    record = engines.manifest.asr
    if record is None or not (audio_front_end or recognizer_model == record.model):
        return
    if record.model_sha256 != (here := model_sha256(record.model)):
        raise ManifestError(f"{engines.path} was built with the Whisper {record.model} model {record.model_sha256[:12]}…, "
                            f"this machine has {here[:12]}… ({record.package}): install the same one or rebuild the "
                            "engines" + ("" if audio_front_end else ", or pass --asr off"))


def order_by_size(clips: list[Clip]) -> list[Clip]:
    """Clips of similar media size (≈ length) next to each other, so micro-batches pad little."""
    return sorted(clips, key=lambda c: (c.media.stat().st_size if c.media and c.media.exists() else 0, c.id))
