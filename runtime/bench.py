"""`cmmsf-run bench`: latency the way trtexec reports it, across backends and precisions, in one table.

For each backend (and, for ONNX Runtime, each precision asked for) and batch size: warm-up runs, then
timed runs of the one stage chain (`Backend.run`) on the same typical-length inputs (the profile's opt
lengths). Per stage and end to end: p50/p90/p99 ms; throughput in clips/s from the end-to-end median;
runtime overhead = end to end minus the sum of the stage times (host work between stages); memory: the
the process's peak resident memory so far (it only grows over the rows of one run, so the first backend's
figure is its own; bench one backend per run for the others'), device memory where a GPU is in use; the speed-up over torch
eager when torch ran (else over the first row of the batch). Rows are keyed by backend label
(`onnxruntime fp16`, `torch fp32`). Two tables, as trtexec prints them: end to end per row, then each
stage's p50 / p99. The load average is read before and after: above the core count, the figures shared
the CPUs with other work and the table says so.

The front-ends outside the five stages get rows of their own, batch 1: `asr` (Whisper speech
recognition, what a clip without a transcript adds) and, for a checkpoint with the `whisper` audio
front-end, `whisper features`. Recognition time depends on what is said, so they run on real speech:
`--audio FILE`, else the CMU-MOSI wav beside the checkout (`../shared/data/mosi/clips`), else, where
neither exists, a generated voiced tone of the typical audio length (the row says which).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cmmsf.contracts import STAGES
from cmmsf.inputs.errors import UsageError
from cmmsf.inputs.face_detector import YuNet
from cmmsf.sample_inputs import make_inputs

from .backends import AUTO, LoadRequest, check_choice, load_backend, registry
from .backends.base import Backend
from .profile import graph_flops, measure_peak, top_operators
from .tuning import read_tuning
from .engine_folder import EngineFolder
from .latency import machine_load, peak_rss_mb, percentiles


@dataclass(kw_only=True)
class BenchOptions:
    engines: Path
    backends: list[str] = field(default_factory=lambda: ["onnxruntime", "torch"])
    batches: list[int] = field(default_factory=lambda: [1, 8])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    """ONNX Runtime runs once per precision; TensorRT and torch have one precision each."""
    runs: int = 50
    warmup: int = 5
    threads: int | None = None
    json_out: Path | None = None
    plot: Path | None = None
    front_ends: bool = True
    """Also time the speech front-ends (ASR, Whisper features) when their model is installed."""
    audio: Path | None = None
    """Speech to time the front-ends on; default the MOSI wav beside the checkout (see `default_speech`)."""
    profile: bool = False
    """Per stage: the top operators from each backend's own profiler, and the limit line (FLOPs counted from
    the graph, achieved GFLOP/s, the machine's measured peak); at the first batch size."""


SPEECH_FOLDERS = ("../shared/data/mosi/clips",)
"""Where real speech for the front-ends is looked for, from the working folder and from the checkout."""


def default_speech() -> Path | None:
    """The first wav in SPEECH_FOLDERS, from the working folder or the checkout this package runs from."""
    roots = [Path.cwd(), Path(__file__).resolve().parents[1]]
    for root in roots:
        for folder in SPEECH_FOLDERS:
            wavs = sorted((root / folder).glob("*.wav"))
            if wavs:
                return wavs[0].resolve()
    return None


def bench_backend(backend, inputs: dict[str, np.ndarray], runs: int, warmup: int) -> dict:
    """Time `runs` chained passes after `warmup` untimed ones."""
    stage_times: dict[str, list[float]] = {s: [] for s in STAGES}
    totals = []
    for i in range(warmup + runs):
        stage_ms: dict[str, float] = {}
        begin = time.perf_counter()
        backend.run(inputs, stage_ms)
        total = (time.perf_counter() - begin) * 1e3
        if i >= warmup:
            totals.append(total)
            for stage, ms in stage_ms.items():
                stage_times[stage].append(ms)
    e2e = percentiles(totals)
    overhead = [total - sum(stage_times[s][i] for s in STAGES) for i, total in enumerate(totals)]
    batch = len(inputs["input_ids"])
    return {"end_to_end_ms": e2e, "stages": {s: percentiles(v) for s, v in stage_times.items()},
            "clips_per_s": round(batch * 1e3 / e2e["p50"], 2),
            "overhead_pct": round(100 * float(np.median(overhead)) / e2e["p50"], 2),
            "provider": backend.provider, "precision": backend.precision,
            "peak_rss_mb": round(peak_rss_mb(), 1), "device_mb": backend.device_memory_mb()}


