"""How far the Whisper front-end's states carry voice valence across corpora, before any model is trained.

    python scripts/voice_probe.py --data-dir ../shared/data              # as recorded
    python scripts/voice_probe.py --data-dir ../shared/data --variants 3  # + 3 channel variants per train voice
    python scripts/voice_probe.py --data-dir ../shared/data --speaker-centred  # each speaker's own mean removed

A class-balanced, L2-regularised logistic regression on each clip's mean Whisper tiny.en state (the
`whisper` front-end at the model's step rate), trained on every actor of one corpus and read on every actor
of the other (leave one corpus out): happy vs sad/angry/fearful/disgust, balanced accuracy, in both
directions. The standardisation is the training corpus's, as a single clip at run time would get. Why: it
says whether a lever (channel variants, another front-end) moves what the states carry, in a minute,
before a training run of an hour. `--speaker-centred` subtracts from each clip the mean state of all clips
of its speaker (every emotion, one channel): what a run-time path that knows its speaker (a stream of one
user) could do; a single clip of an unknown speaker cannot.
"""

from __future__ import annotations

import argparse
import csv
import zlib
from pathlib import Path

import numpy as np
import torch

from cmmsf.inputs.asr import SpeechRecognizer
from cmmsf.inputs.media import decode_audio
from cmmsf.inputs.speech_features import whisper_features
from cmmsf.evaluation import NEGATIVE_EMOTIONS, POSITIVE_EMOTIONS
from cmmsf.voice_augment import recording_variant

RATE, STEP_HZ = 16000, 12.5


def corpus_states(folder: Path, recognizer: SpeechRecognizer, variants: int,
                  speaker_centred: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean states of happy and negative voices (and `variants` channel variants of each), labels 1/0;
    with `speaker_centred`, each less the mean over its speaker's clips heard through the same channel."""
    states, labels, groups = [], [], []
    for row in csv.DictReader(open(folder / "labels.csv", newline="", encoding="utf-8")):
        if not speaker_centred and row["emotion"] not in POSITIVE_EMOTIONS | NEGATIVE_EMOTIONS:
            continue
        wave = decode_audio(folder / row["file"], RATE)
        rng = np.random.default_rng(zlib.crc32(row["file"].encode()))
        for channel, heard in enumerate([wave] + [recording_variant(wave, RATE, rng) for _ in range(variants)]):
            states.append(whisper_features(recognizer, heard, STEP_HZ).mean(0))
            labels.append(1.0 if row["emotion"] in POSITIVE_EMOTIONS else 0.0 if row["emotion"] in NEGATIVE_EMOTIONS
                          else np.nan)
            groups.append((row["actor"], channel))
    x, y = np.stack(states), np.array(labels, dtype=np.float32)
    if speaker_centred:
        for group in set(groups):
            members = np.array([g == group for g in groups])
            x[members] -= x[members].mean(0)
    keep = np.isfinite(y)
    return x[keep], y[keep]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced logistic regression by L-BFGS: (weights, bias)."""
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y)
    balance = torch.where(yt > 0, 0.5 / yt.mean(), 0.5 / (1 - yt.mean()))
    w, b = torch.zeros(x.shape[1], requires_grad=True), torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = (balance * torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt, reduction="none")
                 ).mean() + l2 * (w ** 2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return w.detach(), b.detach()


def balanced_accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    return 100 * float(np.mean([(predicted[y == c] == c).mean() for c in (0, 1)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--variants", type=int, default=0, help="channel variants of each training voice")
    parser.add_argument("--speaker-centred", action="store_true", help="remove each speaker's own mean state")
    parser.add_argument("--l2", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    args = parser.parse_args()
    recognizer = SpeechRecognizer(model="tiny.en")
    corpora = ("ravdess", "emodb")
    centred = args.speaker_centred
    plain = {c: corpus_states(args.data_dir / c, recognizer, 0, centred) for c in corpora}
    heard = ({c: corpus_states(args.data_dir / c, recognizer, args.variants, centred) for c in corpora}
             if args.variants else plain)
    for train, test in (corpora, corpora[::-1]):
        x, y = heard[train]
        mean, std = x.mean(0), x.std(0) + 1e-6
        readings = []
        for l2 in args.l2:
            w, b = fit_logistic((x - mean) / std, y, l2)
            xt, yt = plain[test]
            predicted = (torch.from_numpy((xt - mean) / std).float() @ w + b > 0).numpy()
            readings.append(f"l2 {l2:g}: {balanced_accuracy(yt, predicted):.1f}")
        print(f"{train} -> {test} (variants {args.variants}{', speaker-centred' if centred else ''}): happy vs "
              "negative, balanced %  " + "  ".join(readings))


if __name__ == "__main__":
    main()
