"""Transcripts → token ids, with the backbone's own `tokenizer.json` through `tokenizers` (no torch).

Reading a transcript never guesses silently: UTF-8 (with or without BOM) is read as is; other bytes are
decoded as Latin-1 and the record says so (`transcript_decoding: latin-1`); a file that is binary data
(NUL bytes or mostly control characters) gives no text, with the reason.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .backbone_files import tokenizer_file
from .files import read_small_file

_SUBTITLE_TIMING = re.compile(r"^\s*(\d+|WEBVTT.*|NOTE.*|[\d:.,]+\s*-->\s*[\d:.,]+.*)\s*$")
_CUE_TIMES = re.compile(r"^\s*([\d:.,]+)\s*-->\s*([\d:.,]+)")


@lru_cache(maxsize=4)
def load_tokenizer(backbone: str) -> Tokenizer:
    """The backbone's tokenizer, cached: loading it costs ~30 ms and every clip needs it."""
    tokenizer = Tokenizer.from_file(str(tokenizer_file(backbone)))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def truncate_ids(ids: np.ndarray | list[int], max_len: int):
    """The first max_len - 1 tokens plus the closing [SEP]: sentiment is usually stated early, and the
    rule is documented rather than silent (records list `text` in `truncated`)."""
    return ids if len(ids) <= max_len else (list(ids[: max_len - 1]) + list(ids[-1:]) if isinstance(ids, list)
                                             else np.concatenate([ids[: max_len - 1], ids[-1:]]))


def tokenize(text: str, backbone: str) -> np.ndarray:
    """All token ids of one text, [CLS] … [SEP], int32, not truncated."""
    return np.asarray(load_tokenizer(backbone).encode(text.strip().lower()).ids, dtype=np.int32)


def has_words(ids: np.ndarray, backbone: str) -> bool:
    """True when the ids hold at least one real word piece (not only [CLS], [SEP], [UNK], [PAD])."""
    tokenizer = load_tokenizer(backbone)
    special = {tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[UNK]", "[PAD]")}
    return any(int(i) not in special for i in ids)


def encode(texts: list[str], backbone: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids [B, L] int32 and mask [B, L] bool, padded to the longest row (≤ max_len, truncate_ids)."""
    tokenizer = load_tokenizer(backbone)
    rows = [truncate_ids(tokenizer.encode(t.strip().lower()).ids, max_len) for t in texts]
    length = max(len(r) for r in rows)
    ids = np.zeros((len(rows), length), dtype=np.int32)
    mask = np.zeros((len(rows), length), dtype=bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = True
    return ids, mask


@dataclass
class Cue:
    """One subtitle cue of an .srt/.vtt sidecar: its text and when it is spoken."""

    text: str
    start_s: float
    end_s: float


@dataclass
class Transcript:
    text: str
    decoding: str = "utf-8"
    """`utf-8`, `utf-16` (a file that starts with a UTF-16 byte-order mark, as Windows writes "Unicode"
    text), or `latin-1` when the bytes were neither (a lossy guess, stated in the record)."""
    problem: str | None = None
    """Why there is no text although a file was given (binary data), else None."""
    cues: list[Cue] = field(default_factory=list)
    """The timing of an .srt/.vtt sidecar, cue by cue (a .txt has none)."""


def _seconds(stamp: str) -> float:
    """`01:02:03,500`, `02:03.500` or `3.5` → seconds."""
    total = 0.0
    for part in stamp.replace(",", ".").split(":"):
        total = total * 60 + float(part)
    return total


def _cues(text: str) -> list[Cue]:
    cues, current = [], None
    for line in text.splitlines():
        times = _CUE_TIMES.match(line)
        if times:
            current = Cue("", round(_seconds(times.group(1)), 3), round(_seconds(times.group(2)), 3))
            cues.append(current)
        elif not line.strip():
            current = None
        elif current is not None:
            current.text = " ".join(filter(None, (current.text, re.sub(r"<[^>]+>", "", line).strip())))
    return [c for c in cues if c.text]


def _is_binary(text: str) -> bool:
    if "\x00" in text:
        return True
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f")
    return controls > 0.1 * max(len(text), 1)


def read_transcript(path: Path) -> Transcript:
    """Plain `.txt`, or the spoken lines of an `.srt` / `.vtt` subtitle file joined with spaces.

    Read through `read_small_file`: a FIFO, a device or an oversized file is an InputFileError."""
    raw = read_small_file(path)
    try:
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Windows' "Unicode" text files
            text, decoding = raw.decode("utf-16"), "utf-16"
        else:
            text, decoding = raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        text, decoding = raw.decode("latin-1"), "latin-1"
    return parse_transcript(text, path.name, decoding, subtitles=path.suffix.lower() in (".srt", ".vtt"))


def parse_transcript(text: str, name: str, decoding: str = "utf-8", subtitles: bool = False) -> Transcript:
    """A transcript from its text (a file's, or words sent with a clip): binary data is refused by name,
    subtitles are reduced to their spoken lines."""
    if _is_binary(text):
        return Transcript("", decoding, f"{name} is binary data, not text")
    cues: list[Cue] = []
    if subtitles:
        cues = _cues(text)
        lines = [ln for ln in text.splitlines() if ln.strip() and not _SUBTITLE_TIMING.match(ln)]
        text = " ".join(re.sub(r"<[^>]+>", "", ln).strip() for ln in lines)
    return Transcript(" ".join(text.split()), decoding, cues=cues)
