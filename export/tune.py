"""`cmmsf-export tune DIR`: the fastest backend and precision for each stage on this machine, measured, and
allowed only where accuracy holds.

1. Candidates: every registered backend × precision that can run the folder here (the registry decides).
2. Parity, for FP32 compute, where torch and the checkpoint are here: the chain of each candidate against
   the PyTorch reference on the build's parity cases (export/parity.py: within 1e-4).
3. The accuracy guard, for reduced precision (FP16, INT8, BF16 compute), which no tolerance on random
   parity inputs can judge (INT8 moves a score by a few hundredths by design): on the dev splits of real data (MOSI
   transcripts, RAVDESS voices, face photos under `--data-dir`), each candidate's whole chain against ONNX
   Runtime FP32: text rows' MAE may rise by at most 0.02, audio rows' valence-2 and video rows' valence-3
   may fall by at most 1 point, and at most 1% of the clips' Acc-2 decisions may flip. Without data, reduced
   precision is not allowed (said so).
4. Timing: every stage of every allowed candidate at the profile's typical lengths, batch 1, interleaved
   over rounds (the minimum of each round's median), so a noisy minute does not crown a backend.
5. The winners per stage, chained, pass the guard once more as a whole (else only FP32 compute is kept),
   and tuning.json is written beside the manifest (runtime/tuning.py), where `--backend auto` reads it.

Without dev data (a user's machine, the first run's default build) the guard's verdicts recorded with the
checkpoint stand in (`precision_guard.json` beside its weights, written by `tune --data-dir … --record`
and valid only for the weights it names): whether BF16 or INT8 moves this model's answers is a property of
the model and the precision, measured once on the dev splits; which engine is fastest is a property of the
machine, measured on it every time.
"""

from __future__ import annotations

import importlib.util
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cmmsf.contracts import STAGE_ORDER
from cmmsf.evaluation.evaluator import subset_table
from cmmsf.inputs.errors import CmmsfError
from cmmsf.sample_inputs import make_inputs
from cmmsf.runtime.backends.registry import engine_candidates
from cmmsf.runtime.backends.base import Backend
from cmmsf.runtime.bench import bench_backend
from cmmsf.runtime.engine_folder import EngineFolder
from cmmsf.runtime.evaluate import PipelineScorer
from cmmsf.runtime.pipeline import Pipeline
from cmmsf.runtime.settings import RunSettings
from cmmsf.runtime.tuning import StageTiming, StagewiseBackend, Tuning, write_tuning

RECORDED = "precision_guard.json"
"""Beside a checkpoint's weights: the accuracy guard's verdicts for its reduced-precision candidates."""
GUARD = {"text": ("mae", +0.02), "audio": ("valence2_bal", -1.0), "video": ("valence3_bal", -1.0)}
"""A row's modalities → the metric the guard watches and how far it may move (MAE up, accuracy down)."""
MAX_FLIPS = 0.01
"""At most this share of the dev clips' Acc-2 decisions may differ from ONNX Runtime FP32."""
FP32_COMPUTE = ("fp32",)


class TuneError(CmmsfError, RuntimeError):
    """Tuning could not run; the message says why."""


@dataclass(kw_only=True)
class TuneOptions:
    folder: Path
    data_dir: Path | None = None
    """Where mosi/, ravdess/ and faces/ are (the accuracy guard's dev splits); None: no guard data."""
    runs: int = 20
    rounds: int = 3
    threads: int | None = None
    record: bool = False
    """With data_dir: keep the reduced-precision verdicts beside the checkpoint's weights (RECORDED)."""


def _label(candidate: tuple[str, str]) -> str:
    return f"{candidate[0]} {candidate[1]}"


def candidates_here(engines: EngineFolder, console: Console) -> dict[tuple[str, str], Backend]:
    """Every backend × precision that can run the folder here, loaded (the reference torch excepted)."""
    found = {}
    for spec, precision, request, problem in engine_candidates(engines):
        if problem:
            console.print(f"[dim]{spec.name} {precision}: not here ({problem})[/]", highlight=False)
            continue
        found[(spec.name, precision)] = spec.load(engines, request)
    return found


