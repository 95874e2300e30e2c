"""Parity the way Polygraphy does it: every backend against one saved FP32 PyTorch reference.

The comparison runs over the backend interface (`runtime.backends.base.Backend`), so ONNX Runtime
sessions of either precision and TensorRT plans are checked by the same code. Per stage, each backend
is fed the *reference* inputs of that stage (errors do not compound), and max / median / p99 absolute
error is reported per output. Then each backend runs the whole chain and its score is compared with
the reference's, counting Acc-2 decisions that flip.
Thresholds (issue 4): FP32 ONNX within 1e-4 + 1e-5·|reference| on every element of every output
(np.isclose's rule, Polygraphy's atol/rtol: an encoder whose outputs reach the hundreds carries float32
rounding of 1e-4 there, which an absolute bound alone would call drift); FP16 ONNX and plans: score ≤ 1e-2 and
no flipped decision (plans get the FP16 bound at any precision: TensorRT may use TF32 for FP32).
ONNX Runtime's CPU provider does not compute FP16 natively, so FP16 parity there does not prove a
TensorRT FP16 engine (DESIGN.md); the report names the provider of every backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from cmmsf.config import ModelConfig
from cmmsf.contracts import MODALITIES, STAGES
from cmmsf.sample_inputs import make_inputs
from cmmsf.inputs.spec import DATA_KEY
from cmmsf.inputs.text import encode
from cmmsf.runtime.backends.base import Backend

from .profiles import ShapeProfile

FP32_TOLERANCE = 1e-4
FP32_RTOL = 1e-5
FP16_SCORE_TOLERANCE = 1e-2
REAL_SENTENCES = ["i really loved this movie the acting was great",
                  "it was boring and way too long", "the plot is ok i guess"]


@dataclass
class OutputError:
    kind: str
    stage: str
    tensor: str
    case: str
    shape: tuple[int, ...]
    max_abs: float
    median_abs: float
    p99_abs: float
    max_excess: float = 0.0
    """Largest |got - ref| - FP32_RTOL·|ref| over the elements: ≤ FP32_TOLERANCE is within np.isclose."""
    ref_max_abs: float = 0.0


@dataclass
class ParityReport:
    providers: dict[str, str] = field(default_factory=dict)
    """Backend kind (fp32, fp16, plan) → the provider that actually ran it."""
    errors: list[OutputError] = field(default_factory=list)
    chained: dict[str, dict] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def worst(self, kind: str, stage: str) -> dict[str, float]:
        """Worst max/median/p99 of one backend kind's stage over all cases and outputs."""
        rows = [e for e in self.errors if e.kind == kind and e.stage == stage]
        return {k: max(getattr(e, k) for e in rows) for k in ("max_abs", "median_abs", "p99_abs")} if rows else {}

    def to_dict(self) -> dict:
        stages = {p: {s: self.worst(p, s) for s in STAGES} for p in self.providers}
        return {"passed": self.passed, "providers": self.providers, "tolerance": {
            "fp32_atol": FP32_TOLERANCE, "fp32_rtol": FP32_RTOL, "fp16_score_max_abs": FP16_SCORE_TOLERANCE},
            "stages": stages, "chained": self.chained, "failures": self.failures,
            "errors": [asdict(e) for e in self.errors]}


def _real_looking(config: ModelConfig, batch: int) -> dict[str, np.ndarray]:
    """Real tokenized sentences over random audio/video."""
    inputs = make_inputs(config, batch=batch, text_len=4, seed=7)
    ids, mask = encode([REAL_SENTENCES[i % len(REAL_SENTENCES)] for i in range(batch)],
                       config.text.backbone, config.text.max_len)
    inputs["input_ids"], inputs["text_mask"] = ids, mask
    return inputs


