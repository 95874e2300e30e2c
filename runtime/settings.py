"""How one engine folder is run, the same for every command: the one settings object `Pipeline.load` takes.

Each field is declared once, here: its type (the choices), its default and its help. The CLI builds its
options from these fields (cmmsf/cli/options.py), so `infer`, `stream`, `serve`, `eval` and `--ray` show
the same option with the same help, and a new setting reaches every command at once. pydantic checks
the values, so a bad choice from Python is refused as one from the command line is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

AsrMode = Literal["auto", "always", "off"]
AsrModelName = Literal["tiny.en", "base"]
Precision = Literal["fp32", "fp16", "int8", "bf16"]


class RunSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    engines: Path = Field(description="engine folder (default: the shipped checkpoint's, in the user cache, "
                                      "exported on first use)")
    backend: str = Field("auto", description="auto (the fastest backend that can run the folder here), "
                                             "or one backend by name")
    precision: Precision = Field("fp32", description="fp32, fp16 or int8: which ONNX graphs ONNX Runtime and "
                                                     "OpenVINO load (int8 where built with --precision int8); bf16: the FP32 graphs computed in bfloat16 (OpenVINO, on "
                                                     "a CPU that has it). TensorRT runs its plans")
    device: str = Field("auto", description="where the backend runs: auto (its best here), cpu, cuda (ONNX Runtime, "
                                            "torch), gpu or npu (OpenVINO); records say where it ran")
    providers: Optional[tuple[str, ...]] = Field(
        None, description="ONNX Runtime execution providers in order, comma-separated, e.g. "
                          "CUDAExecutionProvider,CPUExecutionProvider (default: every one here)")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads per backend session (default: all cores)")
    asr: AsrMode = Field("off", description="speech recognition: auto (clips and streams without a transcript), "
                                            "always, or off")
    asr_model: AsrModelName = Field("tiny.en", description="the Whisper model: tiny.en (English, fast) or base "
                                                           "(multilingual, ~4x slower: names the language it hears)")
    asr_beam_size: int = Field(1, ge=1, description="Whisper's beam size (1: greedy, the fastest; 5: "
                                                    "faster-whisper's default); the record says which was used")
    asr_vad: bool = Field(True, description="faster-whisper's voice-activity filter before recognition")
    face_crop: bool = Field(True, description="find and track the face and read only it (a frame without one has "
                                              "no video: `no face`); off for input that is already a face crop")
    voice_check: bool = Field(True, description="leave out a voice unlike those the checkpoint learned (absent: "
                                                "`voice unlike those it learned`); off hears every voice")
    memory_arena: bool = Field(True, description="ONNX Runtime's CPU arena; off for a long-running server, which "
                                                 "meets every batch size and length")

    @field_validator("backend", "device")
    @classmethod
    def _registered(cls, name: str, info: ValidationInfo) -> str:
        """Backends and devices are what the backend registry holds (runtime/backends/registry.py)."""
        from .backends.registry import all_devices, backend_names

        choices = backend_names() if info.field_name == "backend" else all_devices()
        if name not in choices:
            raise ValueError(f"unknown {info.field_name} {name!r}; choose one of {', '.join(choices)}")
        return name

    @classmethod
    def of(cls, engines: "str | Path | RunSettings") -> "RunSettings":
        """Settings as given, or the defaults for an engine folder's path."""
        return engines if isinstance(engines, RunSettings) else cls(engines=Path(engines))

    def replace(self, **changes) -> "RunSettings":
        """A copy with `changes`, checked like the original."""
        return type(self).model_validate({**self.model_dump(), **changes})
