"""Every GPU path this machine has, side by side with ONNX Runtime on the CPU, in one table:

    pip install -e '.[export]' && python scripts/gpu_check.py [--engines DIR] [--runs 30] [--json out.json]

Rows: every registered backend (runtime/backends) × each device it declares × each precision it can
choose, each only where the registry's own check says it can run here (the reason is printed for the
others), so a new backend module appears here without a change to this script:
- ONNX Runtime on the CPU, FP32 and FP16 graphs: the baseline every speed-up is quoted against, and its
  CUDA provider where onnxruntime-gpu is installed;
- torch eager on the CPU (the reference) and on CUDA, FP32 and FP16;
- TensorRT plans, where TensorRT, the CUDA bindings and Polygraphy import (runtime/gpu.py decides, as
  `infer` does); plans are built into a copy of the engine folder when it has none.
Each row: per-stage p50 ms, end-to-end p50 and p99, clips/s, the speed-up over ONNX Runtime CPU FP32 at
the same batch, and the largest score difference from the torch CPU FP32 reference on the same inputs.
Sized to finish in a few minutes on one GPU from a clean checkout (the default engines are exported
from the shipped checkpoint first, about a minute).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cmmsf.contracts import STAGE_ORDER
from cmmsf.export.default_engines import ensure_default_engines
from cmmsf.runtime.backends import LoadRequest, load_backend, registry
from cmmsf.runtime.bench import bench_backend
from cmmsf.runtime.engine_folder import EngineFolder
from cmmsf.runtime.gpu import device_identity, tensorrt_problem
from cmmsf.sample_inputs import make_inputs


def candidates(engines: EngineFolder, console: Console):
    """(label, factory) for every registered backend × device × precision that can run here (the
    registry's own checks decide); prints why the others are left out."""
    found = []
    for spec in registry().values():
        folder = engines
        if spec.name == "tensorrt" and not engines.has_plans and tensorrt_problem() is None:
            folder = build_plans(engines, console)
        for device in spec.devices:
            for precision in spec.precisions or (spec.runs_in(folder, "fp32"),):
                label = f"{spec.name} {device} {precision}"
                request = LoadRequest(precision=precision if spec.precisions else "fp32", device=device)
                problem = spec.problem(folder, request)
                if problem:
                    console.print(f"[yellow]{label}: left out, {problem}[/]")
                    continue
                found.append((label, lambda s=spec, f=folder, r=request: s.load(f, r)))
    return found


def build_plans(engines: EngineFolder, console: Console) -> EngineFolder:
    """A copy of the engine folder with TensorRT plans built on this GPU (the original is left as it is)."""
    from cmmsf.export.build import BuildOptions, build
    from cmmsf.export.profiles import ShapeProfile

    out = Path(tempfile.mkdtemp(prefix="cmmsf-gpu-check-")) / "engines"
    console.print(f"building TensorRT plans into {out} …")
    checkpoint = engines.checkpoint_dir()
    if checkpoint is None:
        raise SystemExit(f"cannot build plans: {engines.checkpoint_problem()}")
    profile = ShapeProfile(tuple(engines.profile.batch), dict(engines.profile.max_len))
    build(BuildOptions(checkpoint=str(checkpoint), out=out, tensorrt="on", profile=profile), console)
    return EngineFolder.open(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", type=Path, default=None, help="engine folder [default: the shipped checkpoint's, in the user cache]")
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 180)
    engines = EngineFolder.open(args.engines or ensure_default_engines(console))
    config, lengths = engines.config, engines.typical_lengths
    batches = [int(b) for b in args.batch.split(",")]
    if tensorrt_problem() is None:
        here = device_identity()
        console.print(f"GPU: {here.gpu} (compute capability {here.compute_capability}, {here.memory_mb} MiB), "
                      f"TensorRT {here.tensorrt}")
    inputs = {b: make_inputs(config, b, lengths["text"], lengths["audio"], lengths["video"], seed=0, padded=False)
              for b in batches}
    reference_backend = load_backend("torch", engines, device="cpu") if engines.checkpoint_dir() else None
    reference = {b: reference_backend.run(x)["score"] for b, x in inputs.items()} if reference_backend else {}
    rows: dict[str, dict] = {}
    for label, factory in candidates(engines, console):
        try:
            backend = factory()
        except Exception as err:  # noqa: BLE001 - a path that fails to load is a row with its reason
            rows[label] = {"error": f"{type(err).__name__}: {err}"}
            continue
        rows[label] = {}
        for batch in batches:
            console.print(f"{label} batch {batch} …", highlight=False)
            timed = bench_backend(backend, inputs[batch], args.runs, args.warmup)
            scores = backend.run(inputs[batch])["score"]
            timed["score_max_abs_vs_torch_cpu"] = (float(np.max(np.abs(scores - reference[batch])))
                                                   if batch in reference else None)
            rows[label][str(batch)] = timed
        backend.close()
    console.print(table(rows, lengths, args.runs))
    if args.json:
        args.json.write_text(json.dumps({"lengths": lengths, "runs": args.runs, "rows": rows}, indent=1) + "\n")
        console.print(f"wrote {args.json}")
    return 0 if all("error" not in r for r in rows.values()) else 1


def table(rows: dict[str, dict], lengths: dict[str, int], runs: int) -> Table:
    out = Table(title=f"GPU paths beside ONNX Runtime CPU (lengths {lengths}, {runs} runs, p50 ms unless named)")
    for column in ("path", "batch", *(s.split("_")[0] for s in STAGE_ORDER), "e2e p50", "e2e p99", "clips/s", "vs ORT CPU", "|Δscore|", "provider"):
        out.add_column(column, justify="left" if column in ("path", "provider") else "right", no_wrap=True)
    base = rows.get("onnxruntime cpu fp32", {})
    for label, per_batch in rows.items():
        if "error" in per_batch:
            out.add_row(label, "-", *["-"] * (len(STAGE_ORDER) + 5), f"[red]{per_batch['error'][:80]}[/]")
            continue
        for batch, r in per_batch.items():
            e2e = r["end_to_end_ms"]
            speedup = (f"{base[batch]['end_to_end_ms']['p50'] / e2e['p50']:.2f}×"
                       if batch in base and "end_to_end_ms" in base[batch] else "-")
            delta = r["score_max_abs_vs_torch_cpu"]
            out.add_row(label, batch, *(f"{r['stages'][s]['p50']:.2f}" for s in STAGE_ORDER), f"{e2e['p50']:.2f}",
                        f"{e2e['p99']:.2f}", f"{r['clips_per_s']:.1f}", speedup,
                        "-" if delta is None else f"{delta:.1e}", r["provider"])
    return out


if __name__ == "__main__":
    sys.exit(main())
