"""`cmmsf-run eval`: the training metrics computed with the deployed artifacts.

Also counts the Acc-2 decisions that differ from the PyTorch checkpoint on the same inputs: the number
that tells a user whether deployment changed any answer. That comparison needs torch (the reference),
imported only here and only when it is installed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from rich.console import Console

from cmmsf.config import ModelConfig
from cmmsf.metrics import regression_metrics

from inputs.features import collate, mask_untrained

from .pipeline import Pipeline
from .report import metrics_table


def batch_scores(pipeline: Pipeline, items: list, batch_size: int = 32) -> np.ndarray:
    """Scores of labelled items, run in batches through the pipeline's backend."""
    chunks = [items[i: i + batch_size] for i in range(0, len(items), batch_size)]
    return np.concatenate([pipeline.run_batch(collate([it.inputs for it in c], pipeline.config.input_spec())).outputs["score"]
                           for c in chunks])


def run_eval(data: Path, engines: Path, split: str, labels: Path | None, backend: str,
             json_out: Path | None, console: Console) -> dict:
    from cmmsf.data import load_dataset

    pipeline = Pipeline.load(engines, backend)
    config: ModelConfig = pipeline.config
    items, skipped = load_dataset(data, split, config, labels)
    if skipped.count:
        console.print(f"[yellow]{skipped.summary()}[/]")
    if not items:
        raise ValueError(f"no usable rows in split {split!r} of {data}")
    for item in items:  # the same rule the runtime applies to clips: untrained modalities are masked
        mask_untrained(item.inputs, config.input_spec())
    truth = np.array([it.label for it in items])
    deployed = batch_scores(pipeline, items)
    metrics = regression_metrics(deployed, truth)
    result = {**metrics, "backend": pipeline.backend.name, "provider": pipeline.backend.provider}
    rows = {f"{pipeline.backend.name} ({pipeline.backend.provider})": metrics}
    if importlib.util.find_spec("torch") is not None and pipeline.backend.name != "torch":
        from .backends.torch_ref import TorchBackend

        reference = batch_scores(Pipeline(TorchBackend(engines), config, engines), items)
        rows["torch reference"] = regression_metrics(reference, truth)
        result["acc2_decisions_differing_from_torch"] = int(np.sum((reference >= 0) != (deployed >= 0)))
        result["max_abs_score_difference"] = float(np.max(np.abs(reference - deployed)))
    console.print(metrics_table(rows))
    if "acc2_decisions_differing_from_torch" in result:
        console.print(f"Acc-2 decisions differing from PyTorch: {result['acc2_decisions_differing_from_torch']} "
                      f"of {len(items)} (max score difference {result['max_abs_score_difference']:.2e})")
    if json_out:
        json_out.write_text(json.dumps(result, indent=1) + "\n")
    pipeline.close()
    return result
