"""`cmmsf-run eval`: the training metrics computed with the deployed artifacts.

Works for every front-end (clips, transcripts, MMSA feature pickles): items are batched by the same
`cmmsf.inputs.features.collate` as training and run through the one stage chain. Also counts the Acc-2
decisions that differ from the PyTorch checkpoint on the same inputs, the number that tells a user
whether deployment (FP16 included) changed any answer; that needs torch and the checkpoint, and is
skipped with a note when either is missing (an engine folder copied to a Jetson has neither).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from cmmsf.metrics import regression_metrics
from cmmsf.inputs.features import mask_untrained
from cmmsf.inputs.errors import DataError

from .backends import load_backend
from .pipeline import Pipeline
from .report import metrics_table
from .settings import RunSettings


@dataclass(kw_only=True)
class EvalOptions:
    data: Path
    settings: RunSettings
    split: str = "test"
    labels: Path | None = None
    json_out: Path | None = None


def torch_reference_problem(pipeline: Pipeline) -> str | None:
    """Why no PyTorch comparison can run here, or None."""
    if pipeline.backend.name == "torch":
        return "the backend is torch itself"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    return pipeline.engines.checkpoint_problem()


def run_eval(opts: EvalOptions, console: Console) -> dict:
    from cmmsf.data import load_dataset

    pipeline = Pipeline.load(opts.settings)
    try:
        config = pipeline.config
        items, skipped = load_dataset(opts.data, opts.split, config, opts.labels)
        if skipped.count:
            console.print(f"[yellow]{skipped.summary()}[/]")
        if not items:
            raise DataError(f"no usable rows in split {opts.split!r} of {opts.data}")
        spec = pipeline.preprocessor.spec
        inputs = [mask_untrained(item.inputs, spec) for item in items]  # the runtime's rule for clips
        truth = np.array([it.label for it in items])
        deployed = pipeline.scores(inputs)
        metrics = regression_metrics(deployed, truth)
        backend = pipeline.backend
        result = {**metrics, "backend": backend.name, "precision": backend.precision, "provider": backend.provider}
        rows = {f"{backend.label} ({backend.provider})": metrics}
        problem = torch_reference_problem(pipeline)
        if problem is None:
            with load_backend("torch", pipeline.engines) as torch_backend:
                reference = Pipeline(torch_backend, pipeline.engines).scores(inputs)
            rows["torch fp32 reference"] = regression_metrics(reference, truth)
            result["acc2_decisions_differing_from_torch"] = int(np.sum((reference >= 0) != (deployed >= 0)))
            result["max_abs_score_difference"] = float(np.max(np.abs(reference - deployed)))
        console.print(metrics_table(rows))
        if problem is None:
            console.print(f"Acc-2 decisions differing from PyTorch: {result['acc2_decisions_differing_from_torch']} "
                          f"of {len(items)} (max score difference {result['max_abs_score_difference']:.2e})")
        else:
            console.print(f"[yellow]no comparison with PyTorch: {problem}[/]")
        if opts.json_out:
            opts.json_out.write_text(json.dumps(result, indent=1) + "\n")
        return result
    finally:
        pipeline.close()
