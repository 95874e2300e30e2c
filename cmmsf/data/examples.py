"""What every data loader returns: labelled examples, the rows it skipped, and the source they came from.

Apart from cmmsf/data/datasets.py (files → examples) and cmmsf/data/sources.py (emotion folders → examples), which
both build them, so neither imports the other back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from cmmsf.inputs.features import ClipInputs


class InputMaker(Protocol):
    """Builds an example's inputs on demand (cmmsf/data/sources.py SourceItem: a voice clip, a face photo)."""

    modalities: tuple[str, ...]

    def sample(self, rng: np.random.Generator | None = None) -> ClipInputs: ...


@dataclass
class Labelled:
    """One training example and where it came from.

    Emotion sources (cmmsf/data/sources.py) hand a `maker` that builds the inputs on demand, augmented when
    given an rng: a face photo as 15 float frames would not fit in memory 11,630 times over."""

    inputs: ClipInputs | None
    label: float
    source: str = ""
    weight: float = 1.0
    """Loss weight (class balance within the source)."""
    maker: InputMaker | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this example can bring (before any dropout)."""
        if self.maker is not None:
            return self.maker.modalities
        return tuple(m for m, a in self.inputs.arrays.items() if a is not None)

    def sample(self, rng: np.random.Generator | None = None) -> ClipInputs:
        """The inputs: augmented with `rng` (training), plain without (evaluation)."""
        return self.maker.sample(rng) if self.maker is not None else self.inputs


@dataclass
class Skipped:
    count: int = 0
    reasons: list[str] = field(default_factory=list)
    unanswered: list[float] = field(default_factory=list)
    """Labels of rows skipped because the runtime would give them no answer (a photo in which no face is
    found): evaluation counts them as misses "as a user sees it"."""

    def add(self, reason: str, unanswered_label: float | None = None) -> None:
        self.count += 1
        if len(self.reasons) < 5:
            self.reasons.append(reason)
        if unanswered_label is not None:
            self.unanswered.append(float(unanswered_label))

    def summary(self) -> str:
        return f"skipped {self.count} bad rows" + (": " + "; ".join(self.reasons) if self.reasons else "")


def source_name(path: Path) -> str:
    """What results call a data path: `mosi` for mosi/label.csv, the folder's or file's name otherwise."""
    path = Path(path).resolve()
    return path.parent.name if path.is_file() and path.stem in ("label", "labels") else path.stem
