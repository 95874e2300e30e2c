"""The calibration set of an INT8 build: real inputs from the data folder, each stage's feeds recorded.

Static quantisation fixes each activation's int8 range from what the stage sees in calibration, so the
inputs must be what users send: MOSI sentences, acted voices (RAVDESS, EmoDB) and face photos, from
their *train* splits (the accuracy guard judges on dev; calibrating there would tune on the judge).
Each source gives its own clips, and as many three-modality clips again are made by pairing the i-th
sentence, voice and face, so the interaction and the head see all three at once, as on a real mp4.
The ONNX Runtime FP32 chain runs them one clip at a time (no padding enters a range) and every stage's
inputs are kept. The set is named and hashed for the manifest: the same data gives the same hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmmsf.contracts import STAGE_ORDER
from cmmsf.inputs.errors import CmmsfError
from cmmsf.inputs.features import ClipInputs, collate
from cmmsf.runtime.backends.base import Backend

SOURCES = ("mosi/label.csv", "ravdess", "emodb", "faces")
"""Under the data folder: sentences, two corpora of voices (two languages), face photos."""
PER_SOURCE = 24
"""Clips taken from each source (evenly over its train split, in id order)."""


class CalibrationError(CmmsfError, RuntimeError):
    """The calibration data cannot be read; the message says what is missing."""


@dataclass
class Calibration:
    feeds: dict[str, list[dict[str, np.ndarray]]]
    """Stage → the feeds it received, one per calibration clip."""
    record: dict
    """What the manifest keeps: sources, split, clips and a sha256 over every clip's arrays."""


def _picked(data_dir: Path, source: str, config, per_source: int) -> list[ClipInputs]:
    from cmmsf.data.datasets import load_dataset

    path = data_dir / source
    if not path.exists():
        raise CalibrationError(f"the calibration data is missing: {path} (--data-dir holds {', '.join(SOURCES)})")
    items, _ = load_dataset(path, "train", config, asr="off")
    # one per id (train repeats a small corpus), in id order; an item's id without building its inputs
    unique = sorted({(it.maker.id if it.maker is not None else it.inputs.id): it for it in items}.items())
    if not unique:
        raise CalibrationError(f"{path} has no train split to calibrate on")
    chosen = np.linspace(0, len(unique) - 1, min(per_source, len(unique))).round().astype(int)
    return [unique[i][1].sample(None) for i in chosen]


def calibration_clips(data_dir: Path, config, per_source: int = PER_SOURCE) -> list[ClipInputs]:
    """Each source's clips, then the three-modality pairings (sentence i, voice i, face i)."""
    by_source = {source: _picked(data_dir, source, config, per_source) for source in SOURCES}
    clips = [clip for source in SOURCES for clip in by_source[source]]
    voices = by_source["ravdess"] + by_source["emodb"]
    for i, (text, face) in enumerate(zip(by_source["mosi/label.csv"], by_source["faces"])):
        voice = voices[i % len(voices)]
        arrays = {"text": text.arrays["text"], "audio": voice.arrays["audio"], "video": face.arrays["video"]}
        clips.append(ClipInputs(f"{text.id}+{voice.id}+{face.id}", arrays))
    return clips


def record_feeds(backend: Backend, batches: list[dict[str, np.ndarray]]) -> dict[str, list[dict[str, np.ndarray]]]:
    """Stage → its own inputs for each batch (`Backend.stage_feeds`: one pass of the chain per batch)."""
    passes = [backend.stage_feeds(batch) for batch in batches]
    return {stage: [feeds[stage] for feeds in passes] for stage in STAGE_ORDER}


def digest(clips: list[ClipInputs]) -> str:
    """sha256 over the clips' ids and arrays, in order: the calibration set's identity."""
    hasher = hashlib.sha256()
    for clip in clips:
        hasher.update(clip.id.encode("utf-8", "backslashreplace"))
        for modality in sorted(clip.arrays):
            array = clip.arrays[modality]
            if array is not None:
                hasher.update(modality.encode())
                hasher.update(np.ascontiguousarray(array).tobytes())
    return hasher.hexdigest()


def calibrate(config, backend: Backend, data_dir: Path, per_source: int = PER_SOURCE) -> Calibration:
    """Read the calibration clips under `data_dir` and record what each stage of `backend` (the FP32
    graphs of `config`'s model) receives."""
    clips = calibration_clips(Path(data_dir), config, per_source)
    spec = config.input_spec()
    feeds = record_feeds(backend, [collate([clip], spec) for clip in clips])
    record = {"sources": list(SOURCES), "split": "train", "per_source": per_source, "clips": len(clips),
              "sha256": digest(clips)}
    return Calibration(feeds, record)
