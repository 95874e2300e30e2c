"""Build the BERT-family text backbone of §3.2.1, offline, from a local folder or at random."""

from __future__ import annotations

from transformers import BertConfig, BertModel
from transformers.utils import logging as hf_logging

from cmmsf.inputs.backbone_files import resolve_backbone_dir

from cmmsf.config import TextConfig


def build_text_backbone(tc: TextConfig) -> BertModel:
    """A `BertModel` with eager attention (exports cleanly; no SDPA kernel choice baked in).

    `random` builds one from the config's sizes: tests and the `paper` preset's architecture check
    need no weight files. Anything else loads pretrained weights with `local_files_only=True`.
    """
    if tc.backbone == "random":
        config = BertConfig(vocab_size=tc.vocab_size, hidden_size=tc.hidden_size,
                            num_hidden_layers=tc.num_layers, num_attention_heads=tc.num_heads,
                            intermediate_size=tc.intermediate_size, max_position_embeddings=512,
                            attn_implementation="eager")
        return BertModel(config, add_pooling_layer=False)
    folder = resolve_backbone_dir(tc.backbone)
    hf_logging.set_verbosity_error()  # the unused pooler weights are expected: keep the log clean
    hf_logging.disable_progress_bar()
    return BertModel.from_pretrained(str(folder), local_files_only=True, add_pooling_layer=False,
                                     attn_implementation="eager")