def _rows(backends: list[str], precisions: list[str], engines: EngineFolder,
          console: Console) -> list[tuple[str, str]]:
    """(backend, precision) pairs to bench: each backend once per asked precision it can choose (the
    registry's `precisions`), once where its artifacts fix the precision (TensorRT's plans) and once for
    `auto`, which chooses for itself. A precision a backend cannot run here, beside one it can (torch fp16
    without CUDA), is a note, not a row; a backend that cannot run at all stays a row that says why."""
    rows = []
    for name in backends:
        spec = registry().get(name)
        if spec is None:  # auto
            rows.append((name, precisions[0]))
            continue
        asked = [(name, p) for p in precisions if p in spec.precisions] or [(name, precisions[0])]
        if len(asked) > 1:
            problems = {p: spec.problem(engines, LoadRequest(precision=p)) for _, p in asked}
            if any(problem is None for problem in problems.values()):
                for p, problem in problems.items():
                    if problem:
                        console.print(f"[yellow]{name} {p}: not run here, {problem}[/]", highlight=False)
                asked = [(name, p) for _, p in asked if problems[p] is None]
        rows += asked
    return rows


def _label(name: str, asked: str, engines: EngineFolder) -> str:
    """How Backend.label names a backend that could not load: its name and the precision it runs in."""
    if name == AUTO:
        return AUTO
    return f"{name} {registry()[name].runs_in(engines, asked)}"


def run_bench(opts: BenchOptions, console: Console) -> dict:
    for name in opts.backends:
        for precision in opts.precisions:
            check_choice(name, precision)
    engines = EngineFolder.open(opts.engines)
    config, lengths = engines.config, engines.typical_lengths
    results: dict[str, dict] = {}
    detectors: dict[str, dict] = {}
    load_before = machine_load()
    for name, precision in _rows(opts.backends, opts.precisions, engines, console):
        try:
            backend = load_backend(name, engines, precision=precision, threads=opts.threads)
        except Exception as err:  # noqa: BLE001 - one unavailable backend is a table row, not a crash
            label = _label(name, precision, engines)
            results[label] = {"error": f"{type(err).__name__}: {err}"}
            console.print(f"[yellow]{label}: unavailable: {err}[/]")
            continue
        results[backend.label] = {}
        for batch in opts.batches:
            inputs = make_inputs(config, batch, lengths["text"], lengths["audio"], lengths["video"], seed=0,
                                 padded=False)
            console.print(f"{backend.label} batch {batch}: {opts.warmup} warm-up + {opts.runs} timed runs…",
                          highlight=False)
            results[backend.label][str(batch)] = bench_backend(backend, inputs, opts.runs, opts.warmup)
            if opts.profile and batch == opts.batches[0]:
                results[backend.label][str(batch)]["profile"] = profile_backend(
                    backend, inputs, engines, results[backend.label][str(batch)]["stages"])
        if opts.front_ends and backend.graph_provider(engines.detector_file) not in {
                row["1"]["provider"] for row in detectors.values()}:
            detectors[f"face_detector {backend.label}"] = bench_face_detector(backend, engines, opts, console)
        backend.close()
    if opts.profile:
        peak = measure_peak(opts.threads)
        report_peak = {"fp32_gflops": peak.fp32_gflops, "int8_gops": peak.int8_gops}
        for label, per_batch in results.items():
            row = per_batch.get(str(opts.batches[0]), {}) if isinstance(per_batch, dict) else {}
            if "profile" in row:
                console.print(profile_table(label, row["profile"], report_peak))
        console.print(f"machine peak, measured (ONNX Runtime 1024³ matrix products on {opts.threads or 'all'} "
                      f"threads): float32 {peak.fp32_gflops} GFLOP/s, int8 {peak.int8_gops} GOP/s", highlight=False)
    if opts.front_ends:
        results.update(bench_front_ends(config, lengths["audio"] / config.audio.frame_rate_hz, opts, console))
        results.update(detectors)
    tuning, _ = read_tuning(engines.path)
    report = {"engines": str(opts.engines), "preset": config.name, "lengths": lengths, "runs": opts.runs,
              "accuracy": tuning.guard if tuning else {},
              "warmup": opts.warmup, "threads": opts.threads,
              "machine": {"before": load_before, "after": machine_load()}, "results": results}
    console.print(bench_table(report))
    if any(r.get("stages") for per in results.values() for r in per.values() if isinstance(r, dict)):
        console.print(stage_table(report))
    if note := busy_note(report["machine"]):
        console.print(f"[yellow]{note}[/]", highlight=False)
    if opts.json_out:
        opts.json_out.write_text(json.dumps(report, indent=1) + "\n")
        console.print(f"wrote {opts.json_out}")
    if opts.plot:
        plot_stages(report, opts.plot)
        console.print(f"plot: {opts.plot}")
    return report


