"""What each modality contributes: metrics per source and per modality subset, checked against gates.

`cmmsf-train eval` with several data paths prints one row per (source, subset): MMSA's regression
metrics plus two valence readings of the score that emotion-labelled data can be judged by:
- `valence2_bal`: balanced accuracy of score > 0 against label > 0, over examples whose label is not 0
  (RAVDESS: happy and calm against sad, angry, fearful and disgust);
- `valence3_bal`: balanced accuracy over three classes read the way `label7` reads a score (one that
  rounds to 0 is neutral, above is positive, below negative): faces' happiness / neutral+surprise /
  negative.
Every row also says how the model treats what should score 0 and what should differ:
- `neutral_abs_median`: the median |score| of its neutral examples (emotion `neutral`; label 0 for
  sources without emotions): a calm person should score near 0 on every corpus;
- `emotion_spread`: per speaker, the standard deviation of the mean score of each emotion they acted,
  median over speakers (speech sources): a model that gives six emotions one score has learned nothing;
- `happy_vs_negative_bal`: balanced accuracy of the score's sign, happy against sad, angry, fearful and
  disgust (calm, bored, surprise and neutral left out): the voice target that is judged across corpora.
Where the scorer checks voices (cmmsf/inputs/familiarity.py), an unfamiliar voice is left out as the
runtime leaves it out, `voice_left_out` says what share of the source's voices were, and an example
left with none of a row's modalities counts as 0 (the runtime would refuse it: no evidence, no score).
Photo sources get one more row, `video framed` (cmmsf/evaluation/framing.py): each photo placed small at a random
spot of a 640×480 frame, read through the run-time detector; `framing_agree` is the share whose 3-way
valence class equals the tight photo's (a frame in which no face is found counts as disagreeing and is
counted in `framing_no_face`). Their `video` row reads as a user sees it too: `no_face`, the share of the
split's photos in which the detector finds no face (skipped from the other metrics, which need a score),
and `valence3_seen`, the 3-way balanced accuracy with each of those counted as a miss.
The gates of cmmsf/data/sources.json name, per source, the subset and the bar it must clear.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from typing import Protocol

from cmmsf.inputs.errors import DataError, UsageError
from cmmsf.inputs.familiarity import UNFAMILIAR, VoiceFamiliarity
from cmmsf.inputs.features import ClipInputs
from cmmsf.inputs.video import frames_to_input

from cmmsf.config import ModelConfig
from cmmsf.contracts import MODALITIES
from cmmsf.data.datasets import by_source, load_splits, normalise_split
from cmmsf.data.examples import Labelled
from cmmsf.evaluation.framing import place_in_frame
from cmmsf.evaluation.metrics import (balanced_accuracy, regression_metrics, valence3_as_seen, valence_classes,
                                      valence_metrics)
from cmmsf.data.sources import SpokenClip, StillFace, load_sources_config


class Scorer(Protocol):
    """What the evaluator scores with: the PyTorch model (cmmsf/evaluation/scoring.py ModelScorer, `cmmsf-train eval`)
    or the deployed engines (runtime/evaluate.py PipelineScorer, `cmmsf-run eval`)."""

    @property
    def config(self) -> ModelConfig: ...

    @property
    def voice(self) -> VoiceFamiliarity | None:
        """The voice familiarity check the scored path applies (None: every voice is heard)."""

    def scores(self, items: list[Labelled], modalities: tuple[str, ...] = MODALITIES) -> np.ndarray:
        """Scores of `items` with the modalities not listed masked."""

SUBSETS: dict[str, tuple[str, ...]] = {"text": ("text",), "audio": ("audio",), "video": ("video",),
                                       "all": MODALITIES}

GATE_KEYS = {"mae_max": ("mae", max), "corr_min": ("corr", min), "valence2_balanced_min": ("valence2_bal", min),
             "valence3_balanced_min": ("valence3_bal", min)}
"""A gate key → (metric it bounds, max: metric must be <= bar, min: metric must be >= bar)."""


@dataclass
class SubsetRow:
    source: str
    subset: str
    metrics: dict[str, float]
    gate: dict[str, float] = field(default_factory=dict)
    """The bars this row is held to (empty: not gated)."""

    @property
    def failures(self) -> list[str]:
        """`metric value vs bar` for every gate this row misses."""
        out = []
        for key, bar in self.gate.items():
            metric, direction = GATE_KEYS[key]
            value = self.metrics[metric]
            if not np.isfinite(value) or (value > bar if direction is max else value < bar):
                out.append(f"{metric} {value:.3f} {'>' if direction is max else '<'} {bar}")
        return out


def parse_subsets(text: str | None) -> dict[str, tuple[str, ...]]:
    """`--modalities`: None → SUBSETS; `text,audio` → that one subset (named `text+audio`)."""
    if text is None:
        return dict(SUBSETS)
    keep = tuple(m.strip() for m in text.split(",") if m.strip())
    if not keep or set(keep) - set(MODALITIES):
        raise UsageError(f"--modalities takes a subset of {','.join(MODALITIES)}, got {text!r}")
    return {"+".join(keep): keep}


def evaluate_sources(scorer: Scorer, data: list[Path], split: str = "test", labels: Path | None = None,
                     sources: Path | None = None, subsets: dict[str, tuple[str, ...]] | None = None,
                     gates: bool = True, console=None, face_crop: bool = True, asr: str = "off"
                     ) -> tuple[list[Labelled], list[SubsetRow]]:
    """The one evaluation both `cmmsf-train eval` (the checkpoint) and `cmmsf-run eval` (the engines) run:
    every data path's `split`, read as `infer` reads clips, scored per source and per modality subset,
    with the gates of the sources file. Returns the items and the rows."""
    split, subsets = normalise_split(split), subsets or dict(SUBSETS)
    unanswered: dict[str, list[float]] = {}
    items = load_splits(data, scorer.config, labels, sources, console, splits=(split,), face_crop=face_crop,
                        asr=asr, unanswered=unanswered)[split]
    if not items:
        raise DataError(f"no usable rows in split {split!r} of {', '.join(map(str, data))}")
    if scorer.voice is not None:
        items = [leave_out_unfamiliar_voice(it, scorer.voice) for it in items]
    untrained = sorted({m for keep in subsets.values() for m in keep} - set(scorer.config.trained_modalities))
    if untrained and console is not None:
        console.print(f"[yellow]the checkpoint never learned {', '.join(untrained)}: masked[/]")
    return items, subset_table(scorer, items, load_sources_config(sources).get("gates", {}) if gates else {}, subsets,
                               unanswered=unanswered)


def leave_out_unfamiliar_voice(item: Labelled, voice: VoiceFamiliarity) -> Labelled:
    """The example as the runtime would read it: its voice left out when unlike those the model learned."""
    if isinstance(item.maker, SpokenClip) and item.maker.audio is not None:
        _, reason = voice.verdict(item.maker.audio)
        if reason is not None:
            return replace(item, maker=replace(item.maker, voice_absent=reason))
    elif item.inputs is not None:
        voice.check(item.inputs)
    return item


def _voice_left_out(item: Labelled) -> bool:
    if isinstance(item.maker, SpokenClip):
        return item.maker.voice_absent is not None
    return item.inputs is not None and item.inputs.absent.get("audio", "").startswith(UNFAMILIAR)


def _present(item: Labelled) -> set[str]:
    """The modalities an example brings data for, as evaluated (photos: the face)."""
    if isinstance(item.maker, StillFace):
        return {"video"}
    return {m for m, a in item.sample(None).arrays.items() if a is not None}


def row_records(rows: list[SubsetRow]) -> list[dict]:
    """The rows as JSON records (`--json` of both eval commands)."""
    return [{"source": r.source, "modalities": r.subset, **r.metrics, "gate": r.gate, "failures": r.failures}
            for r in rows]


def subset_table(scorer: Scorer, items: list[Labelled], gates: dict[str, dict] | None = None,
                 subsets: dict[str, tuple[str, ...]] | None = None, framing: bool = True,
                 unanswered: dict[str, list[float]] | None = None) -> list[SubsetRow]:
    """One row per source and per subset it has data for (`all` only when it has more than one), and the
    framing row of still faces where `framing` (it detects faces in every photo placed in a frame).
    A photo source's video row also reads as a user sees it: `unanswered` holds, per source, the labels of
    the photos in which no face was found, and `valence3_seen` counts them as misses (`no_face`: their %)."""
    gates, subsets = gates or {}, subsets or dict(SUBSETS)
    trained = set(scorer.config.trained_modalities)
    rows = []
    for source, group in by_source(items).items():
        has = set().union(*(it.modalities for it in group)) & trained
        labels = np.array([it.label for it in group])
        gate = {k: v for k, v in gates.get(source, {}).items() if k != "modalities"}
        for name, modalities in subsets.items():
            keep = tuple(m for m in modalities if m in has)
            if not keep or (name == "all" and len(has) < 2):
                continue
            pred = scorer.scores(group, keep)
            abstains = np.array([not (_present(it) & set(keep)) for it in group])
            pred = np.where(abstains, 0.0, pred)  # the runtime gives no score without evidence: count it as 0
            metrics = {**regression_metrics(pred, labels), **valence_metrics(pred, labels),
                       **emotion_readings(group, pred)}
            if "audio" in keep and scorer.voice is not None:
                metrics["voice_left_out"] = float(100 * np.mean([_voice_left_out(it) for it in group]))
            photos = keep == ("video",) and all(isinstance(it.maker, StillFace) for it in group)
            if photos:
                missed = (unanswered or {}).get(source, [])
                metrics["valence3_seen"] = valence3_as_seen(pred, labels, missed)
                metrics["no_face"] = float(100 * len(missed) / (len(missed) + len(group)))
            rows.append(SubsetRow(source, "+".join(keep) if name != "all" else "all", metrics,
                                  gate if gates.get(source, {}).get("modalities") == name else {}))
            if framing and photos:
                rows.append(framing_row(scorer, source, group, pred))
    return rows


POSITIVE_EMOTIONS = {"happy", "happiness"}
NEGATIVE_EMOTIONS = {"sad", "sadness", "angry", "anger", "fearful", "fear", "disgust"}


def emotion_readings(group: list[Labelled], pred: np.ndarray) -> dict[str, float]:
    """`neutral_abs_median`, `emotion_spread` and `happy_vs_negative_bal` (module docstring)."""
    emotions = [getattr(it.maker, "emotion", None) for it in group]
    neutral = [abs(p) for p, e, it in zip(pred, emotions, group) if e == "neutral" or (e is None and it.label == 0)]
    by_speaker: dict[str, dict[str, list[float]]] = {}
    for p, e, it in zip(pred, emotions, group):
        if isinstance(it.maker, SpokenClip):
            by_speaker.setdefault(Path(it.maker.id).parent.name, {}).setdefault(e, []).append(float(p))
    spreads = [float(np.std([np.mean(v) for v in acted.values()])) for acted in by_speaker.values() if len(acted) > 1]
    signed = [(p > 0, e in POSITIVE_EMOTIONS) for p, e in zip(pred, emotions)
              if e in POSITIVE_EMOTIONS | NEGATIVE_EMOTIONS]
    both = len({happy for _, happy in signed}) == 2
    return {"neutral_abs_median": float(np.median(neutral)) if neutral else float("nan"),
            "emotion_spread": float(np.median(spreads)) if spreads else float("nan"),
            "happy_vs_negative_bal": (balanced_accuracy(np.array([h for _, h in signed]),
                                                        np.array([p for p, _ in signed])) if both else float("nan"))}


def framing_row(scorer: Scorer, source: str, group: list[Labelled], tight: np.ndarray, seed: int = 0,
                chunk: int = 64) -> "SubsetRow":
    """The `video framed` row: each photo placed in a webcam-sized frame and read as the runtime reads it."""
    rng, size = np.random.default_rng(seed), scorer.config.video.image_size
    framed = np.full(len(group), np.nan)
    for start in range(0, len(group), chunk):
        found = []
        for i in range(start, min(start + chunk, len(group))):
            face = group[i].maker
            photo = cv2.cvtColor(cv2.imread(str(face.photo), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            video = frames_to_input(np.repeat(place_in_frame(photo, rng)[None], face.eval_frames, axis=0), size)
            if video is not None:
                found.append((i, Labelled(ClipInputs(face.id, {"text": None, "audio": None, "video": video}),
                                          group[i].label, source)))
        if found:
            framed[[i for i, _ in found]] = scorer.scores([it for _, it in found], ("video",))
        # the frames are dropped here: 1000 photos × 15 frames would not fit in memory at once
    seen = np.isfinite(framed)
    labels = np.array([it.label for it in group])
    agree = seen & (valence_classes(np.nan_to_num(framed)) == valence_classes(tight))
    metrics = {**regression_metrics(framed[seen], labels[seen]), **valence_metrics(framed[seen], labels[seen]),
               **emotion_readings([g for g, s in zip(group, seen) if s], framed[seen]),
               "framing_agree": float(100 * agree.mean()), "framing_no_face": float(100 * (~seen).mean())}
    return SubsetRow(source, "video framed", metrics)
