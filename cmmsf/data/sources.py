"""Emotion-labelled training sources: acted speech (audio + its spoken sentence) and still faces (video).

Each source brings the modalities it has and leaves the rest absent (masked), so one trainer run mixes
MOSI transcripts, acted speech and face photos. A folder's layout (its labels.csv columns) says how it
is read: `speech` (RAVDESS, EmoDB) or `faces` (faces/, FER2013). Its name says which rules of
cmmsf/data/sources.json apply (how an emotion maps to the sentiment scale, how it is split and
weighted, the targets `cmmsf-train eval` checks, each number with its reasoning); a folder of another
name takes the rules of its layout's reference set (`ravdess` or `faces`). Inputs go through the
runtime's own preprocessing (`Preprocessor.audio`, the face detector of cmmsf/inputs/video.py), so training
sees what deployment sees: a photo in which the detector finds no face is skipped, as a clip without
one has no video.
"""

from __future__ import annotations

import csv
import json
import zlib
from collections import Counter
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import with_config

from cmmsf.inputs.features import ClipInputs, Preprocessor
from cmmsf.inputs.errors import DataError
from cmmsf.inputs.media import decode_audio
from cmmsf.inputs.video import FaceBox, crop_face, detect_face, frames_to_input, read_face

from cmmsf.config import ModelConfig
from cmmsf.data.examples import Labelled, Skipped, source_name
from cmmsf.evaluation.metrics import valence_classes
from cmmsf.validation import STRICT, validated
from cmmsf.data.voice_augment import recording_variant

SOURCES_FILE = Path(__file__).resolve().parent / "sources.json"

@with_config(STRICT)
@dataclass
class SpeakerRules:
    """A speech corpus split by actor (RAVDESS, EmoDB, TESS, TurEV): no voice of dev or test is heard in
    training. Actors are named as the corpus's labels.csv names them (numbers, or TESS's OAF and YAF)."""

    split_by: Literal["actor"]
    dev_actors: list[int | str]
    test_actors: list[int | str]
    text_dropout: float = 0.0
    train_repeat: int = 1
    channel_variants: int = 0
    """Training voices are also heard through this many random recording channels (voice_augment.py)."""
    emotions_alike: bool = False
    """In training, every emotion of a valence class weighs alike (the class's total weight unchanged):
    RAVDESS's 4 neutral clips per actor count as much as its 8 surprised ones."""
    speaker_centred: bool = False
    """Each voice's steps less its speaker's mean state over the split's clips (every emotion; each channel
    variant by its own): the voice read relative to the speaker. It needs the speaker's other clips, which
    no run-time path has yet, so it is for experiments (experiments/voice_probe.py --speaker-centred)."""


@with_config(STRICT)
@dataclass
class PhotoRules:
    """A face-photo set split by person (the name before _NNNN) or by image (a stable hash of its name)."""

    split_by: Literal["person", "image"]
    dev_bucket: int
    test_bucket: int
    buckets: int
    train_frames: tuple[int, int]
    eval_frames: int
    max_shift: int
    train_repeat: int = 1
    crop_jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """In training, each clip's crop is moved by up to this share of its side, scaled by up to this share and
    turned by up to this many degrees (one draw per clip): the wobble of the detector's box and landmarks
    between a tight photo and the same face small in a frame, so the encoder learns to ignore it."""
    framed_variants: int = 0
    """Each training photo is also placed this many times small in a 640×480 frame (evaluation/framing.py)
    and cropped there by the detector, what a webcam shows; one of these or the tight crop is drawn at
    each reading."""


@with_config(STRICT)
@dataclass
class Gate:
    """The bar a source's row must clear in `cmmsf-train eval` (cmmsf/evaluation/evaluator.py GATE_KEYS)."""

    modalities: str
    mae_max: float | None = None
    corr_min: float | None = None
    valence2_balanced_min: float | None = None
    valence3_balanced_min: float | None = None


