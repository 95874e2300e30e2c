"""Parameter counts per preset and stage, and a CPU forward time at batch 1 on a typical clip.

    python scripts/model_stats.py [--presets tiny,edge,paper] [--runs 5]

A typical clip is the real MOSI video's shape: 7.4 s → 20 tokens, 92 audio steps (12.5 Hz), 111 frames (15 Hz).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cmmsf.config import preset
from cmmsf.contracts import STAGES
from cmmsf.model.network import build_model, parameter_count
from cmmsf.sample_inputs import make_inputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="tiny,edge,paper")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.presets.split(","):
        model = build_model(preset(name))
        stages = {s: parameter_count(model.stage(s)) for s in STAGES}
        inputs = {k: torch.from_numpy(v) for k, v in make_inputs(model.config, 1, 20, 92, 111, padded=False).items()}
        times = []
        with torch.inference_mode():
            model(inputs)
            for _ in range(args.runs):
                start = time.perf_counter()
                model(inputs)
                times.append((time.perf_counter() - start) * 1e3)
        print(f"{name:6s} params {parameter_count(model) / 1e6:7.2f} M  "
              + "  ".join(f"{s} {n / 1e6:.2f}M" for s, n in stages.items())
              + f"  | CPU forward batch 1: median {np.median(times):.0f} ms over {args.runs} runs")


if __name__ == "__main__":
    main()
