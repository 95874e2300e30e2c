"""How one engine folder is run, the same for every command: the one settings object `Pipeline.load` takes.

`infer`, `stream`, `serve`, `--ray` and `eval` all build a `RunSettings` from the same CLI options
(cmmsf/cli.py) and pass it whole, so a new setting reaches every command at once and two settings of the
same type (backend and precision are both strings) cannot be swapped by position.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    engines: Path
    """The engine folder (its manifest names every artifact and its hash)."""
    backend: str = "auto"
    """auto, onnxruntime, tensorrt or torch (runtime/backends)."""
    precision: str = "fp32"
    asr: str = "off"
    """auto: speech recognition for clips without a transcript; always: every clip; off. The commands
    default to auto; the Python API to off, so a library call never loads Whisper unasked."""
    asr_beam_size: int = 1
    """Whisper's beam (1: greedy, the fastest); the record says which was used (`asr_options`)."""
    asr_vad: bool = True
    """faster-whisper's voice-activity filter before recognition (off: Whisper hears every stretch)."""
    asr_model: str = "tiny.en"
    """Which Whisper model recognises the words (cmmsf/inputs/asr_models.py); records name it."""
    face_crop: bool = True
    """Find and track the face and read only it (cmmsf/inputs/video.py); False for input already cropped."""
    voice_check: bool = True
    """Leave out a voice unlike those the checkpoint learned (cmmsf/inputs/familiarity.py); False hears
    every voice, as the model was trained to."""
    threads: int | None = None
    """CPU threads per backend session (None: all cores)."""
    memory_arena: bool = True
    """ONNX Runtime's CPU arena; off for a long-running server, which meets every batch size and length."""

    @classmethod
    def of(cls, engines: "str | Path | RunSettings") -> "RunSettings":
        """Settings as given, or the defaults for an engine folder's path."""
        return engines if isinstance(engines, RunSettings) else cls(engines=Path(engines))
