"""Clip → model inputs, and a list of clips → one padded batch (the stage contracts' dict).

The one preprocessing implementation: the trainer's clip-folder dataset and the runtime call the same
`Preprocessor`, so deployed inputs equal training inputs. Rules users must know:
- a modality with no data (no transcript, no audio track, no video stream) is *absent*: its mask is all
  zero and the model's gate for it reads 0;
- a modality the checkpoint never learned is masked too, and the result says so;
- a clip longer than the config's maximum is truncated to its first `max_len` steps (12 s by default)
  and the result lists the truncated modalities: never silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .audio import log_mel
from .clips import Clip
from .media import MediaError, decode_audio, decode_video
from .spec import DATA_KEY, MODALITIES, InputSpec
from .text import encode, read_transcript
from .video import frames_to_input


@dataclass
class ClipInputs:
    """One clip's unbatched inputs; a modality maps to None when absent."""

    id: str
    arrays: dict[str, np.ndarray | None]
    truncated: list[str] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)
    duration_s: float | None = None

    @property
    def present(self) -> dict[str, bool]:
        """Which modalities the clip has data for (a masked one is present but not used)."""
        return {m: self.arrays.get(m) is not None or m in self.masked for m in MODALITIES}

    def length(self, modality: str) -> int:
        array = self.arrays.get(modality)
        return 0 if array is None else len(array)


class Preprocessor:
    """Turns clips into ClipInputs for one model's InputSpec."""

    def __init__(self, spec: InputSpec, face_crop: bool = False):
        self.spec = spec
        self.face_crop = face_crop

    def text(self, transcript: str) -> np.ndarray | None:
        if not transcript.strip():
            return None
        ids, _ = encode([transcript], self.spec.text_backbone, self.spec.text_max_len)
        return ids[0]

    def audio(self, wave: np.ndarray | None) -> np.ndarray | None:
        spec = self.spec
        if wave is None or len(wave) < spec.sample_rate // 50:  # under 20 ms: nothing to hear
            return None
        return log_mel(wave, spec.sample_rate, spec.audio_feature_dim, spec.audio_frame_rate_hz)

    def video(self, frames: np.ndarray | None) -> np.ndarray | None:
        if frames is None or len(frames) == 0:
            return None
        return frames_to_input(frames, self.spec.image_size, self.face_crop)

    def from_clip(self, clip: Clip) -> ClipInputs:
        """Decode and featurise one clip. Raises MediaError / ValueError with a one-line reason."""
        spec = self.spec
        if not spec.takes_media:
            raise ValueError("this checkpoint takes precomputed feature vectors (MMSA format), not clips; "
                             "use a checkpoint trained with the mel/frames front-ends")
        text = read_transcript(clip.transcript) if clip.transcript else ""
        wave, frames, duration = None, None, None
        if clip.media is not None:
            wave = decode_audio(clip.media, spec.sample_rate)
            decoded = decode_video(clip.media, spec.fps)
            if decoded is not None:
                frames, duration = decoded
            if wave is not None:
                duration = max(duration or 0.0, len(wave) / spec.sample_rate)
        arrays = {"text": self.text(text), "audio": self.audio(wave), "video": self.video(frames)}
        if all(a is None for a in arrays.values()):
            raise MediaError(f"clip {clip.id}: no transcript, no audio and no video to use")
        return self.limit(ClipInputs(clip.id, arrays, duration_s=duration))

    def limit(self, item: ClipInputs) -> ClipInputs:
        """Apply the documented rules: mask modalities never trained, truncate to max lengths."""
        return truncate_to_limits(mask_untrained(item, self.spec), self.spec)


def mask_untrained(item: ClipInputs, spec: InputSpec) -> ClipInputs:
    """Drop the data of modalities the checkpoint never learned, listing them in `masked`."""
    for m in MODALITIES:
        if item.arrays.get(m) is not None and m not in spec.trained_modalities:
            item.arrays[m] = None
            item.masked.append(m)
    return item


def truncate_to_limits(item: ClipInputs, spec: InputSpec) -> ClipInputs:
    """Keep the first max_len steps of each modality, listing the cut ones in `truncated`."""
    for m in MODALITIES:
        top, array = spec.max_len(m), item.arrays.get(m)
        if array is not None and len(array) > top:
            item.arrays[m] = array[:top]
            item.truncated.append(m)
    return item


def collate(items: list[ClipInputs], spec: InputSpec) -> dict[str, np.ndarray]:
    """Pad a list of clips into one batch dict; absent modalities get one masked zero step."""
    batch: dict[str, np.ndarray] = {}
    for m in MODALITIES:
        length = max([item.length(m) for item in items] + [1])
        data = np.zeros((len(items), length, *spec.step_shape(m)), dtype=np.int32 if m == "text" else np.float32)
        mask = np.zeros((len(items), length), dtype=bool)
        for row, item in enumerate(items):
            array = item.arrays.get(m)
            if array is not None:
                data[row, : len(array)] = array
                mask[row, : len(array)] = True
        batch[DATA_KEY[m]], batch[f"{m}_mask"] = data, mask
    return batch
