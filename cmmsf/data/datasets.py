"""Datasets: transcript CSV, MMSA feature pickles, clip folders and emotion sources, all yielding Labelled.

Every loader skips bad rows (missing file, unreadable media, empty text, label outside [-3, 3]) and
returns a `Skipped` record with a count and the first reasons, so training never dies mid-epoch.
Batches are built by the same `inputs.features.collate` the runtime uses, so training sees exactly what deployment sees.
"""

from __future__ import annotations

import csv
import io
import math
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cmmsf.inputs.clips import find_clips
from cmmsf.inputs.errors import DataError, UsageError
from cmmsf.inputs.features import ClipInputs, Preprocessor, collate, truncate_to_limits
from cmmsf.inputs.text import encode

from cmmsf.config import ModelConfig
from cmmsf.data.examples import Labelled, Skipped, source_name
from cmmsf.data.sources import load_emotion_source, source_kind

if TYPE_CHECKING:
    from rich.console import Console

SPLIT_ALIASES = {"train": "train", "dev": "dev", "valid": "dev", "val": "dev", "test": "test", "all": "all"}
"""`all` (evaluation only): every row of every split, for leave-one-corpus-out figures."""


def normalise_split(split: str) -> str:
    try:
        return SPLIT_ALIASES[split]
    except KeyError:
        raise UsageError(f"unknown split {split!r}; use train, dev (valid), test or all") from None


def _label(value: object) -> float | None:
    try:
        label = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return label if math.isfinite(label) and -3.0 <= label <= 3.0 else None


def load_transcript_csv(path: Path, split: str, config: ModelConfig) -> tuple[list[Labelled], Skipped]:
    """`id,text,label,mode` rows of one split: text only, audio and video absent (masked)."""
    split, skipped, items = normalise_split(split), Skipped(), []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if split != "all" and normalise_split(row.get("mode", "train") or "train") != split:
                continue
            label = _label(row.get("label"))
            text = (row.get("text") or "").strip()
            if label is None:
                skipped.add(f"{row.get('id')}: label {row.get('label')!r} not a number in [-3, 3]")
            elif not text:
                skipped.add(f"{row.get('id')}: empty text")
            else:
                ids = _tokenize(text, config)
                items.append(Labelled(ClipInputs(row["id"], {"text": ids, "audio": None, "video": None}), label,
                                      source_name(path)))
    return items, skipped


def _tokenize(text: str, config: ModelConfig) -> np.ndarray:
    return encode([text], config.text.backbone, config.text.max_len)[0][0]


class _ArraysOnly(pickle.Unpickler):
    """MMSA pickles hold only numpy arrays, lists and dicts: refuse any other class (no code runs)."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "dict"), ("builtins", "list"),
               ("collections", "OrderedDict")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"MMSA pickle holds a {module}.{name}; only arrays are allowed")
        return super().find_class(module, name)


def load_mmsa_pickle(path: Path, split: str, config: ModelConfig) -> tuple[list[Labelled], Skipped]:
    """MMSA's `{train, valid, test: {text_bert, audio, vision, *_lengths, regression_labels, id}}`."""
    if normalise_split(split) == "all":
        raise DataError(f"{path} is an MMSA pickle: evaluate its train, valid or test split, not all")
    key = {"train": "train", "dev": "valid", "test": "test"}[normalise_split(split)]
    with open(path, "rb") as handle:
        try:
            data = _ArraysOnly(io.BytesIO(handle.read())).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
            raise DataError(f"{path} refused: {err}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is not an MMSA pickle (it holds a {type(data).__name__}, not a dict of splits)")
    if key not in data:
        raise DataError(f"{path} has no '{key}' split (has {sorted(data)})")
    part, skipped, items = data[key], Skipped(), []
    labels = np.asarray(part["regression_labels"], dtype=np.float64).reshape(-1)
    ids = part.get("id", [f"{key}_{i}" for i in range(len(labels))])
    for i, raw in enumerate(labels):
        label = _label(raw)
        if label is None:
            skipped.add(f"{ids[i]}: label {raw!r} not in [-3, 3]")
            continue
        bert = np.asarray(part["text_bert"][i])
        mask = bert[1].astype(bool)
        text = bert[0][mask].astype(np.int32)[: config.text.max_len]
        arrays = {"text": text if len(text) else None,
                  "audio": _feature_rows(part["audio"][i], part.get("audio_lengths"), i),
                  "video": _feature_rows(part["vision"][i], part.get("vision_lengths"), i)}
        if all(a is None for a in arrays.values()):
            skipped.add(f"{ids[i]}: no data in any modality")
            continue
        item = ClipInputs(str(ids[i]), arrays)
        items.append(Labelled(truncate_to_limits(item, config.input_spec()), label, source_name(path)))
    return items, skipped


