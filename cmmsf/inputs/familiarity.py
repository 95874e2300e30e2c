"""Is this a voice like the ones the model learned from? If not, the voice is left out, with the reason.

Why: the voice branch reads the Whisper front-end's states, and those carry the recording (room,
microphone, language) more than the emotion: trained on one corpus, it gives a voice from elsewhere a
strong score that is as often wrong as right (EmoDB: happy vs negative at chance, neutral voices at a
median |score| of 1.07). An unsure modality should say nothing rather than something confident, so each
clip's voice is measured against the voices of the training set before the engines run.

The measure: the clip's mean front-end state, standardised by the training voices' statistics and
whitened by their covariance (a ridge of `ridge` × the largest eigenvalue keeps the near-empty directions
from dominating), gives the mean squared Mahalanobis distance. The bound is `bound_factor` × the
`quantile` of the distances of the dev voices (speakers never trained on), so it is fitted without
test data. A clip's `voice_familiarity` is its distance over the bound: at most 1 the voice is heard,
above 1 it is absent (`voice unlike those it learned`). The statistics ship beside the checkpoint and in
every engine folder (`voice_familiarity.safetensors`, sealed by the manifest). Numpy only: the runtime
imports this without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence, TypeVar

import numpy as np

from .errors import DataError

VOICE_FILE = "voice_familiarity.safetensors"
UNFAMILIAR = "voice unlike those it learned"


class Inputs(Protocol):
    """What the check reads and writes of a clip's inputs (features.ClipInputs, which imports this module)."""

    arrays: dict[str, np.ndarray | None]
    absent: dict[str, str]
    notes: dict[str, Any]


Item = TypeVar("Item", bound=Inputs)


@dataclass(frozen=True)
class VoiceFamiliarity:
    mean: np.ndarray
    """[F] mean of the training voices' mean front-end states."""
    scale: np.ndarray
    """[F] their standard deviation."""
    whiten: np.ndarray
    """[F, F] eigenvectors over the square root of the ridged eigenvalues of the standardised covariance."""
    bound: float
    """Distances above this are unfamiliar."""

    def distance(self, steps: np.ndarray) -> float:
        """Mean squared whitened distance of one clip's front-end steps [La, F] from the training voices."""
        z = ((steps.astype(np.float64).mean(axis=0) - self.mean) / self.scale) @ self.whiten
        return float(np.mean(z * z))

    def ratio(self, steps: np.ndarray) -> float:
        """The distance in units of the bound: above 1 is unfamiliar."""
        return self.distance(steps) / self.bound

    def verdict(self, steps: np.ndarray) -> tuple[float, str | None]:
        """The voice's ratio, and why it is left out (None when it is heard). A ratio that is not a number
        (features overflowed by garbage samples) is left out too: NaN compares false with every bound."""
        ratio = self.ratio(steps)
        if not np.isfinite(ratio):
            return ratio, f"{UNFAMILIAR} (its features are not finite numbers)"
        return ratio, (f"{UNFAMILIAR} ({ratio:.1f}× the bound)" if ratio > 1.0 else None)

    def check(self, item: Item) -> Item:
        """Note the voice's familiarity and leave an unfamiliar voice out (absent, with the ratio)."""
        steps = item.arrays.get("audio")
        if steps is None or not len(steps):
            return item
        ratio, reason = self.verdict(steps)
        item.notes["voice_familiarity"] = round(ratio, 2) if np.isfinite(ratio) else None
        if reason is not None:
            item.arrays["audio"] = None
            item.absent["audio"] = reason
        return item

    def save(self, path: Path) -> Path:
        from safetensors.numpy import save_file

        save_file({"mean": self.mean.astype(np.float32), "scale": self.scale.astype(np.float32),
                   "whiten": self.whiten.astype(np.float32), "bound": np.array([self.bound], np.float32)},
                  str(path), metadata={"format": "cmmsf-voice-familiarity"})
        return path

    @classmethod
    def load(cls, path: Path) -> "VoiceFamiliarity":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            t = load_file(str(path))
            found = cls(t["mean"].astype(np.float64), t["scale"].astype(np.float64),
                        t["whiten"].astype(np.float64), float(t["bound"][0]))
        except (KeyError, OSError, ValueError, IndexError, SafetensorError) as err:
            raise DataError(f"{path} is not a voice familiarity file ({err})") from None
        width = len(found.mean)
        if found.scale.shape != (width,) or found.whiten.shape != (width, width) or not found.bound > 0:
            raise DataError(f"{path} is not a voice familiarity file (inconsistent shapes or bound)")
        return found


def fit_familiarity(train: Sequence[np.ndarray], dev: Sequence[np.ndarray], ridge: float = 0.01,
                    quantile: float = 0.95, bound_factor: float = 2.0) -> VoiceFamiliarity:
    """Statistics of the training voices (each [La, F]) and a bound from the dev voices (module docstring)."""
    if len(train) < 2 or not len(dev):
        raise DataError(f"fitting voice familiarity needs training and dev voices (got {len(train)} and {len(dev)})")
    means = np.stack([t.astype(np.float64).mean(axis=0) for t in train])
    mean, scale = means.mean(axis=0), means.std(axis=0) + 1e-6
    values, vectors = np.linalg.eigh(np.cov((means - mean) / scale, rowvar=False))
    values = np.clip(values, 0.0, None)
    whiten = vectors / np.sqrt(values + ridge * values.max() + 1e-12)
    unbounded = VoiceFamiliarity(mean, scale, whiten, 1.0)
    dev_distances = np.array([unbounded.distance(d) for d in dev])
    return VoiceFamiliarity(mean, scale, whiten, float(bound_factor * np.quantile(dev_distances, quantile)))


def load_voice_familiarity(folder: Path) -> VoiceFamiliarity | None:
    """The folder's statistics (a checkpoint or an engine folder), None where it has none."""
    path = Path(folder) / VOICE_FILE
    return VoiceFamiliarity.load(path) if path.is_file() else None
