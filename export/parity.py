"""Parity the way Polygraphy does it: every exported graph against one FP32 PyTorch reference.

Per stage, each graph is fed the *reference* inputs of that stage (errors do not compound), and
max / median / p99 absolute error is reported per output. Then the five graphs are chained and the
final score compared with the whole PyTorch model, counting Acc-2 decisions that flip.
Thresholds (issue 4): FP32 ≤ 1e-4 max abs on every output; FP16 score ≤ 1e-2 and no flipped decision.
ONNX Runtime's CPU provider does not compute FP16 natively, so FP16 parity here does not prove a
TensorRT FP16 engine (DESIGN.md); the report says which provider ran.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cmmsf.config import ModelConfig
from cmmsf.contracts import STAGES
from cmmsf.model import CMMSF
from cmmsf.sample_inputs import make_inputs
from inputs.text import encode
from runtime.backends.base import conform
from runtime.backends.onnxruntime import OrtSession

from .profiles import ShapeProfile

FP32_TOLERANCE = 1e-4
FP16_SCORE_TOLERANCE = 1e-2
REAL_SENTENCES = ["i really loved this movie the acting was great",
                  "it was boring and way too long", "the plot is ok i guess"]


@dataclass
class OutputError:
    precision: str
    stage: str
    tensor: str
    case: str
    shape: tuple[int, ...]
    max_abs: float
    median_abs: float
    p99_abs: float


@dataclass
class ParityReport:
    provider: str
    errors: list[OutputError] = field(default_factory=list)
    chained: dict[str, dict] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def worst(self, precision: str, stage: str) -> dict[str, float]:
        """Worst max/median/p99 of a stage over all cases and outputs."""
        rows = [e for e in self.errors if e.precision == precision and e.stage == stage]
        return {k: max(getattr(e, k) for e in rows) for k in ("max_abs", "median_abs", "p99_abs")} if rows else {}

    def to_dict(self) -> dict:
        stages = {p: {s: self.worst(p, s) for s in STAGES} for p in sorted({e.precision for e in self.errors})}
        return {"passed": self.passed, "provider": self.provider, "tolerance": {
            "fp32_max_abs": FP32_TOLERANCE, "fp16_score_max_abs": FP16_SCORE_TOLERANCE},
            "stages": stages, "chained": self.chained, "failures": self.failures,
            "errors": [asdict(e) for e in self.errors]}


def _real_looking(config: ModelConfig, batch: int) -> dict[str, np.ndarray]:
    """Real tokenized sentences (when the backbone's tokenizer is here) over random audio/video."""
    inputs = make_inputs(config, batch=batch, text_len=4, seed=7)
    ids, mask = encode([REAL_SENTENCES[i % len(REAL_SENTENCES)] for i in range(batch)],
                       config.text.backbone, config.text.max_len)
    inputs["input_ids"], inputs["text_mask"] = ids, mask
    return inputs


def parity_cases(config: ModelConfig, profile: ShapeProfile) -> dict[str, dict[str, np.ndarray]]:
    """The profile's min and max shapes, a typical shape, padded batches and real sentences."""
    (b_min, b_opt, b_max), length = profile.batch, profile.length
    typical = {m: length(m)[1] for m in ("text", "audio", "video")}
    top = {m: length(m)[2] for m in ("text", "audio", "video")}
    return {
        "min": make_inputs(config, b_min, 1, 1, 1, seed=1, padded=False),
        "opt": make_inputs(config, b_opt, typical["text"], typical["audio"], typical["video"], seed=2,
                           padded=False),
        "padded": make_inputs(config, max(2, b_opt), typical["text"], typical["audio"], typical["video"],
                              seed=3),
        "max": make_inputs(config, b_max, top["text"], top["audio"], top["video"], seed=4),
        "real": _real_looking(config, min(3, b_max)),
    }


def reference(model: CMMSF, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every stage's FP32 PyTorch outputs for one case, as numpy."""
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
    with torch.no_grad():
        for stage in STAGES:
            tensors.update(model.run_stage(stage, tensors))
    return {k: v.numpy() for k, v in tensors.items()}


def _stats(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float]:
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64)).reshape(-1)
    if not np.isfinite(diff).all():
        return float("inf"), float("inf"), float("inf")
    return float(diff.max()), float(np.median(diff)), float(np.percentile(diff, 99))


def check_parity(model: CMMSF, graphs: dict[str, dict[str, Path]],
                 cases: dict[str, dict[str, np.ndarray]]) -> ParityReport:
    """graphs: precision → stage → ONNX path. Runs per-stage and chained checks on every case."""
    sessions = {p: {s: OrtSession(path) for s, path in stages.items()} for p, stages in graphs.items()}
    report = ParityReport(provider=next(iter(next(iter(sessions.values())).values())).provider)
    refs = {case: reference(model, inputs) for case, inputs in cases.items()}
    for precision, stage_sessions in sessions.items():
        for case, ref in refs.items():
            for stage, session in stage_sessions.items():
                got = session.run(conform(stage, ref))
                for name in STAGES[stage].output_names:
                    report.errors.append(OutputError(precision, stage, name, case, tuple(got[name].shape),
                                                     *_stats(ref[name], got[name])))
        _check_chained(report, precision, stage_sessions, cases, refs)
        _judge(report, precision)
    return report


def _check_chained(report: ParityReport, precision: str, sessions: dict[str, OrtSession],
                   cases: dict[str, dict[str, np.ndarray]], refs: dict[str, dict[str, np.ndarray]]) -> None:
    errors, flips, total = [], 0, 0
    for case, inputs in cases.items():
        tensors = dict(inputs)
        for stage, session in sessions.items():
            tensors.update(session.run(conform(stage, tensors)))
        ref, got = refs[case]["score"], tensors["score"]
        errors.append(float(np.max(np.abs(ref - got))))
        flips += int(np.sum((ref >= 0) != (got >= 0)))
        total += len(ref)
    report.chained[precision] = {"score_max_abs": max(errors), "acc2_flips": flips, "clips": total}


def _judge(report: ParityReport, precision: str) -> None:
    if precision == "fp32":
        for e in report.errors:
            if e.precision == "fp32" and not e.max_abs <= FP32_TOLERANCE:
                report.failures.append(
                    f"fp32 {e.stage}.{e.tensor} on case '{e.case}' shape {e.shape}: max abs error "
                    f"{e.max_abs:.3g} > {FP32_TOLERANCE:g}")
    chained = report.chained[precision]
    limit = FP32_TOLERANCE if precision == "fp32" else FP16_SCORE_TOLERANCE
    if not chained["score_max_abs"] <= limit:
        drift = first_drifting_stage(report, precision)
        report.failures.append(f"{precision} chained score error {chained['score_max_abs']:.3g} > {limit:g}"
                               f" (first stage to drift: {drift})")
    if chained["acc2_flips"]:
        report.failures.append(f"{precision}: {chained['acc2_flips']} of {chained['clips']} Acc-2 decisions flip")


def first_drifting_stage(report: ParityReport, precision: str) -> str:
    """The earliest stage (pipeline order) over the precision's limit, else the one with the largest error."""
    worst = [(s, report.worst(precision, s).get("max_abs", 0.0)) for s in STAGES]
    limit = FP32_TOLERANCE if precision == "fp32" else FP16_SCORE_TOLERANCE
    return next((s for s, err in worst if err > limit), max(worst, key=lambda x: x[1])[0])