@with_config(STRICT)
@dataclass
class SourcesFile:
    """What sources.json holds besides the per-source rules (every other key is a source's name)."""

    emotion_to_sentiment: dict[str, float]
    balance: dict[Literal["cap"], float]
    intensity_scale: dict[str, float] = field(default_factory=dict)
    gates: dict[str, Gate] = field(default_factory=dict)


SOURCE_FILE_KEYS = {f.name for f in dataclasses.fields(SourcesFile)}


def load_sources_config(path: str | Path | None = None) -> dict[str, Any]:
    """The sources file (default: cmmsf/data/sources.json; one with `extends` changes only the keys
    it names in the file it extends) with `_why` comments removed, checked by
    pydantic (cmmsf/validation.py): a misspelt key or a wrong type is one line naming it."""
    path = Path(path) if path else SOURCES_FILE
    sources = _read_sources(path)
    what = f"sources file {path}"
    validated(SourcesFile, {k: v for k, v in sources.items() if k in SOURCE_FILE_KEYS}, what)
    for name, rules in sources.items():
        if name not in SOURCE_FILE_KEYS:  # a source's rules, their kind told by split_by
            kind = SpeakerRules if isinstance(rules, dict) and rules.get("split_by") == "actor" else PhotoRules
            validated(kind, rules, what, prefix=f"{name}.")
    return sources


def _read_sources(path: Path) -> dict[str, Any]:
    """A sources file without comments; one with `extends` (a file beside it) changes only the keys it names."""
    if not path.is_file():
        raise FileNotFoundError(f"sources file not found: {path}")
    sources = _strip_comments(json.loads(path.read_text(encoding="utf-8")))
    base = sources.pop("extends", None)
    return _merged(_read_sources(path.parent / base), sources) if base else sources


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def _strip_comments(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_comments(v) for k, v in value.items() if not k.startswith("_")}
    return value


def emotion_score(emotion: str, sources: dict[str, Any], intensity: str = "normal") -> float:
    """The sentiment an emotion class stands for, scaled by intensity and clipped to [-3, 3]."""
    mapping = sources["emotion_to_sentiment"]
    if emotion not in mapping:
        raise DataError(f"emotion {emotion!r} has no sentiment in the sources file (has {', '.join(mapping)})")
    scale = sources.get("intensity_scale", {}).get(intensity, 1.0)
    return float(np.clip(mapping[emotion] * scale, -3.0, 3.0))


@dataclass
class SourceItem:
    """One example of an emotion source; `sample(rng)` gives its (augmented) inputs, rng=None the plain ones."""

    id: str
    source: str
    emotion: str
    label: float
    modalities = ("text", "audio", "video")
    """What this kind of example brings (a class attribute per subclass)."""

    def sample(self, rng: np.random.Generator | None = None) -> ClipInputs:
        raise NotImplementedError


@dataclass
class SpokenClip(SourceItem):
    """Acted speech: log-mel of the voice and the neutral sentence spoken; text dropped at random."""

    audio: np.ndarray | None = None
    text: np.ndarray | None = None
    text_dropout: float = 0.0
    variants: tuple[np.ndarray, ...] = ()
    """The audio steps of the voice heard through other channels (cmmsf/data/voice_augment.py), train only."""
    voice_absent: str | None = None
    """Why the voice is left out (evaluation's familiarity check, cmmsf/inputs/familiarity.py), if it is."""
    modalities = ("text", "audio")

    def sample(self, rng: np.random.Generator | None = None) -> ClipInputs:
        keep_text = rng is None or rng.random() >= self.text_dropout
        audio = self.audio
        if rng is not None and self.variants:
            pick = int(rng.integers(len(self.variants) + 1))
            audio = self.audio if pick == len(self.variants) else self.variants[pick]
        if self.voice_absent is not None:
            return ClipInputs(self.id, {"text": self.text if keep_text else None, "audio": None, "video": None},
                              absent={"audio": self.voice_absent})
        return ClipInputs(self.id, {"text": self.text if keep_text else None, "audio": audio, "video": None})


