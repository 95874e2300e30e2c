"""tuning.json: which backend and precision run each stage fastest on this machine, as `cmmsf-export tune`
measured it (export/tune.py), and the stagewise backend `--backend auto` builds from it.

The file is a measurement, not an artifact: it changes where a stage runs, never what the folder's graphs
compute (every candidate passed parity and the accuracy guard before it could win), so it sits beside the
sealed files instead of in the manifest. `auto` runs each stage on its winner; a winner this machine cannot
run (OpenVINO not installed on the device the folder was copied to, no GPU) is replaced by the next
fastest candidate the tuning timed for that stage, and the record's note says why.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from cmmsf.contracts import STAGE_ORDER, StageName

from .backends.base import Backend
from .backends.registry import LoadRequest, registry

TUNING = "tuning.json"


class StageTiming(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str
    precision: str
    p50_ms: float


class Tuning(BaseModel):
    """What `cmmsf-export tune` wrote: the machine it measured, the guard's verdicts, every stage's
    candidates fastest first (the first is the winner)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    machine: str
    created: str
    guard: dict[str, str]
    """`backend precision` → `passed` (with what moved) or why it was refused (parity, accuracy on dev data)."""
    stages: dict[StageName, list[StageTiming]]
    chain_ms: dict[str, float] = {}
    """End to end p50 of the per-stage winners chained (`stagewise`) beside the fastest single candidate's
    chain, measured side by side: the faster of the two is what the winners above describe."""

    def winners(self) -> dict[str, StageTiming]:
        return {stage: timings[0] for stage, timings in self.stages.items() if timings}


def read_tuning(folder: Path) -> tuple[Tuning | None, str]:
    """The folder's tuning, or None and why not (no file, or one that does not parse: ignored, said)."""
    path = Path(folder) / TUNING
    if not path.is_file():
        return None, "not tuned (cmmsf-export tune DIR measures the fastest backend per stage)"
    try:
        return Tuning.model_validate(json.loads(path.read_text())), ""
    except (ValueError, ValidationError) as err:
        return None, f"{TUNING} ignored: {str(err).splitlines()[0]}"


def write_tuning(folder: Path, tuning: Tuning) -> Path:
    """Atomically: a reader sees the old file or the new one."""
    path = Path(folder) / TUNING
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tuning-", suffix=".json")
    with os.fdopen(fd, "w") as out:
        out.write(tuning.model_dump_json(indent=1) + "\n")
    os.replace(tmp, path)
    return path


class StagewiseBackend(Backend):
    """Each stage on its own backend (loaded once per backend × precision); stages hand each other the
    numpy arrays the backends return, as every backend's chain does."""

    name = "auto"

    def __init__(self, stage_backends: dict[str, Backend], note: str = ""):
        self.stage_backends = stage_backends
        distinct = list({id(b): b for b in stage_backends.values()}.values())
        self.backends = distinct
        self.precision = "+".join(dict.fromkeys(b.precision for b in distinct))
        self.provider = " + ".join(dict.fromkeys(b.provider for b in distinct))
        self.note = note

    def stage_labels(self) -> dict[str, str] | None:
        return {stage: backend.label for stage, backend in self.stage_backends.items()}

    def graph_runner(self, graph: Path):
        """Where the video encoder runs, the face detector runs too."""
        return self.stage_backends["video_encoder"].graph_runner(graph)

    def graph_provider(self, graph: Path) -> str:
        return self.stage_backends["video_encoder"].graph_provider(graph)

    def operator_times(self, inputs: dict[str, np.ndarray], runs: int = 10) -> dict[str, dict[str, float]]:
        """Each stage from the profiler of the backend that runs it, on the inputs this chain gives it
        (a backend loaded for some stages only cannot run the chain itself)."""
        feeds, out = self.stage_feeds(inputs), {}
        for backend in self.backends:
            mine = {stage: feeds[stage] for stage, b in self.stage_backends.items() if b is backend}
            out.update(backend.stage_operator_times(mine, runs) or {})
        return {stage: out.get(stage, {}) for stage in self.stage_backends}

    def run_stage(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.stage_backends[stage].run_stage(stage, feeds)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


def _request(timing: StageTiming, request: LoadRequest, stages: tuple[str, ...] | None = None) -> LoadRequest:
    return LoadRequest(precision=timing.precision, threads=request.threads, memory_arena=request.memory_arena,
                       providers=request.providers, stages=stages)


def stagewise_backend(engines, tuning: Tuning, request: LoadRequest) -> StagewiseBackend:
    """The tuned winners, each replaced by the next fastest candidate where it cannot run here; each
    backend loaded once, for the stages it runs only (a backend that runs the head alone does not hold
    the text encoder's 90 MB graph too)."""
    problems: dict[tuple[str, str], str | None] = {}
    picked: dict[str, StageTiming] = {}
    fallbacks = []
    for stage in STAGE_ORDER:
        for rank, timing in enumerate(tuning.stages.get(stage, [])):
            key = (timing.backend, timing.precision)
            if key not in problems:
                spec = registry().get(timing.backend)
                problems[key] = (f"{timing.backend} is not a backend here" if spec is None
                                 else spec.problem(engines, _request(timing, request)))
            if problems[key] is None:
                picked[stage] = timing
                if rank:
                    winner = tuning.stages[stage][0]
                    fallbacks.append(f"{stage}: {winner.backend} {winner.precision} cannot run here "
                                     f"({problems[(winner.backend, winner.precision)]})")
                break
        else:
            raise LookupError(f"no tuned candidate for {stage} can run here")
    loaded: dict[tuple[str, str], Backend] = {}
    for key in dict.fromkeys((t.backend, t.precision) for t in picked.values()):
        stages = tuple(s for s in STAGE_ORDER if (picked[s].backend, picked[s].precision) == key)
        timing = picked[stages[0]]
        loaded[key] = registry()[key[0]].load(engines, _request(timing, request, stages))
    chosen = {stage: loaded[(t.backend, t.precision)] for stage, t in picked.items()}
    labels = ", ".join(f"{stage} {backend.label}" for stage, backend in chosen.items())
    note = f"auto → tuned per stage on {tuning.machine} ({labels})"
    if fallbacks:
        note += "; " + "; ".join(fallbacks)
    return StagewiseBackend(chosen, note)
