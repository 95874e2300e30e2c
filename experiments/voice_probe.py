"""How far the Whisper front-end's states carry voice valence across corpora, before any model is trained.

    python experiments/voice_probe.py --data-dir ../shared/data              # as recorded
    python experiments/voice_probe.py --data-dir ../shared/data --variants 3  # + 3 channel variants per train voice
    python experiments/voice_probe.py --data-dir ../shared/data --speaker-centred  # each speaker's own mean removed
    python experiments/voice_probe.py --data-dir ../shared/data --within ravdess --pair calm,neutral

A class-balanced, L2-regularised logistic regression on each clip's mean Whisper tiny.en state (the
`whisper` front-end at the model's step rate), trained on every actor of one corpus and read on every actor
of the other (leave one corpus out): happy vs sad/angry/fearful/disgust, balanced accuracy, in both
directions. The standardisation is the training corpus's, as a single clip at run time would get. Why: it
says whether a lever (channel variants, another front-end) moves what the states carry, in a minute,
before a training run of an hour. `--speaker-centred` subtracts from each clip the mean state of all clips
of its speaker (every emotion, one channel): what a run-time path that knows its speaker (a stream of one
user) could do; a single clip of an unknown speaker cannot. `--within CORPUS --pair A,B` asks a narrower
question inside one corpus: can the states tell emotion A from B for actors never trained on (train actors
→ dev and test actors of sources.json)? E.g. calm from neutral, which the voice branch confuses.
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
from cmmsf.evaluation.evaluator import NEGATIVE_EMOTIONS, POSITIVE_EMOTIONS
from cmmsf.data.sources import load_sources_config
from cmmsf.data.voice_augment import recording_variant

RATE, STEP_HZ = 16000, 12.5


def corpus_states(folder: Path, recognizer: SpeechRecognizer, variants: int, speaker_centred: bool = False,
                  positive: set[str] = POSITIVE_EMOTIONS, negative: set[str] = NEGATIVE_EMOTIONS
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean states of `positive` and `negative` voices (and `variants` channel variants of each), labels 1/0,
    and each one's actor; with `speaker_centred`, each less the mean over its speaker's clips (every
    emotion) heard through the same channel."""
    states, labels, groups = [], [], []
    for row in csv.DictReader(open(folder / "labels.csv", newline="", encoding="utf-8")):
        if not speaker_centred and row["emotion"] not in positive | negative:
            continue
        wave = decode_audio(folder / row["file"], RATE)
        rng = np.random.default_rng(zlib.crc32(row["file"].encode()))
        for channel, heard in enumerate([wave] + [recording_variant(wave, RATE, rng) for _ in range(variants)]):
            states.append(whisper_features(recognizer, heard, STEP_HZ).mean(0))
            labels.append(1.0 if row["emotion"] in positive else 0.0 if row["emotion"] in negative else np.nan)
            groups.append((int(row["actor"]), channel))
    x, y = np.stack(states), np.array(labels, dtype=np.float32)
    if speaker_centred:
        for group in set(groups):
            members = np.array([g == group for g in groups])
            x[members] -= x[members].mean(0)
    keep = np.isfinite(y)
    return x[keep], y[keep], np.array([actor for actor, _ in groups])[keep]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, weights: np.ndarray | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced logistic regression by L-BFGS: (weights, bias); `weights` weigh the examples
    (e.g. each corpus alike) before the two classes are balanced."""
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    given = torch.ones_like(yt) if weights is None else torch.from_numpy(weights / weights.mean()).float()
    positive_share = (given * yt).sum() / given.sum()
    balance = given * torch.where(yt > 0, 0.5 / positive_share, 0.5 / (1 - positive_share))
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
    parser.add_argument("--within", help="one corpus (ravdess or emodb): train actors -> dev and test actors")
    parser.add_argument("--pair", default="calm,neutral", help="with --within: the two emotions told apart")
    args = parser.parse_args()
    recognizer = SpeechRecognizer(model="tiny.en")
    if args.within:
        within_corpus(args, recognizer)
        return
    corpora = ("ravdess", "emodb")
    centred = args.speaker_centred
    plain = {c: corpus_states(args.data_dir / c, recognizer, 0, centred) for c in corpora}
    heard = ({c: corpus_states(args.data_dir / c, recognizer, args.variants, centred) for c in corpora}
             if args.variants else plain)
    for train, test in (corpora, corpora[::-1]):
        x, y, _ = heard[train]
        xt, yt, _ = plain[test]
        print(f"{train} -> {test} (variants {args.variants}{', speaker-centred' if centred else ''}): happy vs "
              "negative, balanced %  " + readings(x, y, xt, yt, args.l2))


def readings(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray, strengths: list[float]) -> str:
    """Balanced accuracy on (xt, yt) of a probe fitted on (x, y) at each L2 strength, x's standardisation."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    found = []
    for l2 in strengths:
        w, b = fit_logistic((x - mean) / std, y, l2)
        predicted = (torch.from_numpy((xt - mean) / std).float() @ w + b > 0).numpy()
        found.append(f"l2 {l2:g}: {balanced_accuracy(yt, predicted):.1f}")
    return "  ".join(found)


def within_corpus(args: argparse.Namespace, recognizer: SpeechRecognizer) -> None:
    """--within: the probe on one corpus's train actors, read on its dev and test actors (sources.json)."""
    rules = load_sources_config().get(args.within, {})
    if rules.get("split_by") != "actor":
        raise SystemExit(f"error: --within {args.within}: not a speech corpus of sources.json (ravdess, emodb)")
    pair = args.pair.split(",")
    if len(pair) != 2:
        raise SystemExit(f"error: --pair takes two emotions, e.g. calm,neutral (got {args.pair!r})")
    first, second = pair
    folder = args.data_dir / args.within
    if not (folder / "labels.csv").is_file():
        raise SystemExit(f"error: not found: {folder / 'labels.csv'}")
    heard = {row["emotion"] for row in csv.DictReader(open(folder / "labels.csv", newline="", encoding="utf-8"))}
    if not {first, second} <= heard:
        raise SystemExit(f"error: --pair {args.pair}: {args.within} has {', '.join(sorted(heard))}")
    x, y, actors = corpus_states(folder, recognizer, args.variants, args.speaker_centred,
                                 {first}, {second})
    held = np.isin(actors, rules["dev_actors"] + rules["test_actors"])
    print(f"{args.within}, actors {sorted(set(actors[held]))} never trained on: {first} ({int(y[held].sum())}) vs "
          f"{second} ({int((1 - y[held]).sum())}), balanced %  " + readings(x[~held], y[~held], x[held], y[held], args.l2))


if __name__ == "__main__":
    main()