@dataclass
class StillFace(SourceItem):
    """A face photo shown as a short clip: jittered frames in training, in evaluation the dithered frames the
    run time reads of a still face (video.DITHER).
    `image` is the detector's crop of the photo (face_photo), so frames are not cropped again."""

    image: np.ndarray | None = None
    photo: Path | None = None
    """The photo file (the framing reading places it in a larger frame)."""
    image_size: int = 64
    train_frames: tuple[int, int] = (4, 10)
    eval_frames: int = 15
    max_shift: int = 4
    crop_jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """(centre share, side share, degrees) of PhotoRules.crop_jitter, training only."""
    framed: tuple[np.ndarray, ...] = ()
    """The detector's crops of the photo placed small in frames (PhotoRules.framed_variants), training only."""
    modalities = ("video",)

    def sample(self, rng: np.random.Generator | None = None) -> ClipInputs:
        if rng is None:  # read as the run time reads a still face: each frame's crop dithered (video.DITHER)
            side = self.image.shape[0]
            centre = FaceBox(side / 2, side / 2, side)
            frames = np.stack([read_face(self.image, centre, side, j) for j in range(self.eval_frames)])
        else:
            image = self.image
            if self.framed:
                pick = int(rng.integers(len(self.framed) + 1))
                image = image if pick == len(self.framed) else self.framed[pick]
            image = image[:, ::-1] if rng.random() < 0.5 else image
            if any(self.crop_jitter):
                image = jittered_crop(image, rng, *self.crop_jitter)
            count = int(rng.integers(self.train_frames[0], self.train_frames[1] + 1))
            frames = np.stack([_shifted(image, rng, self.max_shift) for _ in range(count)])
        return ClipInputs(self.id, {"text": None, "audio": None,
                                    "video": frames_to_input(frames, self.image_size, face_crop=False)})


def face_photo(image: np.ndarray) -> np.ndarray | None:
    """The detector's square crop of a photo at its own resolution, or None when it finds no face."""
    box = detect_face(image)
    return None if box is None else crop_face(image, box, max(2, int(round(box.side))))


