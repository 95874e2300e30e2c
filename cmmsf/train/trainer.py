"""`cmmsf-train fit` and `eval`: training runs driven by a recipe file, measured with MMSA's metrics.

A recipe is data (cmmsf/train/recipes/*.json, each with the reasoning behind its numbers): `paper` is §4.2
(Adam at 1e-5, batch 32, 100 epochs, decay on plateau, nothing the paper does not name); `edge` is what
trained the shipped checkpoint on CPU (AdamW, a higher learning rate for new layers, clipping, early
stopping, an EMA of the weights, modality dropout). Both train on an L1 loss on the score plus a small
cross-entropy on the 7 classes (eq 22), and select the checkpoint with the best valid MAE (a recipe's
`select` can name another metric). Runs are resumable (`last/` holds model, optimiser and RNG state every
epoch) and deterministic on CPU for a fixed seed.
"""

from __future__ import annotations

import json
import math
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pydantic import with_config

from cmmsf.inputs.errors import DataError, UsageError
from cmmsf.validation import STRICT, FileFieldError, validated

from cmmsf.model.checkpoint import load_checkpoint, save_checkpoint
from cmmsf.config import ModelConfig
from cmmsf.contracts import ENCODER_OF, MODALITIES, StageName
from cmmsf.data.datasets import by_source, load_splits, make_batch
from cmmsf.evaluation.evaluator import emotion_readings
from cmmsf.data.examples import Labelled
from cmmsf.evaluation.scoring import predict
from cmmsf.model.fer_backbone import FerFrameEncoder
from cmmsf.evaluation.metrics import regression_metrics, valence_classes, valence_metrics
from cmmsf.model.network import CMMSF, build_model
from cmmsf.data.sources import LOADERS as EMOTION_LOADERS

RECIPES = Path(__file__).resolve().parent / "recipes"


@with_config(STRICT)
@dataclass
class TrainOptions:
    """One run's training settings; defaults are the `edge` recipe (cmmsf/train/recipes/edge.json)."""

    epochs: int = 20
    batch_size: int = 32
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = 5e-4
    backbone_lr: float = 3e-5
    """For the fine-tuned layers of the pretrained text backbone."""
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    """Clip the gradient norm to this (0 = off)."""
    loss: Literal["l1", "mse"] = "l1"
    ce_weight: float = 0.1
    readout_balance: float = 0.0
    """With loss mse: the score is read as a class at ±this (0.5 for label7); scale the class-balance weights
    of emotion sources so that the read class, not the mean, is balanced (0 = off). See `readout_weights`."""
    modality_dropout: float = 0.15
    select: Literal["mae", "valence3", "hap_neg"] = "mae"
    """What picks the checkpoint, stops early and decays the rate: `mae` (mean over sources of the valid MAE),
    `valence3` (mean over sources of the valid 3-way valence balanced accuracy, what the face gate reads) or
    `hap_neg` (mean over the sources that act happy and negative emotions of the sign's balanced accuracy,
    the voice target judged across corpora; other sources are left out of it)."""
    patience: int = 5
    """Stop after this many epochs without a better valid selection metric (0 = never stop early)."""
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    """Learning-rate decay on plateau of the selection metric: multiply by factor after this many stale epochs."""
    ema_decay: float = 0.99
    """Evaluate and save an exponential moving average of the weights (0 = off)."""
    seed: int = 0
    threads: int | None = None
    init: str | None = None
    """Start from this checkpoint's weights (`default` or a folder) instead of fresh ones."""
    freeze: list[StageName] = field(default_factory=list)
    """Stages (contracts.STAGES names) whose weights stay as initialised, e.g. the text encoder."""
    fresh: list[StageName] = field(default_factory=list)
    """Stages left freshly initialised when starting from `init`: a leave-one-corpus-out run must not start
    from an audio encoder that already heard the corpus it is tested on."""

    @classmethod
    def from_recipe(cls, recipe: str | Path, **overrides) -> "TrainOptions":
        """A recipe by name (`edge`, `paper`) or JSON path; keys starting with `_` are comments."""
        path = RECIPES / f"{recipe}.json" if (RECIPES / f"{recipe}.json").is_file() else Path(recipe)
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in RECIPES.glob("*.json")))
            raise UsageError(f"unknown recipe {recipe!r}: name one of {names} or a JSON file")
        values = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
        # fields, types and choices by pydantic (cmmsf/validation.py), the file's name in the error line
        opts = validated(cls, {**values, **{k: v for k, v in overrides.items() if v is not None}}, f"recipe {path}")
        if opts.fresh and not opts.init:
            raise FileFieldError(f"fresh names stages to leave uninitialised from `init`; set init (recipe {path})")
        if opts.readout_balance and opts.loss != "mse":
            raise FileFieldError(f"readout_balance corrects weighted MSE; with loss l1 leave it at 0 (recipe {path})")
        return opts


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def to_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def drop_modalities(batch: dict[str, np.ndarray], rate: float, rng: np.random.Generator) -> None:
    """Mask whole present modalities per row with probability `rate`, always keeping one."""
    if rate <= 0:
        return
    present = np.stack([batch[f"{m}_mask"].any(axis=1) for m in MODALITIES], axis=1)
    drop = (rng.random(present.shape) < rate) & present
    all_gone = (present & ~drop).sum(axis=1) == 0
    drop[all_gone] = False
    for j, m in enumerate(MODALITIES):
        batch[f"{m}_mask"][drop[:, j]] = False


