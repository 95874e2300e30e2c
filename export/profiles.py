"""Optimisation-profile shapes: the batch and length limits every stage's graph and engine accept.

Pure logic (no torch, no TensorRT) so it is unit-tested everywhere. One profile per stage, derived
from the same batch (min, opt, max) and per-modality maximum lengths; DESIGN.md: keep the max small
on Jetson, whose builds run out of memory with large profiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cmmsf.config import ModelConfig
from cmmsf.contracts import LENGTH_AXES, STAGES, input_axes, static_axis_sizes
from cmmsf.inputs.errors import CmmsfError


class ProfileError(CmmsfError, ValueError):
    """A --batch or --max-len value that cannot make a profile."""


@dataclass(frozen=True)
class ShapeProfile:
    batch: tuple[int, int, int] = (1, 1, 8)
    max_len: dict[str, int] = field(default_factory=dict)

    def length(self, modality: str) -> tuple[int, int, int]:
        """(min, opt, max) steps: 1 admits an absent modality, opt is a typical clip (half the max)."""
        top = self.max_len[modality]
        return 1, max(1, top // 2), top

    def to_dict(self) -> dict:
        return {"batch": list(self.batch), "max_len": dict(self.max_len)}


def default_profile(config: ModelConfig) -> ShapeProfile:
    """Batch 1/1/8 and the config's own maximum lengths."""
    return ShapeProfile((1, 1, 8), {"text": config.text.max_len, "audio": config.audio.max_len,
                                    "video": config.video.max_len})


def parse_batch(text: str) -> tuple[int, int, int]:
    """`1,4,8` (min,opt,max) or a single `8` (→ 1,1,8)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ProfileError(f"--batch wants MIN,OPT,MAX integers, got {text!r}") from None
    if len(values) == 1:
        values = [1, 1, values[0]]
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise ProfileError(f"--batch wants 1 <= MIN <= OPT <= MAX, got {text!r}")
    return values[0], values[1], values[2]


def parse_max_len(text: str, base: dict[str, int]) -> dict[str, int]:
    """`text=64,audio=150` overrides some of `base`; unknown names and non-positive values are errors."""
    out = dict(base)
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = item.partition("=")
        if name not in out:
            raise ProfileError(f"--max-len names {name!r}; use text=, audio= or video=")
        if not value.isdigit() or int(value) < 1:
            raise ProfileError(f"--max-len {name} needs a positive integer, got {value!r}")
        out[name] = int(value)
    return out


def axis_sizes(config: ModelConfig, profile: ShapeProfile, which: int) -> dict[str, int]:
    """Axis name → size for which = 0 (min), 1 (opt) or 2 (max)."""
    sizes = {"B": profile.batch[which], **static_axis_sizes(config)}
    for axis, modality in LENGTH_AXES.items():
        sizes[axis] = profile.length(modality)[which]
    return sizes


def stage_shapes(stage: str, config: ModelConfig, profile: ShapeProfile) -> dict[str, list[list[int]]]:
    """Input name → [min shape, opt shape, max shape] for one stage's optimisation profile."""
    levels = [axis_sizes(config, profile, i) for i in range(3)]
    return {spec.name: [[lv[a] for a in input_axes(spec, config)] for lv in levels]
            for spec in STAGES[stage].inputs}


def dynamic_axes(stage: str, config: ModelConfig) -> dict[str, dict[int, str]]:
    """ONNX dynamic axes of a stage: batch and lengths; feature sizes stay static."""
    dynamic = {"B", *LENGTH_AXES}
    specs = list(STAGES[stage].inputs) + list(STAGES[stage].outputs)
    return {s.name: {i: a for i, a in enumerate(input_axes(s, config)) if a in dynamic} for s in specs}