def parity_verdicts(engines: EngineFolder, backends: dict[tuple[str, str], Backend]) -> dict[tuple[str, str], str]:
    """`passed` or the first failure, per FP32-compute candidate, against the PyTorch reference (where it is
    here)."""
    if importlib.util.find_spec("torch") is None or engines.checkpoint_problem():
        return {}
    from cmmsf.model.checkpoint import load_checkpoint
    from cmmsf.runtime.backends.torch_ref import TorchBackend

    from .parity import check_parity, parity_cases
    from .profiles import ShapeProfile

    model = load_checkpoint(engines.checkpoint_dir())
    profile = ShapeProfile(tuple(engines.profile.batch), dict(engines.profile.max_len))
    verdicts = {}
    for candidate, backend in backends.items():
        if candidate[1] not in FP32_COMPUTE:  # reduced precision: the accuracy guard judges it
            continue
        kind = candidate[1]
        report = check_parity(TorchBackend(model, device="cpu"), {kind: backend}, parity_cases(model.config, profile))
        verdicts[candidate] = "passed" if report.passed else f"parity: {report.failures[0]}"
    return verdicts


class AccuracyGuard:
    """The dev splits, read once; each candidate chain's rows compared with ONNX Runtime FP32's."""

    def __init__(self, engines: EngineFolder, data_dir: Path, console: Console):
        from cmmsf.data.datasets import load_splits
        from cmmsf.evaluation.evaluator import leave_out_unfamiliar_voice

        data = [data_dir / "mosi" / "label.csv", data_dir / "ravdess", data_dir / "faces"]
        missing = [str(p) for p in data if not p.exists()]
        if missing:
            raise TuneError(f"the accuracy guard's data is missing: {', '.join(missing)} (--data-dir)")
        self.pipeline = Pipeline.load(RunSettings(engines=engines.path, backend="onnxruntime"))
        voice = self.pipeline.preprocessor.voice
        with console.status("accuracy guard: reading the dev splits (MOSI, RAVDESS, faces)…"):
            items = load_splits(data, engines.config, None, None, None, splits=("dev",))["dev"]
        self.items = [leave_out_unfamiliar_voice(it, voice) for it in items] if voice is not None else items
        baseline = PipelineScorer(self.pipeline)
        self.rows = subset_table(baseline, self.items, framing=False)
        self.scores = baseline.scores(self.items)
        self.n = len(self.items)

    def verdict(self, backend: Backend) -> str:
        """`passed: <what moved>`, or the first bound it crossed."""
        scorer = PipelineScorer(Pipeline(backend, self.pipeline.engines, preprocessor=self.pipeline.preprocessor))
        flips = int(np.sum((scorer.scores(self.items) >= 0) != (self.scores >= 0)))
        if flips > MAX_FLIPS * self.n:
            return f"accuracy: {flips} of {self.n} dev Acc-2 decisions flip (bound {MAX_FLIPS:.0%})"
        moves = [f"{flips}/{self.n} flips"]
        for base, row in zip(self.rows, subset_table(scorer, self.items, framing=False)):
            rule = GUARD.get(row.subset)
            if rule is None:
                continue
            metric, bound = rule
            moved = row.metrics[metric] - base.metrics[metric]
            if (moved > bound) if bound > 0 else (moved < bound):
                return (f"accuracy: {row.source} {row.subset} {metric} {base.metrics[metric]:.3f} → "
                        f"{row.metrics[metric]:.3f} (bound {bound:+g})")
            moves.append(f"{row.source} {row.subset} {metric} {moved:+.3f}")
        return "passed: " + ", ".join(moves)

    def close(self) -> None:
        self.pipeline.close()


def recorded_verdicts(engines: EngineFolder) -> dict[str, str]:
    """The guard's verdicts kept with the folder's checkpoint, where they were measured on the same weights
    (else none)."""
    import json

    checkpoint = engines.checkpoint_dir()
    path = checkpoint / RECORDED if checkpoint is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        recorded = json.loads(path.read_text())
        same = recorded["model_sha256"] == engines.manifest.model.checkpoint_sha256.get("model.safetensors")
        verdicts = {str(k): str(v) for k, v in recorded["verdicts"].items()} if same else {}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
    return {label: f"{verdict} (recorded with the checkpoint, {recorded.get('machine', '?')})"
            for label, verdict in verdicts.items()}