def evaluate(model: CMMSF, items: list[Labelled], modalities: tuple[str, ...] = MODALITIES) -> dict:
    labels = np.array([it.label for it in items])
    return regression_metrics(predict(model, items, modalities=modalities), labels)


SELECTION_METRICS = {"mae": "valid MAE", "valence3": "valid valence-3 error", "hap_neg": "valid happy/negative error"}
"""Each `select` choice and how the log names it; both are read so that lower is better."""


def selection_metric(model: CMMSF, valid: list[Labelled], select: str = "mae") -> tuple[float, dict[str, float]]:
    """Mean over sources of each source's valid metric (a big source must not hide a small one), and each.
    Accuracies are read as 100 − balanced accuracy, so that lower is better for all."""
    per_source = {}
    for name, group in by_source(valid).items():
        pred, labels = predict(model, group), np.array([it.label for it in group])
        if select == "mae":
            per_source[name] = regression_metrics(pred, labels)["mae"]
        elif select == "valence3":
            per_source[name] = 100.0 - valence_metrics(pred, labels)["valence3_bal"]
        elif not math.isnan(reading := emotion_readings(group, pred)["happy_vs_negative_bal"]):
            per_source[name] = 100.0 - reading
    if not per_source:
        raise DataError("select hap_neg needs a valid source with happy and negative voices (RAVDESS, EmoDB)")
    return float(np.mean(list(per_source.values()))), per_source


