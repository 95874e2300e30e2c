"""`cmmsf-run bench`: latency the way trtexec reports it, across backends and precisions, in one table.

For each backend (and, for ONNX Runtime, each precision asked for) and batch size: warm-up runs, then
timed runs of the one stage chain (`Backend.run`) on the same typical-length inputs (the profile's opt
lengths). Per stage and end to end: p50/p90/p99 ms; throughput in clips/s from the end-to-end median;
runtime overhead = end to end minus the sum of the stage times (host work between stages); peak host
RSS of the process so far (it accumulates over the rows of one run: bench one backend per run for an
exact per-backend figure); device memory where a GPU is in use; the speed-up over torch eager when
torch ran. Rows are keyed by backend label (`onnxruntime fp16`, `torch fp32`).

The front-ends outside the five stages get rows of their own, batch 1: `asr` (Whisper speech
recognition, what a clip without a transcript adds) and, for a checkpoint with the `whisper` audio
front-end, `whisper features`. They run on `--audio FILE` (real speech: recognition time depends on
how much is said), else on a generated voiced tone of the typical audio length.
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
from cmmsf.sample_inputs import make_inputs

from .backends import check_choice, load_backend
from .engine_folder import EngineFolder
from .latency import peak_rss_mb, percentiles


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
    """Speech to time the front-ends on; default a generated tone of the typical length."""


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


def _rows(backends: list[str], precisions: list[str]) -> list[tuple[str, str]]:
    """(backend, precision) pairs to bench: ONNX Runtime once per precision, the others once."""
    return [(b, p) for b in backends for p in (precisions if b == "onnxruntime" else precisions[:1])]


def _precision_of(name: str, asked: str, engines: EngineFolder) -> str:
    """The precision a backend runs in: ONNX Runtime as asked, TensorRT as its plans were built, torch fp32."""
    return {"onnxruntime": asked, "tensorrt": engines.manifest.precision}.get(name, "fp32")


def run_bench(opts: BenchOptions, console: Console) -> dict:
    for name, precision in _rows(opts.backends, opts.precisions):
        check_choice(name, precision)
    engines = EngineFolder.open(opts.engines)
    config, lengths = engines.config, engines.typical_lengths
    results: dict[str, dict] = {}
    for name, precision in _rows(opts.backends, opts.precisions):
        try:
            backend = load_backend(name, engines, precision=precision, threads=opts.threads)
        except Exception as err:  # noqa: BLE001 - one unavailable backend is a table row, not a crash
            label = f"{name} {_precision_of(name, precision, engines)}"  # as Backend.label would say
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
        backend.close()
    if opts.front_ends:
        results.update(bench_front_ends(config, lengths["audio"] / config.audio.frame_rate_hz, opts, console))
    report = {"engines": str(opts.engines), "preset": config.name, "lengths": lengths, "runs": opts.runs,
              "warmup": opts.warmup, "threads": opts.threads, "results": results}
    console.print(bench_table(report))
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
    return {"end_to_end_ms": e2e, "clips_per_s": round(1e3 / e2e["p50"], 2), "overhead_pct": 0.0}


def bench_front_ends(config, seconds: float, opts: BenchOptions, console: Console) -> dict[str, dict]:
    """Rows for the speech front-ends (batch 1), or one `unavailable` row when the model is missing."""
    from cmmsf.inputs.asr import AsrMissingError, SpeechRecognizer
    from cmmsf.inputs.media import decode_audio
    from cmmsf.inputs.speech_features import whisper_features

    rate = config.audio.sample_rate
    if opts.audio is not None:
        wave = decode_audio(opts.audio, rate)
        if wave is None:
            raise UsageError(f"{opts.audio} has no audio track to time the front-ends on")
    else:  # a voiced tone: 150 Hz with harmonics, its loudness swaying at 4 Hz like syllables
        t = np.arange(int(seconds * rate)) / rate
        wave = (0.1 * np.sin(2 * np.pi * 4 * t) ** 2 * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6)))
        wave = wave.astype(np.float32)
    try:
        recognizer = SpeechRecognizer()
        recognizer.model  # noqa: B018 - load before timing
    except AsrMissingError as err:
        console.print(f"[yellow]asr: unavailable: {err}[/]")
        return {"asr": {"error": f"{type(err).__name__}: {err}"}}
    provider = f"ctranslate2 {recognizer.model.model.compute_type} {recognizer.model.model.device}"
    label = f"{len(wave) / rate:.1f} s of {'`' + opts.audio.name + '`' if opts.audio else 'generated tone'}"
    console.print(f"front-ends on {label}: {opts.warmup} warm-up + {opts.runs} timed runs…", highlight=False)
    rows = {"asr": {"1": {**_timed(lambda: recognizer.transcribe(wave), opts.runs, opts.warmup),
                          "provider": provider, "audio": label}}}
    if config.audio.frontend == "whisper":
        encode = lambda: whisper_features(recognizer, wave, config.audio.frame_rate_hz)  # noqa: E731
        rows["whisper features"] = {"1": {**_timed(encode, opts.runs, opts.warmup), "provider": provider,
                                          "audio": label}}
    return rows


def bench_table(report: dict) -> Table:
    table = Table(title=f"CM-MSF bench ({report['preset']} preset, lengths {report['lengths']}, "
                        f"{report['runs']} runs)")
    for column in ("backend", "batch", "status", "p50 ms", "p90 ms", "p99 ms", "clips/s", "overhead %",
                   "vs torch", "provider"):
        table.add_column(column, justify="left" if column in ("backend", "status", "provider") else "right")
    torch_rows = next((rows for label, rows in report["results"].items() if label.startswith("torch")), {})
    torch_p50 = {b: r["end_to_end_ms"]["p50"] for b, r in torch_rows.items()
                 if isinstance(r, dict) and "end_to_end_ms" in r}
    for name, per_batch in report["results"].items():
        if "error" in per_batch:
            table.add_row(name, "-", "[red]unavailable[/]", *["-"] * 6, per_batch["error"][:60])
            continue
        for batch, r in per_batch.items():
            e2e = r["end_to_end_ms"]
            speedup = f"{torch_p50[batch] / e2e['p50']:.2f}×" if batch in torch_p50 and "stages" in r else "-"
            table.add_row(name, batch, "[green]ok[/]", f"{e2e['p50']:.1f}", f"{e2e['p90']:.1f}", f"{e2e['p99']:.1f}",
                          f"{r['clips_per_s']:.1f}", f"{r['overhead_pct']:.1f}", speedup, r["provider"])
    return table


def plot_stages(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{n} b{b}", r["stages"]) for n, per in report["results"].items() if "error" not in per
            for b, r in per.items() if "stages" in r]
    fig, ax = plt.subplots(figsize=(8, 1 + 0.5 * len(rows)))
    for i, (label, stages) in enumerate(rows):
        left = 0.0
        for stage in STAGES:
            width = stages[stage]["p50"]
            ax.barh(i, width, left=left, label=stage if i == 0 else None)
            left += width
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_xlabel("p50 ms per stage (stacked)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
