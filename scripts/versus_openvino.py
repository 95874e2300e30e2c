"""Our default CPU path against what a user would otherwise run, side by side in one process:

    python scripts/versus_openvino.py [--engines DIR] [--rounds 4] [--runs 20]

Rows: `--backend auto` (the tuned per-stage winners where `cmmsf-export tune` measured the folder, else the
first backend that runs here), ONNX Runtime FP32, OpenVINO with its own defaults on the same FP32 graphs
(`compile_model(path, "CPU")` and nothing else: on a CPU with bfloat16 it computes in BF16) and torch eager.
Batch 1 at the profile's typical lengths; the rounds are interleaved and each row keeps the minimum of its
per-round medians, so a noisy minute does not decide. Needs the `openvino` and `export` extras.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cmmsf.export.default_engines import ensure_default_engines
from cmmsf.runtime.backends import LoadRequest, load_backend
from cmmsf.runtime.backends.openvino import OpenVinoBackend
from cmmsf.runtime.bench import bench_backend
from cmmsf.runtime.engine_folder import EngineFolder
from cmmsf.sample_inputs import make_inputs


class OpenVinoDefaults(OpenVinoBackend):
    """OpenVINO exactly as a user calls it with no options (`compile_model(path, "CPU")`): what we are
    measured against. Its provider string says the precision it chose."""

    def __init__(self, graphs: dict[str, Path]):
        super().__init__(graphs, LoadRequest(), options={})
        self.precision = "its defaults"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    console = Console(width=150)
    engines = EngineFolder.open(args.engines or ensure_default_engines(console))
    lengths = engines.typical_lengths
    inputs = make_inputs(engines.config, 1, lengths["text"], lengths["audio"], lengths["video"], seed=0,
                         padded=False)
    rows = {"auto": load_backend("auto", engines), "onnxruntime fp32": load_backend("onnxruntime", engines),
            "openvino defaults": OpenVinoDefaults(engines.files("fp32")),
            "torch fp32": load_backend("torch", engines, device="cpu")}
    medians: dict[str, list[float]] = {label: [] for label in rows}
    for round_ in range(args.rounds):
        for label, backend in rows.items():
            runs = max(3, args.runs // 4) if label.startswith("torch") else args.runs
            medians[label].append(bench_backend(backend, inputs, runs, warmup=3)["end_to_end_ms"]["p50"])
        console.print(f"round {round_ + 1}/{args.rounds} done", highlight=False)
    best = {label: min(m) for label, m in medians.items()}
    table = Table(title=f"batch 1, {lengths}, min of {args.rounds} interleaved per-round medians")
    for column in ("path", "p50 ms", "rounds", "vs OpenVINO defaults", "vs torch eager", "provider"):
        table.add_column(column, justify="left" if column in ("path", "provider", "rounds") else "right")
    for label, backend in rows.items():
        table.add_row(label, f"{best[label]:.2f}", " ".join(f"{m:.1f}" for m in medians[label]),
                      f"{best['openvino defaults'] / best[label]:.2f}×", f"{best['torch fp32'] / best[label]:.2f}×",
                      backend.provider)
    console.print(table)
    if rows["auto"].note:
        console.print(rows["auto"].note, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