def _optimizer(model: CMMSF, opts: TrainOptions) -> torch.optim.Optimizer:
    backbone = [p for n, p in model.named_parameters() if p.requires_grad and ".bert." in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and ".bert." not in n]
    groups = [{"params": rest, "lr": opts.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": opts.backbone_lr})
    optimizer = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[opts.optimizer]
    return optimizer(groups, weight_decay=opts.weight_decay)


def _loss(out: dict[str, torch.Tensor], labels: torch.Tensor, weights: torch.Tensor, opts: TrainOptions
          ) -> torch.Tensor:
    """Per-example L1 (or MSE) on the score + ce_weight × cross-entropy on the 7 classes, weighted."""
    error = out["score"] - labels
    score_loss = error.abs() if opts.loss == "l1" else error.square()
    classes = (torch.round(labels.clamp(-3, 3)) + 3).long()
    ce = torch.nn.functional.cross_entropy(out["logits"], classes, reduction="none")
    return ((score_loss + opts.ce_weight * ce) * weights).sum() / weights.sum()


def readout_weights(train: list[Labelled], threshold: float) -> list[Labelled]:
    """Emotion examples' weights × threshold / (|label| − threshold) where the label reads as non-zero.

    Why: weighted MSE fits the weighted mean of the targets, and the class is read where that mean crosses
    ±threshold. Between a class at target t and neutral at 0, the mean crosses when w_t·p_t·(|t| − threshold)
    > threshold·w_0·p_0, so a target at 2 wins with a third of the weight a balanced decision would give it:
    neutral faces were read as negative. This factor cancels that bias; L1 (a weighted median) has none."""
    reads_nonzero = valence_classes([item.label for item in train]) != 0
    return [replace(item, weight=item.weight * threshold / (abs(item.label) - threshold))
            if item.source in EMOTION_LOADERS and nonzero and abs(item.label) > threshold else item
            for item, nonzero in zip(train, reads_nonzero)]


def grouped_names(names: list[str], depth: int = 3) -> str:
    """`a.b.c.*` (count) per prefix of `depth` parts: a swapped backbone must not log 90 tensor names."""
    groups: dict[str, int] = {}
    for name in names:
        parts = name.split(".")
        key = ".".join(parts[:depth]) + (".*" if len(parts) > depth else "")
        groups[key] = groups.get(key, 0) + 1
    return ", ".join(f"{k} ({n})" if k.endswith("*") else k for k, n in groups.items())


def init_from(model: CMMSF, source: CMMSF, keep_fresh: tuple[str, ...] = ()) -> list[str]:
    """Copy every tensor of `source` whose name and shape `model` shares, except those of the stages in
    `keep_fresh`; return the names left fresh (e.g. the audio encoder's input layer when the front-end
    changes from log-mel to Whisper states)."""
    own = model.state_dict()
    theirs = {k: v for k, v in source.state_dict().items() if k.split(".")[0] not in keep_fresh}
    fresh = sorted(k for k in own if k not in theirs or theirs[k].shape != own[k].shape)
    model.load_state_dict({k: v for k, v in theirs.items() if k in own and v.shape == own[k].shape}, strict=False)
    return fresh


def fit_audio_statistics(model: CMMSF, train: list[Labelled]) -> int:
    """Set the audio Standardize buffers from every audio step of the training examples that have audio.
    A source's repeats (`train_repeat`) are one clip: each is read once."""
    unique = {id(it.maker) if it.maker is not None else id(it): it for it in train}.values()
    steps = [a for it in unique if "audio" in it.modalities and (a := it.sample().arrays.get("audio")) is not None]
    if not steps:
        raise DataError("audio.standardize is on but no training example has audio")
    stacked = torch.from_numpy(np.concatenate(steps))
    model.audio_encoder.standardize.fit_statistics(stacked)
    return len(stacked)


@contextmanager
def encoders_resting(model: CMMSF, batch: dict[str, np.ndarray]):
    """Eval mode, for one batch, for the encoders of modalities no row of it has.

    Their input is one masked zero step per row: in train mode the video ResNet's BatchNorm would
    learn the statistics of those zeros (a batch of transcripts or voices says nothing about faces)
    and the running statistics used at run time would swing with the mix of sources."""
    idle = {ENCODER_OF[m]: model.stage(ENCODER_OF[m]).training for m in MODALITIES if not batch[f"{m}_mask"].any()}
    for name in idle:
        model.stage(name).eval()
    try:
        yield
    finally:
        for name, was_training in idle.items():
            model.stage(name).train(was_training)


def batches(train: list[Labelled], rng: np.random.Generator, size: int) -> list[list[Labelled]]:
    """Shuffled batches, each from one source: a mixed batch would pad every row to every modality
    (32 face clips through the text and audio encoders too), several times the cost on CPU.
    With one source this is the plain shuffled order."""
    order = rng.permutation(len(train))
    groups: dict[str, list[Labelled]] = {}
    for i in order:
        groups.setdefault(train[i].source, []).append(train[i])
    chunks = [g[start: start + size] for g in groups.values() for start in range(0, len(g), size)]
    if len(groups) > 1:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    return chunks


class Trainer:
    """One seed's run folder: checkpoint/ (best on valid), last/ (resume state), metrics.json, train.log."""

    def __init__(self, config: ModelConfig, run: Path, opts: TrainOptions, console: Console):
        self.config, self.run, self.opts, self.console = config, Path(run), opts, console
        self.run.mkdir(parents=True, exist_ok=True)
        self.log = open(self.run / "train.log", "a", encoding="utf-8")

    def say(self, message: str) -> None:
        self.console.print(message)
        self.log.write(message + "\n")
        self.log.flush()

    def fit(self, train: list[Labelled], valid: list[Labelled]) -> CMMSF:
        opts = self.opts
        if opts.threads:
            torch.set_num_threads(opts.threads)
        if opts.readout_balance > 0:
            train = readout_weights(train, opts.readout_balance)
        seed_everything(opts.seed)
        model = build_model(self.config)
        fresh: list[str] = []
        if opts.init:
            fresh = init_from(model, load_checkpoint(opts.init), tuple(opts.fresh))
            self.say(f"initialised from {opts.init}"
                     + (f"; new (its shape differs): {grouped_names(fresh)}" if fresh else ""))
        frames = getattr(model.video_encoder, "cnn", None)
        if isinstance(frames, FerFrameEncoder) and (not opts.init or any(".cnn.backbone." in k for k in fresh)):
            self.say(f"video backbone: the FER2013 mini-Xception of {frames.load_pretrained()} (frozen)")
        if model.audio_encoder.standardize is not None and (not opts.init or any("standardize" in k for k in fresh)):
            count = fit_audio_statistics(model, train)
            self.say(f"audio standardised by the statistics of {count} training steps")
        for name in opts.freeze:
            model.stage(name).requires_grad_(False)
        optimizer = _optimizer(model, opts)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=opts.plateau_factor,
                                                               patience=opts.plateau_patience)
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(opts.ema_decay), use_buffers=True)
                    if opts.ema_decay > 0 else None)
        state = {"epoch": 0, "best": math.inf, "best_epoch": -1, "stale": 0}
        state = self._resume(model, optimizer, scheduler, state)
        rng = np.random.default_rng(opts.seed + 1000 * state["epoch"])
        for epoch in range(state["epoch"], opts.epochs):
            if opts.patience and state["stale"] >= opts.patience:
                break
            loss = self._epoch(model, optimizer, train, rng, epoch)
            evaluated = self.ema.module if self.ema is not None else model
            valid_metric, per_source = selection_metric(evaluated, valid, opts.select)
            scheduler.step(valid_metric)
            improved = valid_metric < state["best"]
            if improved:
                state.update(best=valid_metric, best_epoch=epoch, stale=0)
                save_checkpoint(evaluated, self.run / "checkpoint")
            else:
                state["stale"] += 1
            state["epoch"] = epoch + 1
            self._save_last(model, optimizer, scheduler, state)
            sources = "  ".join(f"{k} {v:.4f}" for k, v in per_source.items()) if len(per_source) > 1 else ""
            metric = SELECTION_METRICS[opts.select]
            self.say(f"epoch {epoch + 1:3d}  loss {loss:.4f}  {metric} {valid_metric:.4f}  {sources}"
                     + ("  *best*" if improved else ""))
        return load_checkpoint(self.run / "checkpoint")

    def _epoch(self, model: CMMSF, optimizer, train: list[Labelled], rng: np.random.Generator, epoch: int) -> float:
        model.train()
        for m in MODALITIES:  # an encoder that sees no data must not learn BatchNorm statistics of padding
            if m not in self.config.trained_modalities:
                model.stage(ENCODER_OF[m]).eval()
        for name in self.opts.freeze:  # nor may a frozen one, and its dropout stays off
            model.stage(name).eval()
        chunks = batches(train, rng, self.opts.batch_size)
        total, count = 0.0, 0
        columns = (TextColumn(f"epoch {epoch + 1}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("loss {task.fields[loss]:.4f}"))
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task("train", total=len(train), loss=0.0)
            for chunk in chunks:
                batch, labels = make_batch(chunk, self.config, rng)
                drop_modalities(batch, self.opts.modality_dropout, rng)
                weights = torch.tensor([it.weight for it in chunk], dtype=torch.float32)
                with encoders_resting(model, batch):
                    out = model(to_tensors(batch))
                loss = _loss(out, torch.from_numpy(labels), weights, self.opts)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.opts.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), self.opts.grad_clip)
                optimizer.step()
                if self.ema is not None:
                    self.ema.update_parameters(model)
                total, count = total + float(loss.detach()) * len(chunk), count + len(chunk)
                progress.update(task, advance=len(chunk), loss=total / count)
        return total / max(count, 1)

    def _save_last(self, model, optimizer, scheduler, state: dict) -> None:
        last = self.run / "last"
        last.mkdir(exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(last / "model.safetensors"))
        if self.ema is not None:
            save_file({k: v.contiguous() for k, v in self.ema.state_dict().items()}, str(last / "ema.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, last / "optimizer.pt")
        (last / "state.json").write_text(json.dumps({**state, "options": asdict(self.opts)}, indent=1))

    def _resume(self, model, optimizer, scheduler, state: dict) -> dict:
        last = self.run / "last"
        if not (last / "state.json").is_file():
            return state
        saved_model, current = load_file(str(last / "model.safetensors")), model.state_dict()
        if set(saved_model) != set(current) or any(saved_model[k].shape != v.shape for k, v in current.items()):
            raise UsageError(f"{last} holds the training state of another model than this command's "
                             "(--config/--preset/--init differ from the run that wrote it): give the same ones, "
                             "or another --out")
        model.load_state_dict(saved_model)
        if self.ema is not None:
            self.ema.load_state_dict(load_file(str(last / "ema.safetensors")))
        saved = torch.load(last / "optimizer.pt", weights_only=True)  # our own file; still no pickles run
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        state = {k: v for k, v in json.loads((last / "state.json").read_text()).items() if k != "options"}
        metric = SELECTION_METRICS[self.opts.select]
        self.say(f"resuming after epoch {state['epoch']} (best {metric} {state['best']:.4f})")
        return state


def fit(config: ModelConfig, data: Path | list[Path], out: Path, opts: TrainOptions, seeds: int = 1,
        labels: Path | None = None, console: Console | None = None, sources_file: Path | None = None,
        select_data: list[Path] | None = None) -> dict:
    """Train `seeds` runs (seed, seed+1, …) on one or several data paths; returns test metrics per seed
    (and per source when there are several) and mean ± std. `select_data` sources are never trained on:
    their dev split joins the selection and their test split the report (leave one corpus out)."""
    console = console or Console()
    start = time.perf_counter()
    splits = load_splits(data, config, labels, sources_file, console)
    if select_data:
        held_out = load_splits(select_data, config, None, sources_file, console, splits=("dev", "test"))
        splits["dev"] += held_out["dev"]
        splits["test"] += held_out["test"]
    if not splits["train"] or not splits["dev"]:
        raise DataError(f"{data} has {len(splits['train'])} train and {len(splits['dev'])} dev rows; need both")
    console.print("data: " + ", ".join(
        f"{split} {len(items)}" + (f" ({', '.join(f'{k} {len(v)}' for k, v in by_source(items).items())})"
                                    if len(by_source(items)) > 1 else "")
        for split, items in splits.items()))
    per_seed = []
    for k in range(seeds):
        seed_opts = TrainOptions(**{**asdict(opts), "seed": opts.seed + k})
        run = Path(out) / (f"seed_{seed_opts.seed}" if seeds > 1 else "")
        model = Trainer(config, run, seed_opts, console).fit(splits["train"], splits["dev"])
        result: dict = {"seed": seed_opts.seed}
        for split in ("dev", "test"):
            if splits[split]:
                result[split] = evaluate(model, splits[split])
                groups = by_source(splits[split])
                if len(groups) > 1:
                    result.setdefault("by_source", {})[split] = {k: evaluate(model, v) for k, v in groups.items()}
        (run / "metrics.json").write_text(json.dumps(result, indent=1))
        per_seed.append(result)
    summary = {"seeds": per_seed, "summary": summarise(per_seed), "seconds": round(time.perf_counter() - start, 1)}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "metrics.json").write_text(json.dumps(summary, indent=1))
    return summary


def summarise(per_seed: list[dict]) -> dict:
    """Mean and std over seeds of every metric, per split."""
    out = {}
    for split in ("dev", "test"):
        rows = [r[split] for r in per_seed if split in r]
        if rows:
            out[split] = {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))}
                          for k in rows[0]}
    return out