def _timed(call, runs: int, warmup: int) -> dict:
    times = []
    for i in range(warmup + runs):
        begin = time.perf_counter()
        call()
        if i >= warmup:
            times.append((time.perf_counter() - begin) * 1e3)
    e2e = percentiles(times)
    return {"end_to_end_ms": e2e, "clips_per_s": round(1e3 / e2e["p50"], 2), "overhead_pct": 0.0,
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def profile_backend(backend, inputs: dict[str, np.ndarray], engines: EngineFolder, stages: dict) -> dict:
    """Per stage: the backend's operator times (None where it has no profiler) and the FLOPs of the stage's
    FP32 graph at these shapes (the arithmetic every backend does), with the rate the stage's p50 means."""
    feeds = backend.stage_feeds(inputs)
    operators = backend.operator_times(inputs)
    graphs = engines.files("fp32")
    out = {}
    for stage in STAGES:
        flops = sum(graph_flops(graphs[stage], feeds[stage]).values())
        p50 = stages[stage]["p50"]
        out[stage] = {"gflop": round(flops / 1e9, 4), "gflops_per_s": round(flops / 1e9 / (p50 / 1e3), 2),
                      "top_operators": [{"op": op, "ms": round(ms, 3), "share": round(share, 3)}
                                        for op, ms, share in top_operators(operators[stage])] if operators else None}
    return out


def profile_table(label: str, profile: dict, peak: dict) -> Table:
    """`bench --profile`: per stage its costliest operators and how close it runs to the measured peak."""
    table = Table(title=f"profile: {label}, batch 1 (operators from the backend's own profiler)",
                  title_justify="left")
    for column in ("stage", "top operators: ms per run (share)", "GFLOP", "GFLOP/s", "of fp32 peak"):
        table.add_column(column, justify="left" if column.startswith(("stage", "top")) else "right")
    for stage, row in profile.items():
        ops = ("; ".join(f"{o['op']} {o['ms']:.2f} ({o['share']:.0%})" for o in row["top_operators"])
               if row["top_operators"] is not None else "no profiler for this backend")
        table.add_row(stage, ops, f"{row['gflop']:.3f}", f"{row['gflops_per_s']:.1f}",
                      f"{row['gflops_per_s'] / peak['fp32_gflops']:.0%}")
    return table


def bench_front_ends(config, seconds: float, opts: BenchOptions, console: Console) -> dict[str, dict]:
    """Rows for the speech front-ends (batch 1): `asr <model>` for each Whisper model (an `unavailable`
    row where one is not installed) and the `whisper features` of the audio front-end."""
    from cmmsf.inputs.asr import SpeechRecognizer
    from cmmsf.inputs.asr_models import FRONT_END_MODEL, MODELS, AsrMissingError
    from cmmsf.inputs.media import decode_audio
    from cmmsf.inputs.speech_features import whisper_features

    rate = config.audio.sample_rate
    speech = opts.audio or default_speech()
    if speech is not None:
        wave = decode_audio(speech, rate)
        if wave is None:
            raise UsageError(f"{speech} has no audio track to time the front-ends on")
    else:  # a voiced tone: 150 Hz with harmonics, its loudness swaying at 4 Hz like syllables
        t = np.arange(int(seconds * rate)) / rate
        wave = (0.1 * np.sin(2 * np.pi * 4 * t) ** 2 * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6)))
        wave = wave.astype(np.float32)
    label = (f"{len(wave) / rate:.1f} s of "
             + (f"`{speech.name}`" if speech else "generated tone (no speech found: pass --audio)"))
    rows: dict[str, dict] = {}
    for name in MODELS:  # every Whisper model installed here, side by side
        try:
            recognizer = SpeechRecognizer(model=name)
            recognizer.model  # noqa: B018 - load before timing
        except AsrMissingError as err:  # bench's own way round it: --no-front-ends
            console.print(f"[yellow]asr {name}: unavailable: {err.reason} (--no-front-ends skips the front-ends)[/]")
            rows[f"asr {name}"] = {"error": f"{type(err).__name__}: {err.reason}"}
            continue
        provider = f"ctranslate2 {recognizer.model.model.compute_type} {recognizer.model.model.device}"
        console.print(f"asr {name} on {label}: {opts.warmup} warm-up + {opts.runs} timed runs…", highlight=False)
        rows[f"asr {name}"] = {"1": {**_timed(lambda: recognizer.transcribe(wave), opts.runs, opts.warmup),
                                     "provider": provider, "audio": label}}
        if config.audio.frontend == "whisper" and name == FRONT_END_MODEL:
            encode = lambda: whisper_features(recognizer, wave, config.audio.frame_rate_hz)  # noqa: E731
            rows["whisper features"] = {"1": {**_timed(encode, opts.runs, opts.warmup), "provider": provider,
                                              "audio": label}}
    return rows


