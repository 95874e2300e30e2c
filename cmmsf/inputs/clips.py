"""Finding clips: media and transcript files of one stem in one folder make one clip.

Rules (README, "Clip ids"):
- A clip's id is its path relative to the folder given on the command line, without the suffix, with
  `/` between folders: `vidA/1.mp4` → `vidA/1`, so MMSA's `Raw/<video>/<n>.mp4` layout keeps every
  clip. A file given by name has its stem as id. Where two roots give the same id, the root's own
  name goes in front (`a/x`, `b/x`).
- A transcript (`.txt`, `.srt`, `.vtt`) pairs only with media of the same stem in the same folder.
- Several media of one stem in one folder (`clip.mp4` and `clip.wav`) are each a clip of their own,
  with the suffix in the id (`clip.mp4`, `clip.wav`), sharing the transcript: nothing is dropped.
- A transcript without media is a text-only clip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .media import AUDIO_SUFFIXES, VIDEO_SUFFIXES, InMemoryMedia
from .errors import DataError
from .files import readable

TRANSCRIPT_SUFFIXES = (".txt", ".srt", ".vtt")
MEDIA_SUFFIXES = VIDEO_SUFFIXES | AUDIO_SUFFIXES


@dataclass
class Clip:
    """One clip, from files (`infer`) or from memory (a server's request): the preprocessor reads both."""

    id: str
    media: Path | InMemoryMedia | None = None
    """A video (its audio track is used too) or an audio-only file, or such a file's bytes."""
    transcript: Path | None = None
    transcript_text: str | None = None
    """The words themselves, where they come with the clip instead of in a sidecar file."""


@dataclass
class _Group:
    """The files of one stem in one folder under one root."""

    root: Path
    base: str
    """Relative path without suffix, `/`-separated."""
    media: list[Path]
    transcript: Path | None = None


def _walk(root: Path, skipped: list[Path]) -> list[Path]:
    """Every regular file under `root`, symlinked folders followed once each (a link back up the tree is
    a loop: it goes to `skipped`, as do FIFOs, sockets and dangling links)."""
    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:  # reached again through a link: do not go round
            dirs.clear()
            skipped.append(Path(folder))
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs.sort()
        for name in files:
            path = Path(folder) / name
            (found if path.is_file() else skipped).append(path)
    return sorted(found)


def _files(path: Path, skipped: list[Path]) -> tuple[Path, list[Path]]:
    """(root the ids are relative to, regular files) for one command-line path; anything else found
    under a folder (a FIFO, a socket, a dangling link, a folder reached again through a link) goes to
    `skipped`."""
    if path.is_dir():
        return path, _walk(path, skipped)
    if path.is_file():
        sidecars = [path.with_suffix(s) for s in TRANSCRIPT_SUFFIXES]
        return path.parent, [path, *(s for s in sidecars if s != path and s.is_file())]
    raise FileNotFoundError(f"no such file or folder: {path}")


def _groups(paths: list[Path], skipped: list[Path]) -> list[_Group]:
    groups: dict[tuple[Path, str], _Group] = {}
    for path in paths:
        root, files = _files(Path(path), skipped)
        for f in files:
            suffix = f.suffix.lower()
            if suffix not in MEDIA_SUFFIXES and suffix not in TRANSCRIPT_SUFFIXES:
                skipped.append(f)
                continue
            base = f.relative_to(root).with_suffix("").as_posix()
            group = groups.setdefault((root.resolve(), base), _Group(root, base, []))
            if suffix in TRANSCRIPT_SUFFIXES:
                # one transcript per stem: .txt over .srt over .vtt, as TRANSCRIPT_SUFFIXES orders them
                if group.transcript is None or (TRANSCRIPT_SUFFIXES.index(suffix)
                                                < TRANSCRIPT_SUFFIXES.index(group.transcript.suffix.lower())):
                    group.transcript = f
            elif f not in group.media:
                group.media.append(f)
    return list(groups.values())


def find_clips(paths: list[Path], skipped: list[Path] | None = None) -> list[Clip]:
    """Every clip under the given files and folders, sorted by id. Files of other types (`.jpg`, `.pdf`)
    and things that are not regular files are not clips: they are appended to `skipped` where given,
    so the caller can count them."""
    clips: list[tuple[Path, Clip]] = []
    for group in _groups(paths, [] if skipped is None else skipped):
        if not group.media:
            clips.append((group.root, Clip(readable(group.base), None, group.transcript)))
        for media in group.media:
            ident = group.base if len(group.media) == 1 else f"{group.base}{media.suffix.lower()}"
            clips.append((group.root, Clip(readable(ident), media, group.transcript)))
    counts: dict[str, int] = {}
    for _, clip in clips:
        counts[clip.id] = counts.get(clip.id, 0) + 1
    for root, clip in clips:  # the same id under two roots: the root's name tells them apart
        if counts[clip.id] > 1:
            clip.id = f"{root.resolve().name}/{clip.id}"
    seen: set[str] = set()
    for _, clip in clips:
        if clip.id in seen:
            raise DataError(f"two inputs give the clip id {clip.id!r}; pass folders with different names")
        seen.add(clip.id)
    return sorted((clip for _, clip in clips), key=lambda c: c.id)
