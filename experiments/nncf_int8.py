"""NNCF's post-training INT8 (OpenVINO's own quantiser) against OpenVINO's defaults, per stage, speed only.

export/quantize.py found ONNX Runtime's QDQ INT8 slower than OpenVINO's BF16 defaults for the face stage
and little faster for the text stage. NNCF quantises for OpenVINO's kernels (its fusion patterns, signed
activations), so it is the strongest INT8 this CPU can run; if it does not beat BF16 either, INT8 is not
the way past OpenVINO's defaults here. Calibrated on the build's own calibration clips (export/calibration.py,
train splits), timed at batch 1 on the stage's feed from one calibration clip (the face stage at 90 frames),
interleaved rounds, median ms. Accuracy is not read: a slower variant would not ship.

    pip install nncf==3.4.0   # not a dependency of the toolkit
    python experiments/nncf_int8.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cmmsf.runtime.backends.onnxruntime import OnnxRuntimeBackend
from cmmsf.runtime.engine_folder import EngineFolder
from cmmsf.runtime.locations import default_engines_dir
from cmmsf.export.calibration import calibrate

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STAGES = ("video_encoder", "text_encoder")


def median_ms(compiled, feed: dict, runs: int = 30) -> float:
    request = compiled.create_infer_request()
    for _ in range(5):
        request.infer(feed)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        request.infer(feed)
        times.append(time.perf_counter() - began)
    return float(np.median(times) * 1e3)


def main() -> None:
    import nncf
    import openvino as ov

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = EngineFolder.open(default_engines_dir())
    graphs = folder.files("fp32")
    feeds = calibrate(folder.config, OnnxRuntimeBackend.from_engines(folder, "fp32"), DATA).feeds
    core = ov.Core()
    for stage in STAGES:
        model = core.read_model(graphs[stage])
        names = [i.get_any_name() for i in model.inputs]
        calibration = [{n: f[n] for n in names} for f in feeds[stage]]
        timed = max(calibration, key=lambda f: next(iter(f.values())).shape[1])  # the longest feed
        if stage == "video_encoder":  # 90 frames: a 6 s window at 15 fps
            reps = int(np.ceil(90 / timed["video"].shape[1]))
            timed = {n: np.concatenate([v] * reps, axis=1)[:, :90] for n, v in timed.items()}
        variants = {"OpenVINO defaults (FP32 graph)": core.compile_model(model, "CPU")}
        for preset in (nncf.QuantizationPreset.PERFORMANCE, nncf.QuantizationPreset.MIXED):
            quantised = nncf.quantize(model, nncf.Dataset(calibration), preset=preset,
                                      subset_size=len(calibration),
                                      model_type=nncf.ModelType.TRANSFORMER if stage == "text_encoder" else None)
            variants[f"NNCF INT8 {preset.value}"] = core.compile_model(quantised, "CPU")
        results: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, compiled in variants.items():
                results[name].append(median_ms(compiled, timed))
        shape = {n: v.shape for n, v in timed.items()}
        print(f"{stage} {shape}, {len(calibration)} calibration feeds:")
        for name, values in results.items():
            print(f"  {name}: {min(values):.2f} ms (min of {args.rounds} round medians)")


if __name__ == "__main__":
    main()