def bench_face_detector(backend: Backend, engines: EngineFolder, opts: BenchOptions, console: Console) -> dict:
    """A `face_detector` row: one detection (YuNet, the folder's sealed graph, and its decoding) on a
    640×480 frame where `backend` runs it (its graph runner: TensorRT's plan, OpenVINO, ONNX Runtime),
    what the tracker spends every 5th frame. Timed once per place it runs (`run_bench` skips repeats)."""
    detector = YuNet(backend.graph_runner(engines.detector_file))
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    console.print(f"face_detector ({backend.label}) on a 640×480 frame: {opts.warmup} warm-up + {opts.runs} timed "
                  "runs…", highlight=False)
    return {"1": {**_timed(lambda: detector.faces(frame), opts.runs, opts.warmup),
                  "provider": backend.graph_provider(engines.detector_file), "frame": "640x480"}}


def busy_note(machine: dict) -> str | None:
    """A warning when the load average was above the core count before or after the run."""
    loads = [m["load_1min"] for m in machine.values() if m.get("load_1min") is not None]
    cores = machine["before"]["cores"]
    if loads and max(loads) > cores:
        return (f"the machine was busy: load average {max(loads):.1f} on {cores} cores; these figures shared the "
                "CPUs with other work (rerun on a quiet machine, and compare rows of one run only)")
    return None


def timed_rows(report: dict):
    """(label, batch, row) for every timed row, front-ends included."""
    for label, per_batch in report["results"].items():
        if "error" not in per_batch:
            for batch, row in per_batch.items():
                yield label, batch, row