def _feature_rows(array: np.ndarray, lengths, i: int) -> np.ndarray | None:
    """One clip's real feature rows, cleaned the way MMSA cleans them.

    Non-finite values (COVAREP writes -inf for silence) become 0, as MMSA's loader does; `nan_to_num`
    would make them ±3.4e38. Unaligned pickles give true lengths (`*_lengths`). Aligned pickles have
    none and zero-pad every clip to one length: an all-zero row is padding there, not a step, so only
    the rows from the first to the last non-zero one are kept.
    """
    rows = np.asarray(array, dtype=np.float32)
    rows = np.where(np.isfinite(rows), rows, np.float32(0.0))
    if lengths is not None:
        rows = rows[: int(lengths[i])]
    else:
        real = np.flatnonzero(np.abs(rows).reshape(len(rows), -1).sum(axis=1) > 0)
        rows = rows[real[0]: real[-1] + 1] if len(real) else rows[:0]
    return rows if len(rows) else None


def load_clip_folder(folder: Path, labels_csv: Path, split: str | None, config: ModelConfig,
                     face_crop: bool = True, asr: str = "off") -> tuple[list[Labelled], Skipped]:
    """Clips of `folder` labelled by a CSV with `id,label[,mode]`, decoded like the runtime decodes them."""
    labels: dict[str, tuple[float | None, str]] = {}
    with open(labels_csv, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            labels[row["id"]] = (_label(row.get("label")), normalise_split(row.get("mode") or "train"))
    preprocessor, skipped, items = Preprocessor(config.input_spec(), face_crop, asr), Skipped(), []
    for clip in find_clips([folder]):
        label, mode = labels.get(clip.id, (None, "train"))
        if split is not None and normalise_split(split) not in (mode, "all"):
            continue
        if clip.id not in labels or label is None:
            skipped.add(f"{clip.id}: no valid label in {labels_csv.name}")
            continue
        try:
            items.append(Labelled(preprocessor.from_clip(clip), label, source_name(folder)))
        except Exception as err:  # noqa: BLE001 - one unreadable clip must not stop the dataset
            skipped.add(f"{clip.id}: {err}")
    return items, skipped


def load_dataset(path: Path, split: str, config: ModelConfig, labels: Path | None = None,
                 sources_file: Path | None = None, face_crop: bool = True, asr: str = "off"
                 ) -> tuple[list[Labelled], Skipped]:
    """Dispatch on what `path` is: a .csv of transcripts, an MMSA .pkl, a RAVDESS- or faces-style
    emotion folder (read by the rules of `sources_file`), or a clip folder (+ labels, decoded with
    `face_crop` and `asr` as `infer` would)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data not found: {path}")
    if path.is_dir() and labels is None and source_kind(path):
        return load_emotion_source(path, normalise_split(split), config, sources_file)
    if path.is_dir():
        labels = labels or path / "labels.csv"
        if not labels.is_file():
            raise FileNotFoundError(f"a clip folder needs a labels CSV (id,label,mode): {labels} not found")
        return load_clip_folder(path, labels, split, config, face_crop, asr)
    if path.suffix == ".pkl":
        return load_mmsa_pickle(path, split, config)
    return load_transcript_csv(path, split, config)


def make_batch(items: list[Labelled], config: ModelConfig, rng: np.random.Generator | None = None
               ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Padded batch dict + labels [B] float32; with `rng`, emotion sources give augmented samples."""
    inputs = [it.sample(rng) for it in items]
    return collate(inputs, config.input_spec()), np.array([it.label for it in items], np.float32)


def by_source(items: list[Labelled]) -> dict[str, list[Labelled]]:
    """Examples grouped by their source, in first-seen order."""
    groups: dict[str, list[Labelled]] = {}
    for item in items:
        groups.setdefault(item.source, []).append(item)
    return groups


def load_splits(data: Path | list[Path], config: ModelConfig, labels: Path | None = None,
                sources_file: Path | None = None, console: Console | None = None,
                splits: tuple[str, ...] = ("train", "dev", "test"), face_crop: bool = True,
                asr: str = "off", unanswered: dict[str, list[float]] | None = None) -> dict[str, list[Labelled]]:
    """Every split of every data path, concatenated (each example keeps its `source`). `unanswered`, if
    given, gets per source the labels of rows the runtime would answer nothing for (Skipped.unanswered)."""
    paths = [Path(p) for p in (data if isinstance(data, (list, tuple)) else [data])]
    out: dict[str, list[Labelled]] = {split: [] for split in splits}
    for path in paths:
        for split in splits:
            items, skipped = load_dataset(path, split, config, labels, sources_file, face_crop, asr)
            out[split] += items
            if unanswered is not None and skipped.unanswered:
                unanswered.setdefault(source_name(path), []).extend(skipped.unanswered)
            if skipped.count and console is not None:
                console.print(f"[yellow]{path.name} {split}: {skipped.summary()}[/]")
    return out
