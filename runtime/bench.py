"""`cmmsf-run bench`: latency the way trtexec reports it, across backends, in one table.

For each backend and batch size: warm-up runs, then timed runs of the five stages chained on the same
typical-length inputs (the profile's opt lengths). Per stage and end to end: p50/p90/p99 ms;
throughput in clips/s from the end-to-end median; runtime overhead = end to end minus the sum of the
stage times (host work between stages); peak host RSS of the process so far (it accumulates over
the backends of one run: bench one backend per run for an exact per-backend figure); device memory
where a GPU is in use; the speed-up over torch eager when torch ran.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cmmsf.config import ModelConfig
from cmmsf.contracts import STAGES
from cmmsf.sample_inputs import make_inputs

from .backends import load_backend
from .manifest import read_manifest


def percentiles(samples: list[float]) -> dict[str, float]:
    values = np.asarray(samples)
    return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (50, 90, 99)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_backend(backend, inputs: dict[str, np.ndarray], runs: int, warmup: int) -> dict:
    """Time `runs` chained passes after `warmup` untimed ones."""
    stage_times: dict[str, list[float]] = {s: [] for s in STAGES}
    totals = []
    for i in range(warmup + runs):
        tensors = dict(inputs)
        begin = time.perf_counter()
        for stage in STAGES:
            start = time.perf_counter()
            tensors.update(backend.run_stage(stage, tensors))
            if i >= warmup:
                stage_times[stage].append((time.perf_counter() - start) * 1e3)
        if i >= warmup:
            totals.append((time.perf_counter() - begin) * 1e3)
    e2e = percentiles(totals)
    overhead = [total - sum(stage_times[s][i] for s in STAGES) for i, total in enumerate(totals)]
    batch = len(inputs["input_ids"])
    return {"end_to_end_ms": e2e, "stages": {s: percentiles(v) for s, v in stage_times.items()},
            "clips_per_s": round(batch * 1e3 / e2e["p50"], 2),
            "overhead_pct": round(100 * float(np.median(overhead)) / e2e["p50"], 2),
            "provider": backend.provider, "peak_rss_mb": round(peak_rss_mb(), 1),
            "device_mb": backend.device_memory_mb()}


def run_bench(engines: Path, backends: list[str], batches: list[int], runs: int, warmup: int,
              threads: int | None, json_out: Path | None, plot: Path | None, console: Console) -> dict:
    manifest = read_manifest(engines)
    config = ModelConfig.from_dict(manifest["model"]["config"])
    lengths = {m: max(1, top // 2) for m, top in manifest["profile"]["max_len"].items()}
    results: dict[str, dict] = {}
    for name in backends:
        try:
            backend = load_backend(name, engines, threads=threads)
        except Exception as err:  # noqa: BLE001 - one unavailable backend is a table row, not a crash
            results[name] = {"error": f"{type(err).__name__}: {err}"}
            console.print(f"[yellow]{name}: unavailable: {err}[/]")
            continue
        results[backend.name] = {}
        for batch in batches:
            inputs = make_inputs(config, batch, lengths["text"], lengths["audio"], lengths["video"], seed=0,
                                 padded=False)
            console.print(f"{backend.name} batch {batch}: {warmup} warm-up + {runs} timed runs…", highlight=False)
            results[backend.name][str(batch)] = bench_backend(backend, inputs, runs, warmup)
        backend.close()
    report = {"engines": str(engines), "preset": config.name, "lengths": lengths, "runs": runs,
              "warmup": warmup, "threads": threads, "results": results}
    console.print(bench_table(report))
    if json_out:
        json_out.write_text(json.dumps(report, indent=1) + "\n")
        console.print(f"wrote {json_out}")
    if plot:
        plot_stages(report, plot)
        console.print(f"plot: {plot}")
    return report


def bench_table(report: dict) -> Table:
    table = Table(title=f"CM-MSF bench ({report['preset']} preset, lengths {report['lengths']}, "
                        f"{report['runs']} runs)")
    for column in ("backend", "batch", "status", "p50 ms", "p90 ms", "p99 ms", "clips/s", "overhead %",
                   "vs torch", "provider"):
        table.add_column(column, justify="left" if column in ("backend", "status", "provider") else "right")
    torch_p50 = {b: r["end_to_end_ms"]["p50"] for b, r in report["results"].get("torch", {}).items()
                 if isinstance(r, dict) and "end_to_end_ms" in r}
    for name, per_batch in report["results"].items():
        if "error" in per_batch:
            table.add_row(name, "-", "[red]unavailable[/]", *["-"] * 6, per_batch["error"][:60])
            continue
        for batch, r in per_batch.items():
            e2e = r["end_to_end_ms"]
            speedup = f"{torch_p50[batch] / e2e['p50']:.2f}×" if batch in torch_p50 else "-"
            table.add_row(name, batch, "[green]ok[/]", f"{e2e['p50']:.1f}", f"{e2e['p90']:.1f}", f"{e2e['p99']:.1f}",
                          f"{r['clips_per_s']:.1f}", f"{r['overhead_pct']:.1f}", speedup, r["provider"])
    return table


def plot_stages(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{n} b{b}", r["stages"]) for n, per in report["results"].items() if "error" not in per
            for b, r in per.items()]
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
