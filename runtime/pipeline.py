"""The Python API behind `cmmsf-run infer`: `Pipeline.load(engines).predict(paths)`.

Chains the five stages on one backend, times each stage, and turns outputs into result records.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmmsf.config import ModelConfig
from cmmsf.contracts import MODALITIES, SENTIMENT_CLASSES, STAGES, class_of
from inputs.clips import Clip, find_clips
from inputs.features import ClipInputs, Preprocessor, collate

from .backends import load_backend, resolve_auto
from .backends.base import Backend
from .manifest import read_manifest


@dataclass
class BatchResult:
    outputs: dict[str, np.ndarray]
    stage_ms: dict[str, float]


def polarity(score: float) -> str:
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


class Pipeline:
    """Engines + backend + preprocessing for one engine folder."""

    def __init__(self, backend: Backend, config: ModelConfig, folder: Path, note: str = "",
                 face_crop: bool = False):
        self.backend, self.config, self.folder, self.note = backend, config, folder, note
        self.preprocessor = Preprocessor(config.input_spec(), face_crop=face_crop)

    @classmethod
    def load(cls, engines: str | Path, backend: str = "auto", precision: str = "fp32",
             threads: int | None = None, face_crop: bool = False) -> "Pipeline":
        folder = Path(engines)
        manifest = read_manifest(folder)
        note = ""
        if backend == "auto":
            backend, why = resolve_auto(folder)
            note = f"auto → {backend} ({why})"
        chosen = load_backend(backend, folder, precision=precision, threads=threads)
        return cls(chosen, ModelConfig.from_dict(manifest["model"]["config"]), folder, note, face_crop)

    def run_batch(self, batch: dict[str, np.ndarray]) -> BatchResult:
        """All five stages on one padded batch, with milliseconds per stage."""
        tensors, stage_ms = dict(batch), {}
        for stage in STAGES:
            start = time.perf_counter()
            tensors.update(self.backend.run_stage(stage, tensors))
            stage_ms[stage] = (time.perf_counter() - start) * 1e3
        return BatchResult({k: tensors[k] for k in STAGES["mgf_head"].output_names}, stage_ms)

    def predict_inputs(self, items: list[ClipInputs]) -> list[dict]:
        """Result records for already-preprocessed clips, run as one micro-batch."""
        result = self.run_batch(collate(items, self.config.input_spec()))
        records = []
        for row, item in enumerate(items):
            score = float(result.outputs["score"][row])
            records.append({
                "id": item.id, "score": round(score, 4), "polarity": polarity(score),
                "label7": SENTIMENT_CLASSES[class_of(score)],
                "gates": {m: round(float(g), 4) for m, g in zip(MODALITIES, result.outputs["gates"][row])},
                "present": item.present, "masked": item.masked, "truncated": item.truncated,
                "duration_s": None if item.duration_s is None else round(item.duration_s, 3),
                "batch": len(items), "stage_ms": {k: round(v, 3) for k, v in result.stage_ms.items()},
                "backend": self.backend.name, "provider": self.backend.provider,
            })
        return records

    def iter_predict(self, clips: list[Clip], batch_size: int = 1) -> Iterator[dict]:
        """Yield one record per clip, error records included; a bad clip never stops the others."""
        pending: list[ClipInputs] = []
        for clip in clips:
            try:
                pending.append(self.preprocessor.from_clip(clip))
            except Exception as err:  # noqa: BLE001 - any failure of one clip becomes its error line
                yield {"id": clip.id, "error": f"{type(err).__name__}: {err}"}
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


def order_by_size(clips: list[Clip]) -> list[Clip]:
    """Clips of similar media size (≈ length) next to each other, so micro-batches pad little."""
    return sorted(clips, key=lambda c: (c.media.stat().st_size if c.media and c.media.exists() else 0, c.id))
