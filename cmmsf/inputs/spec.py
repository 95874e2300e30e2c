"""What input handling needs to know about a model: sample rates, sizes, limits and trained modalities.

The model's `ModelConfig.input_spec()` builds one; nothing here imports the model package, so the
dependency runs one way only (model → inputs).
"""

from __future__ import annotations

from dataclasses import dataclass

MODALITIES: tuple[str, ...] = ("text", "audio", "video")
"""The one modality order used everywhere: gates, presence flags, pair tables, batch keys."""

DATA_KEY: dict[str, str] = {"text": "input_ids", "audio": "audio", "video": "video"}
"""Batch key of each modality's data; its mask is `<modality>_mask`."""


WAVEFORM_FRONTENDS = ("mel", "whisper")
"""Audio front-ends computed from a decoded waveform (the others take precomputed vectors)."""


@dataclass(frozen=True)
class InputSpec:
    """The front-end half of a model config."""

    text_backbone: str
    """Where the tokenizer comes from: `minilm`, `random` (borrows MiniLM's vocabulary) or a folder."""
    text_max_len: int
    audio_frontend: str
    """`mel` (log-mel from a waveform), `whisper` (Whisper encoder states of a waveform) or `features`
    (precomputed vectors such as COVAREP)."""
    audio_feature_dim: int
    sample_rate: int
    audio_frame_rate_hz: float
    audio_max_len: int
    video_frontend: str
    """`frames` (RGB frames) or `features` (precomputed vectors such as FACET)."""
    video_feature_dim: int
    fps: float
    image_size: int
    video_max_len: int
    trained_modalities: tuple[str, ...] = MODALITIES

    @property
    def takes_media(self) -> bool:
        """True when clips (waveforms and frames) can be fed; False for feature-vector checkpoints."""
        return self.audio_frontend in WAVEFORM_FRONTENDS and self.video_frontend == "frames"

    def max_len(self, modality: str) -> int:
        return {"text": self.text_max_len, "audio": self.audio_max_len, "video": self.video_max_len}[modality]

    def step_shape(self, modality: str) -> tuple[int, ...]:
        """Shape of one step of a modality's data (a token id is a scalar)."""
        if modality == "text":
            return ()
        if modality == "audio":
            return (self.audio_feature_dim,)
        if self.video_frontend == "frames":
            return (3, self.image_size, self.image_size)
        return (self.video_feature_dim,)
