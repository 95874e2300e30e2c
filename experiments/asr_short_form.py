"""Whisper on speech + silence (cmmsf/inputs/short_form.py) against faster-whisper's padded 30 s reading.

Reads the same clips both ways with the shipped recogniser (tiny.en, greedy, VAD on) and prints word error
against the known sentences, how many clips each way keeps or drops by Whisper's own signals, and the
median milliseconds per call. English: 30 RAVDESS and 20 TESS clips (seeded draw), the two MOSI clips and
four 10-14 s reads joined from four clips each; German (EmoDB, 20 clips): words must not be trusted.

    python experiments/asr_short_form.py [--silence 5 2 0]

`--silence`: the trailing silences to read with (short_form.TRAILING_SILENCE_S, 5 s shipped).
"""

from __future__ import annotations

import argparse
import csv
import re
import time
from pathlib import Path

import numpy as np

from cmmsf.inputs import short_form
from cmmsf.inputs.asr import Recognised, SpeechRecognizer, Word
from cmmsf.inputs.media import decode_audio

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def words_of(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def word_errors(reference: str, heard: str) -> tuple[int, int]:
    """(edit distance in words, reference words)."""
    ref, hyp = words_of(reference), words_of(heard)
    row = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        previous, row = row, row.copy()
        row[0] = i
        for j, h in enumerate(hyp, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (r != h))
    return int(row[-1]), len(ref)


def drawn(corpus: str, count: int, rng: np.random.Generator) -> list[tuple[np.ndarray, str]]:
    rows = list(csv.DictReader(open(DATA / corpus / "labels.csv")))
    return [(decode_audio(DATA / corpus / rows[i]["file"]), rows[i]["statement"])
            for i in rng.choice(len(rows), count, replace=False)]


def padded_reading(recognizer: SpeechRecognizer, wave: np.ndarray) -> Recognised:
    """What the recogniser did before: faster-whisper's own transcribe (every call padded to 30 s), its
    segments dropped by the rules of then (decoding score below -0.8, no-speech above 0.6, repetition)."""
    began = time.perf_counter()
    segments, _ = recognizer.model.transcribe(wave, language="en", word_timestamps=True, beam_size=1,
                                              vad_filter=True)
    words = [Word(w.word.strip(), w.start, w.end) for s in segments
             if s.avg_logprob >= -0.8 and s.no_speech_prob <= 0.6 and s.compression_ratio <= 2.4
             for w in (s.words or []) if w.word.strip()]
    return Recognised(" ".join(w.text for w in words), words, time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--silence", type=float, nargs="+", default=[short_form.TRAILING_SILENCE_S])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    english = drawn("ravdess", 30, rng) + drawn("tess", 20, rng)
    for name in ("Oz06ZWiO20M_6.mp4", "03bSnISJMiM_1.wav"):
        clip = DATA / "mosi" / "clips" / name
        english.append((decode_audio(clip), clip.with_suffix(".txt").read_text()))
    english += [(np.concatenate([w for w, _ in english[k:k + 4]]), " ".join(r for _, r in english[k:k + 4]))
                for k in range(0, 16, 4)]
    german = drawn("emodb", 20, rng)
    recognizer = SpeechRecognizer()
    recognizer.transcribe(english[0][0])  # load and warm
    def with_silence(seconds: float):
        def hear(wave: np.ndarray) -> Recognised:
            short_form.TRAILING_SILENCE_S = seconds
            return recognizer.transcribe(wave)
        return hear

    ways = {f"speech + {s:g} s silence": with_silence(s) for s in args.silence}
    ways["faster-whisper, padded to 30 s"] = lambda w: padded_reading(recognizer, w)
    for name, hear in ways.items():
        errors = total = kept = 0
        times = []
        for wave, reference in english:
            heard = hear(wave)
            times.append(heard.seconds)
            e, n = word_errors(reference, heard.text)
            errors, total, kept = errors + e, total + n, kept + bool(heard.words)
        trusted = sum(bool(hear(w).words) for w, _ in german)
        print(f"{name}: English word error {errors / total:.3f} ({errors}/{total} words), words kept on "
              f"{kept}/{len(english)} clips; German clips given trusted words {trusted}/{len(german)}; "
              f"median {np.median(times) * 1e3:.0f} ms per English clip")


if __name__ == "__main__":
    main()
