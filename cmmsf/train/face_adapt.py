"""Adapt the FER2013 mini-Xception to faces as the detector crops them, before the video encoder learns on it.

Why: the backbone is frozen while the video encoder trains, and frozen it reads faces the way FER2013's
own 48×48 crops showed them. On the detector's crops of faces/ (press photos) and FER2013 its features
serve one source at the other's cost: a class-balanced linear probe trained on both reads faces/ test
people at 70.0-71.5 (3-way valence, balanced) and FER2013's test bucket at 76.5-76.8; trained on faces/
alone, faces/ reads 72.6 and FER2013 66.6. A few epochs of its own task (7 expressions, cross-entropy)
on both sources' crops, every class of every source given the same weight, move the features where both
are read: the same probe then reads faces/ at 72.2-75.0 and FER2013 at 77.2-78.5.

The step trains the backbone alone (its BatchNorm statistics included) on the training split's crops,
each drawn jittered and mirrored as StillFace draws a training clip, and keeps the epoch whose mean dev
3-way valence over the sources is best (read from the expression probabilities: happy; neutral and
surprise; the rest). The checkpoint it writes is its input with the backbone's tensors replaced, ready
for the `video_detected` recipe to train the video encoder on top (`cmmsf-train fit --init`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from cmmsf.model.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from cmmsf.data.examples import Skipped, source_name
from cmmsf.model.fer_backbone import FerFrameEncoder
from cmmsf.inputs.errors import CmmsfError
from cmmsf.inputs.video import frames_to_input
from cmmsf.model.network import CMMSF
from cmmsf.evaluation.metrics import balanced_accuracy
from cmmsf.data.sources import StillFace, class_balance, load_faces, load_sources_config, source_kind

EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The mini-Xception's output order (FER2013's label ids)."""
EXPRESSION_OF = {"angry": 0, "anger": 0, "disgust": 1, "contempt": 1, "fear": 2, "fearful": 2, "happy": 3,
                 "happiness": 3, "sad": 4, "sadness": 4, "surprise": 5, "surprised": 5, "neutral": 6}
"""Every face emotion of faces/ and FER2013 as one of the backbone's seven (contempt is closest to disgust)."""
VALENCE_OF_EXPRESSION = np.array([-1, -1, -1, 1, -1, 0, 0])
"""3-way valence as sources.json reads the emotions: happy positive, neutral and surprise 0, the rest negative."""
REPORT = "face_adaptation.json"


class FaceAdaptError(CmmsfError, ValueError):
    """The checkpoint or the data cannot be adapted (no FER backbone, no face source, no face found)."""


@dataclass
class AdaptOptions:
    epochs: int = 6
    lr: float = 3e-4
    batch_size: int = 64
    max_shift: int = 3
    """Jitter in pixels of the 64×64 input (StillFace shifts the photo's crop by 4 of its ~90 pixels)."""
    seed: int = 0
    threads: int | None = None


@dataclass
class FaceSet:
    """One source's split as backbone input: grey [N, 1, S, S] in [-1, 1], expression ids, weights."""

    name: str
    grey: torch.Tensor
    expression: torch.Tensor
    weight: torch.Tensor


def _grey_inputs(frames_encoder: FerFrameEncoder, faces: list[StillFace], size: int) -> torch.Tensor:
    """The backbone's input for each face exactly as the video encoder makes it from the detector's crop."""
    rgb = np.stack([frames_to_input(face.image[None], size, face_crop=False)[0] for face in faces])
    return frames_encoder.backbone_input(torch.from_numpy(rgb))


def load_face_sets(data: list[Path], split: str, model: CMMSF, frames_encoder: FerFrameEncoder,
                   sources_file: Path | None = None) -> tuple[list[FaceSet], Skipped]:
    """Each faces-style folder's split, cropped by the detector like every run-time frame; each expression
    weighted alike within its source (the sources file's balance cap), the weights' mean 1 per source."""
    sources, skipped, sets = load_sources_config(sources_file), Skipped(), []
    cap = float(sources["balance"]["cap"])
    for folder in map(Path, data):
        if source_kind(folder) != "faces":
            raise FaceAdaptError(f"{folder} is not a faces-style folder (labels.csv with file, emotion, annotator)")
        name = source_name(folder)
        faces = [f for f in load_faces(folder, name, split, model.config, sources, skipped) if isinstance(f, StillFace)]
        unknown = sorted({f.emotion for f in faces} - set(EXPRESSION_OF))
        if unknown:
            raise FaceAdaptError(f"{folder}: emotions the backbone has no expression for: {', '.join(unknown)}")
        if not faces:
            raise FaceAdaptError(f"{folder}: no face found in its {split} split")
        expression = [EXPRESSION_OF[f.emotion] for f in faces]
        weight = torch.tensor(class_balance(expression, cap))
        with torch.no_grad():
            grey = _grey_inputs(frames_encoder, faces, model.config.video.image_size)
        sets.append(FaceSet(name, grey, torch.tensor(expression), weight / weight.mean()))
    return sets, skipped


