"""`cmmsf-run eval`: the evaluation of `cmmsf-train eval` (cmmsf/evaluation/evaluator.py), scored by the deployed
artifacts instead of the PyTorch model.

The same per-source, per-modality-subset table and gates for every data kind (clip folders, emotion
folders, transcripts, MMSA feature pickles): items are read as training and `infer` read them and batched
by the same `cmmsf.inputs.features.collate`. Also counts the Acc-2 decisions that differ from the PyTorch
checkpoint on the same inputs, the number that tells a user whether deployment (FP16 included) changed
any answer; that needs torch and the checkpoint, and is skipped with a note when either is missing (an
engine folder copied to a Jetson has neither).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console

from cmmsf.config import ModelConfig
from cmmsf.contracts import MODALITIES
from cmmsf.data.examples import Labelled
from cmmsf.evaluation.evaluator import SubsetRow, evaluate_sources
from cmmsf.inputs.familiarity import VoiceFamiliarity
from cmmsf.inputs.features import mask_untrained
from cmmsf.evaluation.metrics import regression_metrics

from .backends import load_backend
from .pipeline import Pipeline
from .report import metrics_table
from .settings import RunSettings


class PipelineScorer:
    """The deployed engines behind the evaluator's Scorer interface (cmmsf/evaluation/evaluator.py)."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    @property
    def config(self) -> ModelConfig:
        return self.pipeline.config

    @property
    def voice(self) -> VoiceFamiliarity | None:
        return self.pipeline.preprocessor.voice

    def scores(self, items: list[Labelled], modalities: tuple[str, ...] = MODALITIES) -> np.ndarray:
        spec = self.pipeline.preprocessor.spec
        plain = [it.sample(None) for it in items]  # what training's evaluation batches (photos, voices included)
        inputs = [mask_untrained(replace(x, arrays={m: a if m in modalities else None for m, a in x.arrays.items()},
                                         masked=list(x.masked)), spec) for x in plain]
        return self.pipeline.scores(inputs)


@dataclass(kw_only=True)
class EvalOptions:
    data: list[Path]
    settings: RunSettings
    split: str = "test"
    labels: Path | None = None
    modalities: dict[str, tuple[str, ...]] | None = None
    sources: Path | None = None
    gates: bool = True


def torch_reference_problem(pipeline: Pipeline) -> str | None:
    """Why no PyTorch comparison can run here, or None."""
    if pipeline.backend.name == "torch":
        return "the backend is torch itself"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    return pipeline.engines.checkpoint_problem()


def run_eval(opts: EvalOptions, console: Console) -> tuple[list[SubsetRow], dict]:
    """The per-source rows, and the summary over every item (metrics, backend, differences from PyTorch)."""
    pipeline = Pipeline.load(opts.settings)
    try:
        scorer = PipelineScorer(pipeline)
        items, rows = evaluate_sources(scorer, opts.data, opts.split, opts.labels, opts.sources, opts.modalities,
                                       opts.gates, console, opts.settings.face_crop, opts.settings.asr)
        truth = np.array([it.label for it in items])
        deployed = scorer.scores(items)
        backend = pipeline.backend
        metrics = regression_metrics(deployed, truth)
        summary = {**metrics, "backend": backend.name, "precision": backend.precision, "provider": backend.provider}
        table_rows = {f"{backend.label} ({backend.provider})": metrics}
        problem = torch_reference_problem(pipeline)
        if problem is None:
            with load_backend("torch", pipeline.engines) as torch_backend:
                reference = PipelineScorer(Pipeline(torch_backend, pipeline.engines)).scores(items)
            table_rows["torch fp32 reference"] = regression_metrics(reference, truth)
            summary["acc2_decisions_differing_from_torch"] = int(np.sum((reference >= 0) != (deployed >= 0)))
            summary["max_abs_score_difference"] = float(np.max(np.abs(reference - deployed)))
        console.print(metrics_table(table_rows))
        if problem is None:
            console.print(f"Acc-2 decisions differing from PyTorch: {summary['acc2_decisions_differing_from_torch']} "
                          f"of {len(items)} (max score difference {summary['max_abs_score_difference']:.2e})")
        else:
            console.print(f"[yellow]no comparison with PyTorch: {problem}[/]")
        return rows, summary
    finally:
        pipeline.close()
