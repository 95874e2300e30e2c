"""Would a speaker-relative voice work in a stream, where the speaker's mean is only known from what was
heard so far? Offline check on a speaker-centred checkpoint (trained with experiments/recipes/sources_centred.json):

    python experiments/voice_running_mean.py --checkpoint runs/voice_r_centred/checkpoint --data-dir ../shared/data

Each test speaker's clips are read in a random order, as a session would hear them; clip k is centred by
the running mean of the speaker's clip means 1..k (itself included: the first clip is centred on itself),
not by the mean over all the speaker's clips that training used. Prints happy vs negative (sign, balanced)
and the median |score| of neutral voices, for the oracle mean and the running mean, by position in the
session. `--only neutral,calm` makes each session a calm user's: the median |score| says whether a calm
session read relative to itself stays near 0. Why: it says whether the design of the next step holds before any runtime is written.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from cmmsf.model.checkpoint import load_checkpoint
from cmmsf.data.datasets import load_splits
from cmmsf.evaluation.evaluator import emotion_readings
from cmmsf.evaluation.scoring import predict
from cmmsf.data.sources import centre_by_speaker


def running_centred(items: list, rng: np.random.Generator) -> tuple[list, list[int]]:
    """The items (uncentred) in a random order per speaker, each centred by its speaker's running mean;
    and each item's position in its speaker's session (0 = the first clip heard)."""
    by_speaker: dict[str, list] = {}
    for item in items:
        by_speaker.setdefault(str(Path(item.maker.id).parent), []).append(item)
    out, positions = [], []
    for clips in by_speaker.values():
        order = rng.permutation(len(clips))
        total = None
        for k, index in enumerate(order):
            item = clips[index]
            mean = item.maker.audio.mean(axis=0)
            total = mean if total is None else total + mean
            centred = (item.maker.audio - total / (k + 1)).astype(np.float32)
            out.append(replace(item, maker=replace(item.maker, audio=centred, variants=())))
            positions.append(k)
    return out, positions


def readings(model, items: list) -> dict[str, float]:
    scores = predict(model, items, modalities=("audio",))
    found = emotion_readings(items, scores)
    return {"hap/neg": found["happy_vs_negative_bal"], "|neutral|": found["neutral_abs_median"], "n": len(items)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seeds", type=int, default=5, help="random session orders per speaker")
    parser.add_argument("--only", help="sessions of these emotions alone, e.g. neutral,calm (a calm user)")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    model = load_checkpoint(args.checkpoint)
    for corpus, split in (("ravdess", "test"), ("emodb", "all")):
        items = load_splits(args.data_dir / corpus, model.config, splits=(split,))[split]  # uncentred
        items = [it for it in items if only is None or it.maker.emotion in only]
        oracle = centre_by_speaker([replace(it.maker, audio=it.maker.audio.copy(), variants=()) for it in items])
        print(f"{corpus} {split}: speaker mean over all clips (as trained): "
              f"{readings(model, [replace(it, maker=m) for it, m in zip(items, oracle)])}")
        for seed in range(args.seeds):
            session, positions = running_centred(items, np.random.default_rng(seed))
            positions = np.array(positions)
            early = [it for it, p in zip(session, positions) if p < 5]
            later = [it for it, p in zip(session, positions) if p >= 5]
            print(f"  running mean, order {seed}: all {readings(model, session)}  first 5 clips "
                  f"{readings(model, early)}  later {readings(model, later)}")


if __name__ == "__main__":
    main()
