"""Checkpoints: `model.safetensors` + `config.json` in one folder. No pickles anywhere.

A pretrained text backbone is not copied into the checkpoint (MiniLM alone is 90 MB): only the layers
that were fine-tuned are saved, the rest comes from the backbone folder, whose weight hash the config
records so a different backbone is refused instead of silently giving other numbers.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from cmmsf.inputs.backbone_files import weights_sha256
from cmmsf.inputs.errors import CmmsfError

from cmmsf.config import DEFAULT_CHECKPOINT, ModelConfig
from cmmsf.model.network import CMMSF, build_model

WEIGHTS, CONFIG = "model.safetensors", "config.json"


class CheckpointError(CmmsfError, ValueError):
    """A checkpoint that cannot be used; the message names the file or tensor at fault."""


def resolve_checkpoint(path: str | Path) -> Path:
    """`default` → the checkpoint shipped in the package; anything else must be a checkpoint folder."""
    folder = DEFAULT_CHECKPOINT if str(path) == "default" else Path(path).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    for name in (WEIGHTS, CONFIG):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder} is not a checkpoint: {name} is missing")
    return folder


def _external_keys(model: CMMSF) -> set[str]:
    """State keys that come from the pretrained backbone folder rather than the checkpoint."""
    tc = model.config.text
    if tc.backbone == "random":
        return set()
    bert = model.text_encoder.bert
    trainable = len(bert.encoder.layer) - tc.trainable_layers
    tuned = tuple(f"encoder.layer.{i}." for i in range(trainable, len(bert.encoder.layer)))
    return {f"text_encoder.bert.{k}" for k in bert.state_dict() if not k.startswith(tuned)}


def save_checkpoint(model: CMMSF, folder: str | Path) -> Path:
    """Write weights (minus the untouched backbone) and config; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    skip = _external_keys(model)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in skip}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "cmmsf", "preset": model.config.name})
    model.config.save(folder / CONFIG)
    return folder


def load_checkpoint(path: str | Path) -> CMMSF:
    """Build the model from config.json and load its weights, naming every mismatch it finds."""
    folder = resolve_checkpoint(path)
    config = ModelConfig.load(folder / CONFIG)
    if config.backbone_sha256:
        actual = weights_sha256(config.text.backbone)
        if actual != config.backbone_sha256:
            raise CheckpointError(
                f"text backbone {config.text.backbone!r} has weights sha256 {actual[:12]}…, but this "
                f"checkpoint was trained with {config.backbone_sha256[:12]}…: supply the same backbone")
    model = build_model(config)
    state = load_file(str(folder / WEIGHTS))
    external = _external_keys(model)
    expected = {k: v for k, v in model.state_dict().items() if k not in external}
    problems = [f"missing tensor {k}" for k in sorted(set(expected) - set(state))]
    problems += [f"unexpected tensor {k}" for k in sorted(set(state) - set(expected))]
    problems += [f"tensor {k}: checkpoint shape {tuple(state[k].shape)}, model expects {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointError(f"{folder / WEIGHTS} does not match its config: {shown}")
    model.load_state_dict(state, strict=False)
    return model.eval()


def config_with_backbone_hash(config: ModelConfig) -> ModelConfig:
    """The config with the backbone weight hash filled in, for a checkpoint about to be trained."""
    return config.replace(backbone_sha256=weights_sha256(config.text.backbone))

