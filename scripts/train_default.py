"""Reproduce the shipped default checkpoint from scratch with one command:

    python scripts/train_default.py --data ../shared/data/mosi/label.csv   # 3 seeds, best on dev installed

Trains the `edge` preset with the `edge` recipe (cmmsf/recipes/edge.json) on the real CMU-MOSI transcripts (train split, model selection on dev, text
only: audio and video of MOSI are not in the repository), then copies the best checkpoint to
cmmsf/checkpoints/default/ and prints the test metrics.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from cmmsf.checkpoint import DEFAULT_CHECKPOINT, config_with_backbone_hash
from cmmsf.config import preset
from cmmsf.train import TrainOptions, fit


def default_config():
    """edge preset, MiniLM top 4 layers fine-tuned (the rest frozen keeps the checkpoint under 50 MB)."""
    config = preset("edge")
    config.text.trainable_layers = 4
    config.trained_modalities = ["text"]
    return config_with_backbone_hash(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/mosi/label.csv"))
    parser.add_argument("--out", type=Path, default=Path("runs/default"))
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--install", action=argparse.BooleanOptionalAction, default=True,
                        help="copy the best seed's checkpoint to cmmsf/checkpoints/default")
    args = parser.parse_args()
    summary = fit(default_config(), args.data, args.out, TrainOptions.from_recipe("edge", epochs=args.epochs, seed=args.seed),
                  seeds=args.seeds)
    print(json.dumps(summary["summary"], indent=1))
    if args.install:
        best = min(summary["seeds"], key=lambda r: r["dev"]["mae"])
        source = args.out / (f"seed_{best['seed']}" if args.seeds > 1 else "") / "checkpoint"
        shutil.rmtree(DEFAULT_CHECKPOINT, ignore_errors=True)
        shutil.copytree(source, DEFAULT_CHECKPOINT)
        print(f"installed {source} → {DEFAULT_CHECKPOINT} (seed {best['seed']}, best on dev)")


if __name__ == "__main__":
    main()
