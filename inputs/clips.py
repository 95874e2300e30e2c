"""Finding clips: files grouped by stem, so `a.mp4` + `a.txt` (or `a.wav` + `a.srt`) make one clip."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .media import AUDIO_SUFFIXES, VIDEO_SUFFIXES

TRANSCRIPT_SUFFIXES = (".txt", ".srt", ".vtt")


@dataclass
class Clip:
    id: str
    media: Path | None = None
    """A video (its audio track is used too) or an audio-only file."""
    transcript: Path | None = None


def _media_rank(path: Path) -> int:
    return 0 if path.suffix.lower() in VIDEO_SUFFIXES else 1


def find_clips(paths: list[Path]) -> list[Clip]:
    """Every clip under the given files and folders, sorted by id. Unknown file types are ignored.

    A stem with several media files takes the video over the audio-only file.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    clips: dict[str, Clip] = {}
    for f in files:
        suffix = f.suffix.lower()
        if suffix not in VIDEO_SUFFIXES | AUDIO_SUFFIXES and suffix not in TRANSCRIPT_SUFFIXES:
            continue
        clip = clips.setdefault(f.stem, Clip(f.stem))
        if suffix in TRANSCRIPT_SUFFIXES:
            clip.transcript = clip.transcript or f
        elif clip.media is None or _media_rank(f) < _media_rank(clip.media):
            clip.media = f
    for f in files:  # a transcript of the same stem beside a media file given by name
        sidecars = [f.with_suffix(s) for s in TRANSCRIPT_SUFFIXES]
        if f.stem in clips and clips[f.stem].transcript is None:
            clips[f.stem].transcript = next((s for s in sidecars if s.is_file()), None)
    return [clips[k] for k in sorted(clips)]
