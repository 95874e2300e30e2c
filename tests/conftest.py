"""Shared fixtures. Everything runs offline: nothing may be downloaded at test time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cmmsf.config import preset  # noqa: E402


@pytest.fixture
def tiny_config():
    return preset("tiny")


@pytest.fixture(scope="session")
def tiny_model():
    import torch

    from cmmsf.model.network import build_model

    torch.manual_seed(0)
    return build_model(preset("tiny"))


ROOT = Path(__file__).resolve().parents[1]


def build_engines(folder: Path, config, max_lengths: dict[str, int], batch: tuple[int, int, int] = (1, 1, 2)) -> Path:
    """A real build (both precisions, parity, manifest) of a freshly initialised model of `config`
    (seed 0) into folder/engines; returns that engine folder."""
    import torch
    from rich.console import Console

    from cmmsf.model.checkpoint import save_checkpoint
    from cmmsf.model.network import build_model
    from cmmsf.export.build import BuildOptions, build
    from cmmsf.export.profiles import ShapeProfile

    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_model(config), folder / "ck")
    build(BuildOptions(checkpoint=str(checkpoint), out=folder / "engines", profile=ShapeProfile(batch, max_lengths)),
          Console(quiet=True))
    return folder / "engines"


def python_output(code: str, timeout: float = 300, env: dict | None = None) -> str:
    """Run `code` in a fresh interpreter at the repository root; its stdout (stderr shown if it fails).

    A fresh process is how tests see what a command really imports, or its own peak memory."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def to_torch(arrays: dict[str, np.ndarray]):
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    from cmmsf.model.checkpoint import save_checkpoint

    return save_checkpoint(tiny_model, tmp_path_factory.mktemp("ck") / "tiny")


@pytest.fixture(scope="session")
def tiny_engines(tmp_path_factory, tiny_checkpoint):
    """One real build of the tiny checkpoint (ONNX both precisions, parity, manifest), shared by tests."""
    from rich.console import Console

    from cmmsf.export.build import BuildOptions, build
    from cmmsf.export.profiles import ShapeProfile

    out = tmp_path_factory.mktemp("engines") / "tiny"
    profile = ShapeProfile((1, 2, 4), {"text": 16, "audio": 40, "video": 30})
    build(BuildOptions(checkpoint=str(tiny_checkpoint), out=out, profile=profile), Console(quiet=True))
    return out
