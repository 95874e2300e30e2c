"""Shared fixtures. Everything runs offline: nothing may be downloaded at test time."""

from __future__ import annotations

import os

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

    from cmmsf.model import build_model

    torch.manual_seed(0)
    return build_model(preset("tiny"))


def to_torch(arrays: dict[str, np.ndarray]):
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