def jitter(grey: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored at random and moved by up to max_shift pixels, edges repeated."""
    n, _, height, width = grey.shape
    flip = torch.rand(n, generator=generator) < 0.5
    grey = torch.where(flip.view(n, 1, 1, 1), grey.flip(3), grey)
    padded = F.pad(grey, (max_shift,) * 4, mode="replicate")
    shifts = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, dy: dy + height, dx: dx + width] for i, (dy, dx) in enumerate(shifts.tolist())])


def valence3(backbone: torch.nn.Module, faces: FaceSet, batch: int = 512) -> float:
    """3-way valence balanced accuracy (%) of the backbone's own expression probabilities."""
    backbone.eval()
    with torch.no_grad():
        probs = torch.cat([backbone(faces.grey[i: i + batch])[:, -len(EXPRESSIONS):].softmax(1)
                           for i in range(0, len(faces.grey), batch)]).numpy()
    valences = np.array([1, 0, -1])
    summed = np.stack([probs[:, VALENCE_OF_EXPRESSION == v].sum(1) for v in valences], 1)
    predicted = valences[summed.argmax(1)]
    return balanced_accuracy(VALENCE_OF_EXPRESSION[faces.expression.numpy()], predicted)


def adapt_backbone(checkpoint: str | Path, data: list[Path], out: Path, opts: AdaptOptions | None = None,
                   say: Callable[[str], None] = print, sources_file: Path | None = None) -> dict[str, Any]:
    """Train the checkpoint's FER backbone on the faces' detector crops; write out/checkpoint and the report."""
    opts = opts or AdaptOptions()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    source_folder = resolve_checkpoint(checkpoint)
    model = load_checkpoint(source_folder)
    frames_encoder = getattr(model.video_encoder, "cnn", None)
    if not isinstance(frames_encoder, FerFrameEncoder):
        raise FaceAdaptError(f"{source_folder}: its video backbone is {model.config.video.backbone!r}, not 'fer'")
    start = time.perf_counter()
    train, skipped = load_face_sets(data, "train", model, frames_encoder, sources_file)
    dev, _ = load_face_sets(data, "dev", model, frames_encoder, sources_file)
    say(f"{sum(len(s.grey) for s in train)} training faces, {sum(len(s.grey) for s in dev)} dev faces "
        f"({skipped.summary()})")
    grey = torch.cat([s.grey for s in train])
    expression = torch.cat([s.expression for s in train])
    weight = torch.cat([s.weight for s in train])
    backbone = frames_encoder.backbone
    backbone.requires_grad_(True)
    optimizer = torch.optim.Adam(backbone.parameters(), lr=opts.lr)
    generator = torch.Generator().manual_seed(opts.seed)
    history = [{"epoch": 0, "dev_valence3": {s.name: valence3(backbone, s) for s in dev}}]
    best_epoch, best_state, best_score = 0, _copy(backbone), _mean(history[0]["dev_valence3"])
    say(f"epoch 0 (as shipped): dev 3-way valence {_show(history[0]['dev_valence3'])}")
    for epoch in range(1, opts.epochs + 1):
        backbone.train()
        order, total = torch.randperm(len(grey), generator=generator), 0.0
        for i in range(0, len(order), opts.batch_size):
            idx = order[i: i + opts.batch_size]
            logits = backbone(jitter(grey[idx], opts.max_shift, generator))[:, -len(EXPRESSIONS):]
            loss = (F.cross_entropy(logits, expression[idx], reduction="none") * weight[idx]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        scores = {s.name: valence3(backbone, s) for s in dev}
        history.append({"epoch": epoch, "train_loss": total / len(order), "dev_valence3": scores})
        say(f"epoch {epoch}: loss {total / len(order):.3f}, dev 3-way valence {_show(scores)}")
        if _mean(scores) > best_score:  # strictly: a tie keeps the earlier epoch
            best_epoch, best_state, best_score = epoch, _copy(backbone), _mean(scores)
    backbone.load_state_dict(best_state)
    backbone.requires_grad_(False).eval()
    target = Path(out) / "checkpoint"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source_folder, target)  # the voice statistics and anything else beside the weights
    save_checkpoint(model, target)
    report = {"init": str(source_folder), "data": [str(p) for p in data], "options": asdict(opts),
              "best_epoch": best_epoch, "history": history, "skipped": skipped.count,
              "seconds": round(time.perf_counter() - start, 1)}
    (target / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    return report


def _copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _mean(scores: dict[str, float]) -> float:
    return float(np.mean(list(scores.values())))


def _show(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in scores.items())
