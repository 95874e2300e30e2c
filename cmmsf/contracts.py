"""The stage contracts of DESIGN.md, defined once and imported by the model, exporter and runtime.

Torch-free on purpose: the runtime imports this module and must never pull in torch.
Every boundary is a dict of named numpy arrays. Ids are int32 and masks bool (1 = real step) so the
same graphs build on TensorRT 8.5 (JetPack 5), which has no int64 network inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from cmmsf.inputs.spec import MODALITIES  # noqa: F401 - re-exported: the stage contracts' modality order

if TYPE_CHECKING:
    from cmmsf.config import ModelConfig


SENTIMENT_CLASSES: tuple[str, ...] = (
    "strongly negative", "negative", "weakly negative", "neutral",
    "weakly positive", "positive", "strongly positive",
)
"""The 7 classes of Acc-7: round(clip(score, -3, 3)) + 3 indexes this tuple."""


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor at a stage boundary: dtype and symbolic axes (B = batch, L* = lengths)."""

    name: str
    dtype: str
    axes: tuple[str, ...]


@dataclass(frozen=True)
class StageSpec:
    """One exported graph / engine: its inputs and outputs, in order."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


def _t(name: str, dtype: str, *axes: str) -> TensorSpec:
    return TensorSpec(name, dtype, tuple(axes))


MASKS = (_t("text_mask", "bool", "B", "Lt"), _t("audio_mask", "bool", "B", "La"),
         _t("video_mask", "bool", "B", "Lv"))

STAGES: dict[str, StageSpec] = {
    s.name: s
    for s in (
        StageSpec("text_encoder",
                  (_t("input_ids", "int32", "B", "Lt"), MASKS[0]),
                  (_t("u_text", "float32", "B", "Lt", "d"),)),
        StageSpec("audio_encoder",
                  (_t("audio", "float32", "B", "La", "Fa"), MASKS[1]),
                  (_t("u_audio", "float32", "B", "La", "d"),)),
        StageSpec("video_encoder",
                  (_t("video", "float32", "B", "Lv", "C", "H", "W"), MASKS[2]),
                  (_t("u_video", "float32", "B", "Lv", "d"),)),
        StageSpec("interaction",
                  (_t("u_text", "float32", "B", "Lt", "d"), _t("u_audio", "float32", "B", "La", "d"),
                   _t("u_video", "float32", "B", "Lv", "d"), *MASKS),
                  (_t("h_text", "float32", "B", "Lt", "d"), _t("h_audio", "float32", "B", "La", "d"),
                   _t("h_video", "float32", "B", "Lv", "d"))),
        StageSpec("mgf_head",
                  (_t("h_text", "float32", "B", "Lt", "d"), _t("h_audio", "float32", "B", "La", "d"),
                   _t("h_video", "float32", "B", "Lv", "d"), *MASKS),
                  (_t("score", "float32", "B"), _t("logits", "float32", "B", "K"),
                   _t("gates", "float32", "B", "M"))),
    )
}
"""Stage name → contract, in pipeline order. `audio` holds log-mel frames or feature vectors and
`video` holds RGB frames [B, Lv, 3, H, W] or feature vectors [B, Lv, F], per the config's front-end."""

STAGE_ORDER: tuple[str, ...] = tuple(STAGES)
StageName = Literal["text_encoder", "audio_encoder", "video_encoder", "interaction", "mgf_head"]
"""A stage's name, for the annotations pydantic checks (recipes' `freeze`, the manifest's stages)."""
assert get_args(StageName) == STAGE_ORDER, "StageName must list STAGES in order"


def _pipeline_inputs() -> tuple[TensorSpec, ...]:
    produced = {t.name for s in STAGES.values() for t in s.outputs}
    seen: dict[str, TensorSpec] = {}
    for stage in STAGES.values():
        for spec in stage.inputs:
            if spec.name not in produced:
                seen.setdefault(spec.name, spec)
    return tuple(seen.values())


PIPELINE_INPUTS: tuple[TensorSpec, ...] = _pipeline_inputs()
"""What the whole chain takes (the tensors no stage produces), in stage order: ids, audio, video, masks."""
OUTPUTS: tuple[str, ...] = tuple(STAGES["mgf_head"].output_names)
"""What the whole pipeline returns: score [B], logits [B, 7], gates [B, 3]."""


def run_chain(run_stage: Callable[[str, dict[str, Any]], Mapping[str, Any]], inputs: Mapping[str, Any],
              stage_ms: dict[str, float] | None = None) -> dict[str, Any]:
    """The one chain of the five stages, for every caller: the model, parity, pipeline, bench, eval.

    `run_stage(name, tensors)` runs one stage (a torch module, an ONNX session, an engine) on the
    tensors gathered so far and returns its contract outputs; each stage picks its own inputs by name.
    Works on numpy arrays and torch tensors alike. Returns the inputs plus every stage's outputs;
    with `stage_ms`, fills in the wall milliseconds of each stage.
    """
    tensors = dict(inputs)
    for name in STAGE_ORDER:
        start = time.perf_counter()
        tensors.update(run_stage(name, tensors))
        if stage_ms is not None:
            stage_ms[name] = (time.perf_counter() - start) * 1e3
    return tensors
ENCODER_OF: dict[str, str] = {"text": "text_encoder", "audio": "audio_encoder", "video": "video_encoder"}


def video_axes(frontend: str) -> tuple[str, ...]:
    """The video input's axes depend on the front-end: raw frames or feature vectors."""
    return ("B", "Lv", "C", "H", "W") if frontend == "frames" else ("B", "Lv", "Fv")


LENGTH_AXES: dict[str, str] = {"Lt": "text", "La": "audio", "Lv": "video"}
"""The axes that vary with the input (besides the batch B), and the modality each belongs to."""


def input_axes(spec: TensorSpec, config: "ModelConfig") -> tuple[str, ...]:
    """Axes of a tensor for this config (the video input depends on its front-end)."""
    return video_axes(config.video.frontend) if spec.name == "video" else spec.axes


def static_axis_sizes(config: "ModelConfig") -> dict[str, int]:
    """The axes every shape of this config shares: widths, features, image size, classes, modalities."""
    return {"d": config.d_model, "Fa": config.audio.feature_dim, "Fv": config.video.feature_dim, "C": 3,
            "H": config.video.image_size, "W": config.video.image_size, "K": config.num_classes,
            "M": len(MODALITIES)}


def sample_dims(spec: TensorSpec, config: "ModelConfig") -> list[int]:
    """A tensor's shape without its batch axis, -1 where it varies: what servers such as Triton declare."""
    sizes = static_axis_sizes(config)
    return [-1 if a in LENGTH_AXES else sizes[a] for a in input_axes(spec, config)[1:]]


def class_of(score: float) -> int:
    """Acc-7 class index of a score: round after clipping to [-3, 3] (MMSA's definition)."""
    clipped = min(max(score, -3.0), 3.0)
    return int(round(clipped)) + 3