def record_verdicts(engines: EngineFolder, verdicts: dict[str, str]) -> Path:
    """Keep the reduced-precision verdicts beside the checkpoint's weights, for machines without dev data."""
    import json

    checkpoint = engines.checkpoint_dir()
    if checkpoint is None:
        raise TuneError("--record keeps the verdicts beside the checkpoint, and this folder's checkpoint is not here")
    reduced = {label: v for label, v in verdicts.items()  # a candidate's own verdict; the chain is this machine's
               if label.split(" ", 1)[-1] not in FP32_COMPUTE and not label.startswith("stagewise")}
    path = checkpoint / RECORDED
    path.write_text(json.dumps({"model_sha256": engines.manifest.model.checkpoint_sha256.get("model.safetensors"),
                                "machine": machine_name(), "verdicts": reduced}, indent=1) + "\n")
    return path


def time_stages(engines: EngineFolder, backends: dict[tuple[str, str], Backend], opts: TuneOptions,
                console: Console) -> dict[tuple[str, str], dict[str, float]]:
    """Per candidate and stage, the minimum over interleaved rounds of the median stage time (ms)."""
    lengths = engines.typical_lengths
    inputs = make_inputs(engines.config, 1, lengths["text"], lengths["audio"], lengths["video"], seed=0,
                         padded=False)
    best: dict[tuple[str, str], dict[str, float]] = {c: {} for c in backends}
    per_round = max(3, opts.runs // opts.rounds)
    for round_ in range(opts.rounds):
        for candidate, backend in backends.items():
            console.print(f"[dim]round {round_ + 1}/{opts.rounds}: {_label(candidate)}, {per_round} runs[/]",
                          highlight=False)
            stages = bench_backend(backend, inputs, per_round, warmup=2)["stages"]
            for stage in STAGE_ORDER:
                p50 = stages[stage]["p50"]
                best[candidate][stage] = min(best[candidate].get(stage, p50), p50)
    return best


def pick(times: dict[tuple[str, str], dict[str, float]], allowed: set[tuple[str, str]],
         first: tuple[str, str] | None = None) -> dict[str, list[StageTiming]]:
    """Each stage's allowed candidates, fastest first (or `first` first, where one backend runs them all)."""
    return {stage: sorted((StageTiming(backend=c[0], precision=c[1], p50_ms=round(t[stage], 3))
                           for c, t in times.items() if c in allowed),
                          key=lambda s: (first != (s.backend, s.precision), s.p50_ms))
            for stage in STAGE_ORDER}


def time_chains(engines: EngineFolder, chains: dict[str, Backend], opts: TuneOptions) -> dict[str, float]:
    """End to end p50 of whole chains, interleaved over rounds (the minimum of the rounds' medians):
    stages timed alone do not show what two runtimes' thread pools cost each other in one chain."""
    lengths = engines.typical_lengths
    inputs = make_inputs(engines.config, 1, lengths["text"], lengths["audio"], lengths["video"], seed=0,
                         padded=False)
    best: dict[str, float] = {}
    for _ in range(opts.rounds):
        for label, chain in chains.items():
            p50 = bench_backend(chain, inputs, max(3, opts.runs // opts.rounds), warmup=2)["end_to_end_ms"]["p50"]
            best[label] = round(min(best.get(label, p50), p50), 3)
    return best


def uniform_or_stagewise(engines: EngineFolder, backends: dict[tuple[str, str], Backend],
                         times: dict[tuple[str, str], dict[str, float]], allowed: set[tuple[str, str]],
                         opts: TuneOptions) -> tuple[dict[str, list[StageTiming]], dict[str, float]]:
    """The per-stage winners, unless the fastest single candidate's chain beats them chained."""
    stages = pick(times, allowed)
    single = min(allowed, key=lambda c: sum(times[c].values()))
    if all((s[0].backend, s[0].precision) == single for s in stages.values()):
        return stages, {}
    chain = StagewiseBackend({stage: backends[(s[0].backend, s[0].precision)] for stage, s in stages.items()})
    measured = time_chains(engines, {"stagewise": chain, _label(single): backends[single]}, opts)
    if measured[_label(single)] < measured["stagewise"]:
        return pick(times, allowed, first=single), measured
    return stages, measured


def tune(opts: TuneOptions, console: Console) -> Tuning:
    engines = EngineFolder.open(opts.folder)
    backends = candidates_here(engines, console)
    if not backends:
        raise TuneError("no backend can run this engine folder here")
    verdicts = {c: "passed" for c in backends}
    for candidate, verdict in parity_verdicts(engines, backends).items():
        verdicts[candidate] = verdict
    guard = AccuracyGuard(engines, opts.data_dir, console) if opts.data_dir else None
    recorded = {} if guard else recorded_verdicts(engines)
    try:
        for candidate, backend in backends.items():
            if candidate[1] in FP32_COMPUTE or not verdicts[candidate].startswith("passed"):
                continue
            verdicts[candidate] = (guard.verdict(backend) if guard else recorded.get(_label(candidate)) or
                                   "no dev data to guard reduced precision (--data-dir)")
        allowed = {c for c, v in verdicts.items() if v.startswith("passed")}
        times = time_stages(engines, {c: b for c, b in backends.items() if c in allowed}, opts, console)
        stages = pick(times, allowed)
        if guard and any(s[0].precision not in FP32_COMPUTE for s in stages.values()):
            chain = StagewiseBackend({stage: backends[(s[0].backend, s[0].precision)] for stage, s in stages.items()})
            verdict = guard.verdict(chain)
            verdicts[("stagewise", "winners")] = verdict
            if not verdict.startswith("passed"):
                allowed = {c for c in allowed if c[1] in FP32_COMPUTE}
        stages, chain_ms = uniform_or_stagewise(engines, backends, times, allowed, opts)
    finally:
        if guard:
            guard.close()
        for backend in backends.values():
            backend.close()
    tuning = Tuning(machine=machine_name(), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    guard={_label(c): v for c, v in verdicts.items()}, stages=stages, chain_ms=chain_ms)
    if opts.record and guard:
        kept = record_verdicts(engines, {_label(c): v for c, v in verdicts.items()})
        console.print(f"kept the guard's verdicts in {kept}", highlight=False)
    path = write_tuning(engines.path, tuning)
    console.print(tuning_table(tuning, times))
    console.print(f"wrote {path}: `--backend auto` now runs each stage on its winner", highlight=False)
    return tuning


def machine_name() -> str:
    """`AMD EPYC 9R14, 2 cores`: the CPU model (Linux's /proc/cpuinfo, else platform's word) and the cores
    this process may use; tuning measured there holds there."""
    import os

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), model)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return f"{model}, {cores} cores"


def tuning_table(tuning: Tuning, times: dict[tuple[str, str], dict[str, float]]) -> Table:
    """Stage × candidate p50 ms, the winner marked, and each candidate's guard verdict."""
    table = Table(title=f"tune: p50 ms per stage, batch 1 ({tuning.machine}); * = winner", title_justify="left")
    table.add_column("candidate")
    for stage in STAGE_ORDER:
        table.add_column(stage, justify="right")
    table.add_column("guard")
    winners = tuning.winners()
    for label, verdict in tuning.guard.items():
        candidate = tuple(label.split(" ", 1))
        row = times.get(candidate, {})
        cells = []
        for stage in STAGE_ORDER:
            if stage not in row:
                cells.append("-")
                continue
            won = winners[stage].backend == candidate[0] and winners[stage].precision == candidate[1]
            cells.append(f"{row[stage]:.2f}" + ("*" if won else ""))
        table.add_row(label, *cells, verdict if verdict.startswith("passed") else f"[yellow]{verdict}[/]")
    if tuning.chain_ms:
        table.caption = "end to end, chained: " + ", ".join(f"{k} {v:.1f} ms" for k, v in tuning.chain_ms.items())
    return table
