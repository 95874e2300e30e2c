"""Does any front-end carry voice valence to a corpus it never heard? Leave-one-corpus-out over four corpora.

    python experiments/voice_loco.py --data-dir ../shared/data --cache runs/voice_loco        # Whisper tiny.en
    python experiments/voice_loco.py --front-end whisper-base --cache runs/voice_loco         # multilingual base
    pip install opensmile && python experiments/voice_loco.py --front-end egemaps --cache runs/voice_loco

Each clip of RAVDESS, EmoDB, TESS and TurEV-DB becomes one vector: the mean Whisper encoder state at the
model's step rate (the `whisper` front-end the voice branch reads), or openSMILE's 88 eGeMAPSv02
functionals (the field's standard cross-corpus set); `--variants` more of each through random recording
channels (cmmsf/data/voice_augment.py, seeded by the file name). Each corpus in turn is held out: a
class-balanced logistic probe (experiments/voice_probe.py) is fitted on the other three (each corpus
weighed alike, the training corpora's standardisation, every channel variant) and reads the held-out one,
happy vs sad/angry/fearful/disgust, balanced %. `speaker-centred` removes each speaker's mean vector
(every emotion): what a session that has heard the speaker before could do, never a single clip.
Why: it says, in minutes and before a training run, whether the voice branch can reach the bar of
issue 42 (every held-out corpus ≥ 65) on a given front-end. The vectors are cached in `--cache`.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import zlib
from pathlib import Path

import numpy as np
import torch

from cmmsf.data.voice_augment import recording_variant
from cmmsf.inputs.media import decode_audio

from voice_probe import balanced_accuracy, fit_logistic

RATE, STEP_HZ = 16000, 12.5
CORPORA = ("ravdess", "emodb", "tess", "turev")
POSITIVE, NEGATIVE = {"happy"}, {"sad", "angry", "fearful", "disgust"}


def front_end(name: str):
    """A function wave → one vector per clip."""
    if name == "egemaps":
        import opensmile

        smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                feature_level=opensmile.FeatureLevel.Functionals)
        return lambda wave: smile.process_signal(wave, RATE).to_numpy()[0]
    from cmmsf.inputs.asr import SpeechRecognizer
    from cmmsf.inputs.speech_features import whisper_features

    recognizer = SpeechRecognizer(model={"whisper-tiny": "tiny.en", "whisper-base": "base"}[name])
    return lambda wave: whisper_features(recognizer, wave, STEP_HZ).mean(0)


def corpus_vectors(folder: Path, cache: Path, name: str, variants: int) -> dict[str, np.ndarray]:
    """[clips, 1 + variants, F] vectors with each clip's speaker and emotion, read from `cache` when there."""
    path = cache / f"{folder.name}_{name}_{variants}.npz"
    if path.is_file():
        return dict(np.load(path))
    vector = front_end(name)
    rows = list(csv.DictReader(open(folder / "labels.csv", newline="", encoding="utf-8")))
    vectors = []
    for row in rows:
        wave = decode_audio(folder / row["file"], RATE)
        rng = np.random.default_rng(zlib.crc32(row["file"].encode()))
        heard = [wave] + [recording_variant(wave, RATE, rng) for _ in range(variants)]
        vectors.append([vector(channel) for channel in heard])
    found = {"x": np.array(vectors, np.float32), "speaker": np.array([r["actor"] for r in rows]),
             "emotion": np.array([r["emotion"] for r in rows])}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **found)
    return found


def labelled(corpus: dict[str, np.ndarray], channels: int, centred: bool) -> tuple[np.ndarray, np.ndarray]:
    """Happy (1) and negative (0) clips' vectors over `channels` channels, centred per speaker if asked."""
    x = corpus["x"][:, :channels].astype(np.float64)
    if centred:
        for speaker in set(corpus["speaker"]):
            mine = corpus["speaker"] == speaker
            x[mine] -= x[mine].mean(axis=0, keepdims=True)
    emotion = corpus["emotion"]
    keep = np.isin(emotion, list(POSITIVE | NEGATIVE))
    y = np.isin(emotion[keep], list(POSITIVE)).astype(np.float32)
    return x[keep], y


