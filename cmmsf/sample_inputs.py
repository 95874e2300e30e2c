"""Random but well-formed stage inputs, in numpy: for shape tests, parity sets and benchmarks.

Torch-free so the runtime's `bench` can use it too.
"""

from __future__ import annotations

import numpy as np

from cmmsf.config import ModelConfig


def _mask(batch: int, length: int, rng: np.random.Generator, padded: bool) -> np.ndarray:
    """Left-aligned masks; with `padded` the rows get random real lengths in [1, length]."""
    lengths = rng.integers(1, length + 1, size=batch) if padded else np.full(batch, length)
    lengths[0] = length  # one full row, so the batch really has this length
    return np.arange(length)[None, :] < lengths[:, None]


def make_inputs(config: ModelConfig, batch: int = 2, text_len: int = 8, audio_len: int = 12,
                video_len: int = 6, seed: int = 0, padded: bool = True) -> dict[str, np.ndarray]:
    """A batch dict with every input of the five stages' contracts (ids int32, masks bool)."""
    rng = np.random.default_rng(seed)
    vc, ac = config.video, config.audio
    inputs = {
        "input_ids": rng.integers(1000, 8000, size=(batch, text_len)).astype(np.int32),
        "text_mask": _mask(batch, text_len, rng, padded),
        "audio": rng.standard_normal((batch, audio_len, ac.feature_dim)).astype(np.float32),
        "audio_mask": _mask(batch, audio_len, rng, padded),
        "video_mask": _mask(batch, video_len, rng, padded),
    }
    if vc.frontend == "frames":
        frames = rng.random((batch, video_len, 3, vc.image_size, vc.image_size), dtype=np.float32)
        inputs["video"] = (frames - 0.45) / 0.25
    else:
        inputs["video"] = rng.standard_normal((batch, video_len, vc.feature_dim)).astype(np.float32)
    inputs["input_ids"][:, 0] = 101  # [CLS]
    inputs["input_ids"][~inputs["text_mask"]] = 0
    return inputs