def with_absent(inputs: dict[str, np.ndarray], absent: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Mark modalities absent in some rows, as collate does: data zeroed, mask all False.

    A modality absent from every row shrinks to the one masked zero step collate gives it.
    """
    out = {k: v.copy() for k, v in inputs.items()}
    batch = len(out["input_ids"])
    for modality, rows in absent.items():
        data, mask = DATA_KEY[modality], f"{modality}_mask"
        if sorted(rows) == list(range(batch)):
            out[data], out[mask] = np.zeros_like(out[data][:, :1]), np.zeros_like(out[mask][:, :1])
        else:
            out[data][rows], out[mask][rows] = 0, False
    return out


def parity_cases(config: ModelConfig, profile: ShapeProfile) -> dict[str, dict[str, np.ndarray]]:
    """The profile's min and max shapes, a typical shape, padded batches, real sentences, and absent
    modalities: text only (how a text-only checkpoint always runs) and a batch mixing absences."""
    (b_min, b_opt, b_max), length = profile.batch, profile.length
    typical = {m: length(m)[1] for m in MODALITIES}
    top = {m: length(m)[2] for m in MODALITIES}
    rows = max(3, b_opt) if b_max >= 3 else b_max
    mixed = make_inputs(config, rows, typical["text"], typical["audio"], typical["video"], seed=6)
    cases = {
        "min": make_inputs(config, b_min, 1, 1, 1, seed=1, padded=False),
        "opt": make_inputs(config, b_opt, typical["text"], typical["audio"], typical["video"], seed=2,
                           padded=False),
        "padded": make_inputs(config, max(2, b_opt), typical["text"], typical["audio"], typical["video"],
                              seed=3),
        "max": make_inputs(config, b_max, top["text"], top["audio"], top["video"], seed=4),
        "real": _real_looking(config, min(3, b_max)),
        "text_only": with_absent(_real_looking(config, min(3, b_max)),
                                 {"audio": list(range(min(3, b_max))), "video": list(range(min(3, b_max)))}),
    }
    if rows >= 2:
        cases["mixed_absent"] = with_absent(mixed, {"video": [1], "audio": [rows - 1], "text": [rows - 1]})
    return cases


def error_stats(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float, float, float]:
    """max, median and p99 absolute error, the largest excess over the relative allowance, max |ref|."""
    ref64 = ref.astype(np.float64).reshape(-1)
    diff = np.abs(ref64 - got.astype(np.float64).reshape(-1))
    if not np.isfinite(diff).all():
        return (float("inf"),) * 4 + (float(np.abs(ref64).max()),)
    return (float(diff.max()), float(np.median(diff)), float(np.percentile(diff, 99)),
            float((diff - FP32_RTOL * np.abs(ref64)).max()), float(np.abs(ref64).max()))


def check_parity(reference: Backend, candidates: dict[str, Backend],
                 cases: dict[str, dict[str, np.ndarray]]) -> ParityReport:
    """candidates: kind (fp32, fp16, plan) → backend. Per-stage and chained checks on every case."""
    report = ParityReport(providers={kind: b.provider for kind, b in candidates.items()})
    refs = {case: reference.run(inputs) for case, inputs in cases.items()}
    for kind, backend in candidates.items():
        for case, ref in refs.items():
            for stage in STAGES:
                got = backend.run_stage(stage, ref)
                for name in STAGES[stage].output_names:
                    report.errors.append(OutputError(kind, stage, name, case, tuple(got[name].shape),
                                                     *error_stats(ref[name], got[name])))
        _check_chained(report, kind, backend, cases, refs)
        _judge(report, kind)
    return report


def _check_chained(report: ParityReport, kind: str, backend: Backend, cases: dict[str, dict[str, np.ndarray]],
                   refs: dict[str, dict[str, np.ndarray]]) -> None:
    errors, flips, total = [], 0, 0
    for case, inputs in cases.items():
        ref, got = refs[case]["score"], backend.run(inputs)["score"]
        errors.append(float(np.max(np.abs(ref - got))))
        flips += int(np.sum((ref >= 0) != (got >= 0)))
        total += len(ref)
    report.chained[kind] = {"score_max_abs": max(errors), "acc2_flips": flips, "clips": total}


def computes_in_fp32(kind: str) -> bool:
    """`fp32`, or `fp32 on openvino`: the FP32 graph computed in float32, by whichever backend."""
    return kind.split(" ")[0] == "fp32"


def tolerance(kind: str) -> float:
    """Chained score bound: FP32 compute is held to 1e-4; FP16 and BF16 compute and TensorRT plans to 1e-2."""
    return FP32_TOLERANCE if computes_in_fp32(kind) else FP16_SCORE_TOLERANCE


def _judge(report: ParityReport, kind: str) -> None:
    if computes_in_fp32(kind):
        for e in report.errors:
            if e.kind == kind and not e.max_excess <= FP32_TOLERANCE:
                report.failures.append(
                    f"{kind} {e.stage}.{e.tensor} on case '{e.case}' shape {e.shape}: max abs error "
                    f"{e.max_abs:.3g} (|ref| up to {e.ref_max_abs:.3g}) beyond {FP32_TOLERANCE:g} + "
                    f"{FP32_RTOL:g}·|ref|")
    chained, limit = report.chained[kind], tolerance(kind)
    if not chained["score_max_abs"] <= limit:
        drift = first_drifting_stage(report, kind)
        report.failures.append(f"{kind} chained score error {chained['score_max_abs']:.3g} > {limit:g}"
                               f" (first stage to drift: {drift})")
    if chained["acc2_flips"]:
        report.failures.append(f"{kind}: {chained['acc2_flips']} of {chained['clips']} Acc-2 decisions flip")


def first_drifting_stage(report: ParityReport, kind: str) -> str:
    """The earliest stage (pipeline order) over the kind's limit, else the one with the largest error."""
    worst = [(s, report.worst(kind, s).get("max_abs", 0.0)) for s in STAGES]
    limit = tolerance(kind)
    return next((s for s, err in worst if err > limit), max(worst, key=lambda x: x[1])[0])
