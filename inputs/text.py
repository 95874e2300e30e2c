"""Transcripts → token ids, with the backbone's own `tokenizer.json` through `tokenizers` (no torch)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .backbone_files import tokenizer_file

_SUBTITLE_TIMING = re.compile(r"^\s*(\d+|WEBVTT.*|NOTE.*|[\d:.,]+\s*-->\s*[\d:.,]+.*)\s*$")


@lru_cache(maxsize=4)
def load_tokenizer(backbone: str) -> Tokenizer:
    """The backbone's tokenizer, cached: loading it costs ~30 ms and every clip needs it."""
    tokenizer = Tokenizer.from_file(str(tokenizer_file(backbone)))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def encode(texts: list[str], backbone: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids [B, L] int32 and mask [B, L] bool, padded to the longest row (≤ max_len).

    Longer transcripts keep their first max_len - 1 tokens plus the closing [SEP]: sentiment is
    usually stated early, and the rule is documented rather than silent (the CLI reports truncation).
    """
    tokenizer = load_tokenizer(backbone)
    rows = [tokenizer.encode(t.strip().lower()).ids for t in texts]
    rows = [r if len(r) <= max_len else r[: max_len - 1] + r[-1:] for r in rows]
    length = max(len(r) for r in rows)
    ids = np.zeros((len(rows), length), dtype=np.int32)
    mask = np.zeros((len(rows), length), dtype=bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = True
    return ids, mask


def read_transcript(path: Path) -> str:
    """Plain `.txt`, or the spoken lines of an `.srt` / `.vtt` subtitle file joined with spaces."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() not in (".srt", ".vtt"):
        return " ".join(text.split())
    lines = [ln for ln in text.splitlines() if ln.strip() and not _SUBTITLE_TIMING.match(ln)]
    return " ".join(re.sub(r"<[^>]+>", "", ln).strip() for ln in lines)
