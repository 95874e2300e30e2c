"""Why does a framed photo change its 3-way class? How far each score moves, and whether flips sit near a boundary.

    python experiments/framing_tail.py --data-dir ../shared/data --checkpoint cmmsf/checkpoints/default

For the dev photos of faces/ and FER2013: each photo's video score tight and placed small in a 640×480 frame
(the evaluator's own framing reading, evaluation/evaluator.framing_row, same seed), then over the photos
found both ways: agreement of the 3-way class, the median and 90th percentile of |framed − tight|, the share
of photos within d of a class boundary (|score| = 0.5) and the share of flips among them, and the agreement a
model would reach if every score moved by the median amount in a random direction. Why: it says whether the
framing target is bounded by scores that sit near a boundary (then no training can reach 0.97) or by a tail
of photos whose score moves a lot (then find what differs in their crops).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cmmsf.data.datasets import by_source, load_splits
from cmmsf.evaluation.evaluator import framing_row
from cmmsf.evaluation.metrics import valence_classes
from cmmsf.evaluation.scoring import ModelScorer
from cmmsf.model.checkpoint import load_checkpoint


class Recording:
    """A scorer that keeps every score it gives, by clip id (how framing_row's framed scores are read)."""

    def __init__(self, scorer: ModelScorer):
        self.scorer, self.config, self.given = scorer, scorer.config, {}

    def scores(self, items, modalities):
        found = self.scorer.scores(items, modalities)
        self.given.update({item.inputs.id: float(s) for item, s in zip(items, found)})
        return found


def tail_report(tight: np.ndarray, framed: np.ndarray, margins=(0.1, 0.2, 0.3, 0.5)) -> dict[str, float]:
    moved = np.abs(framed - tight)
    flip = valence_classes(tight) != valence_classes(framed)
    margin = np.abs(np.abs(tight) - 0.5)
    rng = np.random.default_rng(0)
    even = valence_classes(tight + rng.choice([-1, 1], len(tight)) * np.median(moved)) == valence_classes(tight)
    report = {"photos": len(tight), "agree %": 100 * float((~flip).mean()),
              "median moved": float(np.median(moved)), "p90 moved": float(np.quantile(moved, 0.9)),
              "agree % if every score moved by the median": 100 * float(even.mean())}
    for d in margins:
        near = margin < d
        report[f"within {d} of a boundary %"] = 100 * float(near.mean())
        report[f"flips within {d} of a boundary, % of flips"] = 100 * float((flip & near).sum() / max(flip.sum(), 1))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--checkpoint", type=Path, default=Path("cmmsf/checkpoints/default"))
    parser.add_argument("--split", default="dev")
    args = parser.parse_args()
    scorer = ModelScorer(load_checkpoint(args.checkpoint))
    items = load_splits([args.data_dir / "faces", args.data_dir / "fer2013"], scorer.config,
                        splits=(args.split,))[args.split]
    for source, group in by_source(items).items():
        tight = scorer.scores(group, ("video",))
        recording = Recording(scorer)
        framing_row(recording, source, group, tight)
        framed = np.array([recording.given.get(item.maker.id, np.nan) for item in group])
        seen = np.isfinite(framed)
        print(source, json.dumps(tail_report(tight[seen], framed[seen]), indent=1), flush=True)


if __name__ == "__main__":
    main()
