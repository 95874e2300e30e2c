"""`cmmsf-train`: fit, voice-stats, adapt-faces and eval. Each parses, calls and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cmmsf.inputs.errors import UsageError

from .apps import train_app
from .common import console, friendly
from .options import EvalSplit, Labels, Modalities, SourcesFile, TrainData, VoiceCheck
from .reports import report_rows


@train_app.command("fit")
@friendly
def train_fit(
    data: TrainData = ...,
    out: Path = typer.Option(Path("runs/fit"), help="run folder"),
    preset: Optional[str] = typer.Option(None, help="paper, edge or tiny [default: --init's model, else edge]"),
    variant: str = typer.Option("full", help="full, no-bilstm, no-mgf, cm-msf-i, cm-msf-ii, text-bert, text-lstm"),
    config: Optional[Path] = typer.Option(None, help="a config JSON instead of a preset"),
    recipe: str = typer.Option("edge", help="training recipe: edge, paper, or a JSON file (cmmsf/train/recipes/)"),
    labels: Optional[Path] = typer.Option(None, help="labels CSV for a clip folder"),
    epochs: Optional[int] = typer.Option(None, min=1, help="(default: the recipe's)"),
    batch_size: Optional[int] = typer.Option(None, min=1, help="(default: the recipe's)"),
    lr: Optional[float] = typer.Option(None, help="(default: the recipe's)"),
    loss: Optional[str] = typer.Option(None, help="l1 or mse (default: the recipe's)"),
    seed: int = typer.Option(0),
    seeds: int = typer.Option(1, min=1, help="train this many seeds and report mean ± std"),
    modality_dropout: Optional[float] = typer.Option(None, help="probability of masking a whole modality"),
    patience: Optional[int] = typer.Option(None, help="early stop after this many stale epochs (0 = never)"),
    init: Optional[str] = typer.Option(None, help="start from this checkpoint's weights (`default` or a folder)"),
    sources: Optional[Path] = typer.Option(None, help="emotion→sentiment mapping and splits "
                                           "(default: cmmsf/data/sources.json)"),
    select_data: Optional[list[Path]] = typer.Option(None, help="a source never trained on: its dev split picks "
                                                     "the checkpoint, its test split is reported (leave one "
                                                     "corpus out); repeatable"),
    fresh: Optional[list[str]] = typer.Option(None, help="a stage left freshly initialised when starting from "
                                              "--init, e.g. audio_encoder; repeatable"),
    select: Optional[str] = typer.Option(None, help="mae, valence3 or hap_neg (default: the recipe's)"),
) -> None:
    """Train on real data: checkpoint, metrics.json and train.log in the run folder (resumable)."""
    from cmmsf.config import ModelConfig, preset as make_preset, with_variant
    from cmmsf.model.checkpoint import resolve_checkpoint
    from cmmsf.train.trainer import TrainOptions, fit
    from cmmsf.runtime.report import metrics_table

    if config and preset:
        raise UsageError("give --config or --preset, not both")
    if config:
        base = ModelConfig.load(config)
    elif init and not preset:  # the model the weights belong to; a preset here would drop most of them
        base = ModelConfig.load(resolve_checkpoint(init) / "config.json")
    else:
        base = make_preset(preset or "edge")
    model_config = with_variant(base, variant)
    opts = TrainOptions.from_recipe(recipe, epochs=epochs, batch_size=batch_size, lr=lr, loss=loss, seed=seed,
                                    modality_dropout=modality_dropout, patience=patience, init=init,
                                    fresh=fresh or None, select=select)
    summary = fit(model_config, data, out, opts, seeds, labels, console, sources, select_data)
    means = {split: {k: v["mean"] for k, v in m.items()} for split, m in summary["summary"].items()}
    stds = {split: {k: v["std"] for k, v in m.items() if k != "n"} for split, m in summary["summary"].items()}
    console.print(f"mean ± std over {seeds} seed(s):")
    console.print(metrics_table(means, stds))
    console.print(f"run folder: {out}  (checkpoint: {out / ('seed_%d' % seed if seeds > 1 else '') / 'checkpoint'})")


@train_app.command("voice-stats")
@friendly
def train_voice_stats(
    data: list[Path] = typer.Option(..., help="the speech the checkpoint's voice was trained on (its train split "
                                    "is fitted, its dev split sets the bound); repeat for several sources"),
    checkpoint: str = typer.Option("default", help="`default` or a checkpoint folder: the statistics are written "
                                   "into it"),
    labels: Labels = None,
    sources: SourcesFile = None,
) -> None:
    """Fit which voices the checkpoint knows: a voice unlike them is left out at run time (absent, with why)."""
    from cmmsf.model.checkpoint import CONFIG, resolve_checkpoint
    from cmmsf.config import ModelConfig
    from cmmsf.train.voice_stats import fit_voice_statistics, write_voice_statistics

    folder = resolve_checkpoint(checkpoint)
    with console.status("reading the voices' front-end states…"):
        stats, report = fit_voice_statistics(ModelConfig.load(folder / CONFIG), data, labels, sources, console)
    path = write_voice_statistics(stats, folder)
    console.print(f"{report['train_voices']} training voices, {report['dev_voices']} dev voices; bound "
                  f"{report['bound']:.3g}: left out {report['train_left_out_pct']:.1f}% of train, "
                  f"{report['dev_left_out_pct']:.1f}% of dev")
    console.print(f"wrote {path} (rebuild engine folders of this checkpoint to carry it)")


@train_app.command("adapt-faces")
@friendly
def train_adapt_faces(
    data: list[Path] = typer.Option(..., help="faces-style folders (faces/, fer2013/): their train splits teach "
                                    "the backbone, their dev splits pick the epoch"),
    init: str = typer.Option("default", help="`default` or a checkpoint folder whose video backbone is `fer`"),
    out: Path = typer.Option(Path("runs/faces_adapted"), help="run folder: the checkpoint goes to OUT/checkpoint"),
    epochs: int = typer.Option(6, min=1),
    lr: float = typer.Option(3e-4, min=0.0),
    seed: int = typer.Option(0),
    sources: SourcesFile = None,
) -> None:
    """Adapt the FER2013 face backbone to the detector's crops (7 expressions, every class weighted alike),
    before `fit --recipe video_detected --init OUT/checkpoint` trains the video encoder on it."""
    from cmmsf.train.face_adapt import AdaptOptions, adapt_backbone

    report = adapt_backbone(init, data, out, AdaptOptions(epochs=epochs, lr=lr, seed=seed), console.print, sources)
    console.print(f"kept epoch {report['best_epoch']} of {epochs} (best mean dev 3-way valence) in "
                  f"{report['seconds']:.0f} s: {out / 'checkpoint'}")


@train_app.command("eval")
@friendly
def train_eval(
    data: TrainData = ...,
    checkpoint: str = typer.Option("default", help="`default` or a checkpoint folder"),
    split: EvalSplit = "test",
    labels: Labels = None,
    modalities: Modalities = None,
    sources: SourcesFile = None,
    gates: bool = typer.Option(True, help="exit 1 when a source misses its gate"),
    voice_check: VoiceCheck = True,
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the rows as JSON"),
) -> None:
    """MMSA metrics and valence accuracies per source and per modality subset, with the gates."""
    from cmmsf.model.checkpoint import load_checkpoint, resolve_checkpoint
    from cmmsf.evaluation.evaluator import evaluate_sources, parse_subsets
    from cmmsf.inputs.familiarity import load_voice_familiarity
    from cmmsf.evaluation.scoring import ModelScorer

    subsets = parse_subsets(modalities)
    voice = load_voice_familiarity(resolve_checkpoint(checkpoint)) if voice_check else None
    _, rows = evaluate_sources(ModelScorer(load_checkpoint(checkpoint), voice), data, split, labels, sources, subsets,
                               gates, console)
    report_rows(rows, f"{split} split, {checkpoint} (MMSA metrics; accuracies in %)", json_out, None)
