"""`cmmsf-train voice-stats`: fit a checkpoint's voice familiarity (cmmsf/inputs/familiarity.py) from the
voices it was trained on (train split) and a bound from speakers it never heard (dev split).

Only the front-end is run (no model weights are involved): the statistics describe the training voices as
the Whisper or log-mel front-end hears them, so they can be fitted after training without retraining.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmmsf.inputs.errors import DataError
from cmmsf.inputs.familiarity import VOICE_FILE, VoiceFamiliarity, fit_familiarity

from cmmsf.config import ModelConfig
from cmmsf.data.datasets import load_splits
from cmmsf.data.examples import Labelled


def voices(items: list[Labelled]) -> list[np.ndarray]:
    """Each distinct example's front-end audio steps (repeats of one clip in training counted once)."""
    seen: dict[str, np.ndarray] = {}
    for item in items:
        plain = item.sample(None)
        if plain.arrays.get("audio") is not None:
            seen.setdefault(plain.id, plain.arrays["audio"])
    return list(seen.values())


def fit_voice_statistics(config: ModelConfig, data: list[Path], labels: Path | None = None,
                         sources: Path | None = None, console=None) -> tuple[VoiceFamiliarity, dict[str, float]]:
    """The statistics of `data`'s training voices and, per split, the share of voices they leave out."""
    splits = load_splits(data, config, labels, sources, console, splits=("train", "dev"))
    heard = {split: voices(items) for split, items in splits.items()}
    if not heard["train"] or not heard["dev"]:
        raise DataError(f"voice-stats needs voices in the train and dev splits of {', '.join(map(str, data))} "
                        f"(found {len(heard['train'])} and {len(heard['dev'])})")
    stats = fit_familiarity(heard["train"], heard["dev"])
    left_out = {split: float(100 * np.mean([stats.ratio(v) > 1 for v in vs])) for split, vs in heard.items()}
    return stats, {"train_voices": len(heard["train"]), "dev_voices": len(heard["dev"]), "bound": stats.bound,
                   **{f"{split}_left_out_pct": pct for split, pct in left_out.items()}}


def write_voice_statistics(stats: VoiceFamiliarity, checkpoint: Path) -> Path:
    return stats.save(checkpoint / VOICE_FILE)