def fit_mlp(x: np.ndarray, y: np.ndarray, weights: np.ndarray, seed: int = 0, epochs: int = 60):
    """A one-hidden-layer (64, GELU, dropout) class-balanced classifier: does a non-linear readout find more?"""
    torch.manual_seed(seed)
    positive_share = float((weights * y).sum() / weights.sum())
    balance = weights * np.where(y > 0, 0.5 / positive_share, 0.5 / (1 - positive_share))
    xt, yt, wt = (torch.from_numpy(a).float() for a in (x, y, balance / balance.mean()))
    net = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(x.shape[1], 64), torch.nn.GELU(),
                              torch.nn.Dropout(0.3), torch.nn.Linear(64, 1))
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(epochs):
        for batch in torch.randperm(len(xt)).split(64):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt[batch])[:, 0], yt[batch],
                                                                        reduction="none")
            optimizer.zero_grad()
            (loss * wt[batch]).mean().backward()
            optimizer.step()
    net.eval()
    return lambda z: net(z)[:, 0]


def leave_one_out(corpora: dict[str, dict], channels: int, centred: bool, l2: float | None) -> dict[str, float]:
    """Balanced % on each held-out corpus of a probe fitted on the other three (l2 None: the MLP)."""
    found = {}
    for held in corpora:
        xs, ys, weights = [], [], []
        for name, corpus in corpora.items():
            if name != held:
                x, y = labelled(corpus, channels, centred)
                xs.append(x.reshape(-1, x.shape[-1]))
                ys.append(np.repeat(y, channels))
                weights.append(np.full(len(ys[-1]), 1.0 / len(ys[-1])))
        x, y = np.concatenate(xs), np.concatenate(ys)
        mean, std = x.mean(0), x.std(0) + 1e-6
        if l2 is None:
            readout = fit_mlp((x - mean) / std, y, np.concatenate(weights))
        else:
            w, b = fit_logistic((x - mean) / std, y, l2, np.concatenate(weights))
            readout = lambda z, w=w, b=b: z @ w + b  # noqa: E731 - the linear probe's logit
        xt, yt = labelled(corpora[held], 1, centred)
        with torch.no_grad():
            predicted = (readout(torch.from_numpy((xt[:, 0] - mean) / std).float()) > 0).numpy()
        found[held] = balanced_accuracy(yt, predicted)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache", type=Path, required=True, help="where the per-clip vectors are kept")
    parser.add_argument("--front-end", choices=("whisper-tiny", "whisper-base", "egemaps"), default="whisper-tiny")
    parser.add_argument("--variants", type=int, default=2, help="channel variants of each clip")
    parser.add_argument("--l2", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    parser.add_argument("--mlp", action="store_true", help="a small MLP instead of the logistic probe")
    args = parser.parse_args()
    missing = [c for c in CORPORA if not (args.data_dir / c / "labels.csv").is_file()]
    if missing:
        raise SystemExit(f"error: {args.data_dir} lacks {', '.join(missing)} (each needs labels.csv)")
    corpora = {c: corpus_vectors(args.data_dir / c, args.cache, args.front_end, args.variants) for c in CORPORA}
    print(f"{args.front_end}: held-out corpus, happy vs negative, balanced %")
    for channels, centred, l2 in itertools.product(sorted({1, 1 + args.variants}), (False, True),
                                                   [None] if args.mlp else args.l2):
        found = leave_one_out(corpora, channels, centred, l2)
        print(f"  channels {channels}  {'speaker-centred' if centred else 'single clip    '}  "
              + ("mlp        " if l2 is None else f"l2 {l2:<6g} ")
              + "  ".join(f"{c} {v:5.1f}" for c, v in found.items()) + f"  mean {np.mean(list(found.values())):5.1f}")


if __name__ == "__main__":
    main()