def jittered_crop(image: np.ndarray, rng: np.random.Generator, centre: float, side: float, degrees: float
                  ) -> np.ndarray:
    """The square crop as a slightly different box would have cut it: moved by up to `centre` of its side
    each way, its side scaled by up to `side` either way, turned by up to `degrees`; edges repeated."""
    size = image.shape[0]
    dx, dy = rng.uniform(-centre, centre, size=2) * size
    zoom = 1.0 / (1.0 + rng.uniform(-side, side))  # a box larger by k shows the face 1/k as large
    turn = cv2.getRotationMatrix2D((size / 2, size / 2), float(rng.uniform(-degrees, degrees)), zoom)
    turn[:, 2] += (dx, dy)
    return cv2.warpAffine(image, turn, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def framed_crops(photo: np.ndarray, count: int, key: str) -> tuple[np.ndarray, ...]:
    """The detector's square crops of `photo` placed small in `count` random frames (seeded by `key`), each
    at its own resolution; placements where no face is found are left out."""
    from cmmsf.evaluation.framing import place_in_frame

    rng = np.random.default_rng(zlib.crc32(key.encode()))
    crops = []
    for _ in range(count):
        frame = place_in_frame(photo, rng)
        box = detect_face(frame)
        if box is not None:
            crops.append(crop_face(frame, box, max(2, int(round(box.side)))))
    return tuple(crops)


def _shifted(image: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """The image moved by up to max_shift pixels each way, edges repeated (a hand-held camera's jitter)."""
    dx, dy = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, shift, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


def _rows(labels_csv: Path) -> list[dict[str, str]]:
    with open(labels_csv, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def source_kind(path: Path) -> str | None:
    """The layout of an emotion folder, by its labels.csv columns: `speech` (like RAVDESS) or `faces`."""
    labels = Path(path) / "labels.csv"
    if not labels.is_file():
        return None
    with open(labels, newline="", encoding="utf-8") as handle:
        header = set(next(csv.reader(handle), []))
    if {"file", "actor", "emotion", "intensity", "statement"} <= header:
        return "speech"
    if {"file", "emotion"} <= header:
        return "faces"
    return None


REFERENCE_SET = {"speech": "ravdess", "faces": "faces"}
"""Whose rules a folder of a layout takes when sources.json has none under its own name."""


def source_rules(name: str, kind: str, sources: dict[str, Any]) -> dict[str, Any]:
    """The sources.json rules for a folder called `name` of layout `kind`."""
    return sources[name] if name in sources else sources[REFERENCE_SET[kind]]


def held_split(rules: dict[str, Any], key: str) -> str:
    """train, dev or test for a speaker id or a photo's file, by the rules' `split_by` (default: `actor`
    where the rules list actors, else `person`)."""
    split_by = rules.get("split_by", "actor" if "dev_actors" in rules else "person")
    if split_by == "actor":  # compared as written: "03" is actor 3, "OAF" is OAF
        actor = str(int(key)) if str(key).strip().isdigit() else str(key).strip()
        named = {split: {str(a) for a in rules[f"{split}_actors"]} for split in ("dev", "test")}
        return "dev" if actor in named["dev"] else "test" if actor in named["test"] else "train"
    bucket = (face_bucket(key, rules["buckets"]) if split_by == "person"
              else zlib.crc32(Path(key).name.encode()) % rules["buckets"])
    return {rules["dev_bucket"]: "dev", rules["test_bucket"]: "test"}.get(bucket, "train")


def load_speech(folder: Path, name: str, split: str, config: ModelConfig, sources: dict[str, Any],
                skipped: Skipped) -> list[SourceItem]:
    """Acted speech of one split (by actor): the model's audio steps and the statement's tokens; in train,
    also `channel_variants` versions of each voice through random recording channels."""
    rules = source_rules(name, "speech", sources)
    preprocessor = Preprocessor(config.input_spec())
    variants = int(rules.get("channel_variants", 0)) if split == "train" else 0
    items: list[SourceItem] = []
    for row in _rows(folder / "labels.csv"):
        if split != "all" and held_split(rules, row["actor"]) != split:
            continue
        try:
            wave = decode_audio(folder / row["file"], config.audio.sample_rate,
                                max_samples=preprocessor.audio_samples_needed())
            audio = preprocessor.audio(wave)
            if audio is None:
                raise ValueError("silent or no audio track")
            text = preprocessor.text(row["statement"])

            def assembled(voice: np.ndarray) -> dict[str, np.ndarray]:
                return preprocessor.assemble(ClipInputs(row["file"], {"text": text, "audio": voice, "video": None})).arrays

            rng = np.random.default_rng(zlib.crc32(row["file"].encode()))
            heard = [preprocessor.audio(recording_variant(wave, config.audio.sample_rate, rng)) for _ in range(variants)]
            limited = assembled(audio)
            items.append(SpokenClip(row["file"], name, row["emotion"],
                                    emotion_score(row["emotion"], sources, row.get("intensity", "normal")),
                                    audio=limited["audio"], text=limited["text"],
                                    text_dropout=float(rules.get("text_dropout", 0.0)),
                                    variants=tuple(assembled(v)["audio"] for v in heard if v is not None)))
        except Exception as err:  # noqa: BLE001 - one unreadable clip must not stop the dataset
            skipped.add(f"{row.get('file')}: {err}")
    return centre_by_speaker(items) if rules.get("speaker_centred") else items


def centre_by_speaker(items: list[SpokenClip]) -> list[SpokenClip]:
    """Each clip's audio steps less the mean (over its speaker's clips) of the clips' mean states; variant k
    of every clip is centred by the speaker's variant-k mean. A speaker is the clip's folder (actor_NN)."""
    by_speaker: dict[str, list[SpokenClip]] = {}
    for item in items:
        by_speaker.setdefault(str(Path(item.id).parent), []).append(item)
    for clips in by_speaker.values():
        mean = np.mean([c.audio.mean(axis=0) for c in clips], axis=0)
        count = min(len(c.variants) for c in clips)
        variant_means = [np.mean([c.variants[k].mean(axis=0) for c in clips], axis=0) for k in range(count)]
        for c in clips:
            c.audio = (c.audio - mean).astype(np.float32)
            c.variants = tuple((v - variant_means[k]).astype(np.float32) for k, v in enumerate(c.variants[:count]))
    return items


def face_bucket(file: str, buckets: int) -> int:
    """A stable bucket for the person in `images/Name_Surname_0003.jpg` (all their photos share it)."""
    stem = Path(file).stem
    person = stem.rsplit("_", 1)[0] if stem.rsplit("_", 1)[-1].isdigit() else stem
    return zlib.crc32(person.lower().encode()) % buckets


def load_faces(folder: Path, name: str, split: str, config: ModelConfig, sources: dict[str, Any],
               skipped: Skipped) -> list[SourceItem]:
    """Face photos of one split (by person or by image, as the rules say), each a StillFace of the
    detector's crop; photos without a detected face are skipped and counted."""
    rules = source_rules(name, "faces", sources)
    items: list[SourceItem] = []
    for row in _rows(folder / "labels.csv"):
        if split != "all" and held_split(rules, row["file"]) != split:
            continue
        emotion = row["emotion"].strip().lower()
        try:
            label = emotion_score(emotion, sources)
        except ValueError as err:
            skipped.add(f"{row['file']}: {err}")
            continue
        image = cv2.imread(str(folder / row["file"]), cv2.IMREAD_COLOR)
        if image is None:
            skipped.add(f"{row['file']}: not a readable image")
            continue
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        crop = face_photo(rgb)
        if crop is None:
            skipped.add(f"{row['file']}: no face found", unanswered_label=label)
            continue
        framed = framed_crops(rgb, int(rules.get("framed_variants", 0)), row["file"]) if split == "train" else ()
        items.append(StillFace(row["file"], name, emotion, label, image=crop, photo=folder / row["file"], framed=framed,
                               image_size=config.video.image_size, train_frames=tuple(rules["train_frames"]),
                               eval_frames=int(rules["eval_frames"]), max_shift=int(rules["max_shift"]),
                               crop_jitter=tuple(float(v) for v in rules.get("crop_jitter", (0.0, 0.0, 0.0)))))
    return items


def class_balance(classes: list[int], cap: float) -> list[float]:
    """n / (classes · n_class) per example's class, capped: rare classes count as much as common ones."""
    counts = Counter(classes)
    return [min(cap, len(classes) / (len(counts) * counts[c])) for c in classes]


def balance_weights(labels: list[float], cap: float) -> list[float]:
    """class_balance over each example's valence class."""
    return class_balance(valence_classes(labels).tolist(), cap)


def emotion_shares(labels: list[float], emotions: list[str]) -> list[float]:
    """Per example, n_class / (emotions in its class · n_emotion): each emotion of a valence class weighs
    alike while the class's total is unchanged."""
    classes = valence_classes(labels).tolist()
    per_class, per_pair = Counter(classes), Counter(zip(classes, emotions))
    kinds = Counter(c for c, _ in per_pair)
    return [per_class[c] / (kinds[c] * per_pair[(c, e)]) for c, e in zip(classes, emotions)]


LOADERS = {"speech": load_speech, "faces": load_faces}


def load_emotion_source(folder: Path, split: str, config: ModelConfig, sources_file: Path | None = None
                        ) -> tuple[list[Labelled], Skipped]:
    """One split (`all`: every example, for leave-one-corpus-out) of a speech- or faces-style folder as
    Labelled examples, class-balanced weights in train."""
    sources, skipped = load_sources_config(sources_file), Skipped()
    kind, name = source_kind(folder), source_name(folder)
    examples = LOADERS[kind](Path(folder), name, split, config, sources, skipped)
    rules = source_rules(name, kind, sources)
    if split == "train":
        examples = examples * int(rules.get("train_repeat", 1))
    weights = [1.0] * len(examples)
    if split == "train":
        labels = [e.label for e in examples]
        weights = balance_weights(labels, float(sources["balance"]["cap"]))
        if rules.get("emotions_alike"):
            weights = [w * share for w, share in zip(weights, emotion_shares(labels, [e.emotion for e in examples]))]
    return [Labelled(None, e.label, name, w, e) for e, w in zip(examples, weights)], skipped