def speedups(report: dict) -> tuple[str | None, dict[tuple[str, str], float]]:
    """The baseline's name and each stage-chain row's speed-up over it at the same batch: torch eager
    where it ran, else the first row of that batch."""
    chains = [(label, batch, row) for label, batch, row in timed_rows(report) if "stages" in row]
    torch_label = next((label for label, _, _ in chains if label.startswith("torch")), None)
    base: dict[str, float] = {}
    for label, batch, row in chains:
        if label == torch_label or (torch_label is None and batch not in base):
            base[batch] = row["end_to_end_ms"]["p50"]
    named = torch_label or (chains[0][0] if chains else None)
    return named, {(label, batch): base[batch] / row["end_to_end_ms"]["p50"] for label, batch, row in chains
                   if batch in base}


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def bench_table(report: dict) -> Table:
    """End to end per backend and batch: latency, throughput, memory, speed-up (trtexec's summary)."""
    baseline, speedup = speedups(report)
    table = Table(title=f"CM-MSF bench ({report['preset']} preset, lengths {report['lengths']}, "
                        f"{report['runs']} runs): end to end")
    accuracy = report.get("accuracy") or {}
    columns = ["backend", "batch", "p50 ms", "p99 ms", "clips/s", "peak RSS MB", "device MB",
               f"speed-up vs {baseline or '-'}", "provider"]
    if accuracy:
        columns.append("dev accuracy vs ONNX Runtime FP32 (tune's guard)")
    for column in columns:
        table.add_column(column, justify="right" if column.endswith(("ms", "s", "MB")) or "speed-up" in column
                         or column == "batch" else "left")
    for name, per_batch in report["results"].items():
        verdict = [accuracy_of(name, accuracy)] if accuracy else []
        if "error" in per_batch:
            table.add_row(name, "-", "[red]unavailable[/]", *["-"] * 5, per_batch["error"][:60], *verdict)
            continue
        for batch, r in per_batch.items():
            e2e, ratio = r["end_to_end_ms"], speedup.get((name, batch))
            table.add_row(name, batch, f"{e2e['p50']:.2f}", f"{e2e['p99']:.2f}", f"{r['clips_per_s']:.1f}",
                          _mb(r.get("peak_rss_mb")), _mb(r.get("device_mb")),
                          "-" if ratio is None else f"{ratio:.2f}×", r["provider"], *verdict)
    audio = next((r["audio"] for _, _, r in timed_rows(report) if "audio" in r), None)
    if audio:
        table.caption = f"speech front-ends timed on {audio}"
    return table


def accuracy_of(label: str, guard: dict[str, str]) -> str:
    """What `cmmsf-export tune`'s guard measured for a bench row: its own verdict, the chained winners'
    for the tuned `auto`, the reference for ONNX Runtime FP32, `-` where the guard did not run it."""
    if label == "onnxruntime fp32":
        return "the reference"
    verdict = guard.get("stagewise winners" if label.startswith("auto") else label)
    if verdict is None:
        return "-"
    return verdict.removeprefix("passed: ") if verdict.startswith("passed: ") else verdict


def stage_table(report: dict) -> Table:
    """Each stage's p50 / p99 per backend and batch, beside the end to end (trtexec's per-layer view)."""
    table = Table(title="per stage: p50 / p99 ms")
    table.add_column("backend")
    table.add_column("batch", justify="right")
    for stage in (*STAGES, "end to end", "overhead %"):
        table.add_column(stage, justify="right")
    for label, batch, row in timed_rows(report):
        if "stages" in row:
            cells = [f"{row['stages'][s]['p50']:.2f} / {row['stages'][s]['p99']:.2f}" for s in STAGES]
            e2e = row["end_to_end_ms"]
            table.add_row(label, batch, *cells, f"{e2e['p50']:.2f} / {e2e['p99']:.2f}", f"{row['overhead_pct']:.1f}")
    return table


def plot_stages(report: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = stages_figure(report)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stages_figure(report: dict):
    """p50 per stage and end to end, one group of bars per backend and batch, on a log axis (torch's
    milliseconds and a fast backend's tenths both stay readable), each bar labelled with its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{label} · batch {batch}", row) for label, batch, row in timed_rows(report) if "stages" in row]
    bars = (*STAGES, "end to end")
    height = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 1.3 * len(rows)))
    colours = plt.get_cmap("tab10").colors
    for i, (_, row) in enumerate(rows):
        for j, stage in enumerate(bars):
            value = (row["end_to_end_ms"] if stage == "end to end" else row["stages"][stage])["p50"]
            y = i + (j - (len(bars) - 1) / 2) * height
            ax.barh(y, value, height=height * 0.9, color=colours[j % 10], label=stage if i == 0 else None)
            ax.text(value * 1.05, y, f"{value:.2f}", va="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("p50 latency (ms, log scale)")
    lo = min((b.get_width() for b in ax.patches), default=0.01)
    hi = max((b.get_width() for b in ax.patches), default=1.0)
    ax.set_xlim(lo / 2, hi * 4)  # room for the labels right of the longest bar
    ax.grid(axis="x", which="both", color="#eaeef2", lw=0.6)
    ax.set_axisbelow(True)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(bars), frameon=False)
    ax.set_title(f"CM-MSF bench, {report['preset']} preset", fontsize=10, pad=22)
    fig.tight_layout()
    return fig
