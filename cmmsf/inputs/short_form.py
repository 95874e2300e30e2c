"""One Whisper pass over speech shorter than its window, without padding the audio to 30 s.

faster-whisper pads every call to Whisper's 30 s window, so the encoder costs the same 220 ms (tiny.en,
int8, 2 cores) for a 2 s stream window as for 30 s of speech; it was two thirds of a heard stream's time.
Whisper's encoder takes shorter input (its positions are absolute), but given speech alone the decoder
does not see where the audio ends and repeats itself. What it needs is the silence it was trained to
see after speech: measured on 56 clips (30 RAVDESS, 20 TESS, the two MOSI clips, four joined 10-14 s
reads; `python experiments/asr_short_form.py --silence 10 7 6 5 4 3 2 0`), speech + 6 s of silence gives
word error 4.5% against faster-whisper's 5.3%, at a median 84 ms instead of ~300 ms a call. The silence
has a knee: 5, 7 and 10 s give 4.8-5.3%, 4 s 7.2%, 3 s 24%, 2 s 45%, and speech alone loops (140%).

Built from faster-whisper's own parts (feature extractor, tokenizer, voice-activity filter, word
alignment) and CTranslate2's Whisper generate; the rules that decide which words to trust are the caller's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
TRAILING_SILENCE_S = 6.0
"""Silence placed after the speech: where Whisper learned that speech ends. 5 s is the edge of the knee
(the module's note); 6 s keeps a second's margin for ~3 ms a call."""
MAX_SPEECH_S = 30.0 - TRAILING_SILENCE_S
"""Speech read in one pass at most: longer speech (beyond what `infer` and `stream` hear) is read in
pieces of this length."""
TOKENS_PER_SECOND = 12
"""The longest reading a second of speech may give (fast speech is ~5 tokens/s with timestamps): a
decoder caught in a loop stops here, and its repetition is then caught by the compression rule."""
MAX_INITIAL_TIMESTAMP_S = 1.0
"""As faster-whisper: the first segment must start within the first second."""
PREPEND_PUNCTUATION, APPEND_PUNCTUATION = "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、"
"""Marks joined to the word after / before them (faster-whisper's defaults)."""


@dataclass
class Segment:
    """What Whisper's own signals say about one decoded reading (the fields `segment_problem` reads)."""

    no_speech_prob: float
    avg_logprob: float
    """Mean log-probability of the words as Whisper's alignment pass reads them (text alone, teacher-forced):
    unlike the decoding score it does not depend on how sure Whisper is of where the speech ends."""
    compression_ratio: float


@dataclass
class Reading:
    words: list[tuple[str, float, float]]
    """(word, start s, end s) in the input audio's time."""
    signals: Segment | None
    """None: no speech to decode."""
    segments: int
    """Segments the reading has (Whisper's timestamp pairs; at least 1 when there are words)."""
    language: tuple[str, float] | None


def speech_stretches(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[dict]:
    """Where `wave` holds speech, by faster-whisper's Silero VAD: [{"start", "end"}] in samples."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return get_speech_timestamps(np.ascontiguousarray(wave, dtype=np.float32), VadOptions(), sampling_rate=sample_rate)


def speech_only(wave: np.ndarray) -> tuple[np.ndarray, Callable[[float, bool], float]]:
    """The stretches of speech in `wave` joined, and how a time in the joined speech maps back to the
    wave's own: (seconds, is the end of a word) → seconds."""
    from faster_whisper.vad import SpeechTimestampsMap

    stretches = speech_stretches(wave)
    if not stretches:
        return wave[:0], lambda seconds, is_end: seconds
    back = SpeechTimestampsMap(stretches, SAMPLE_RATE)
    return (np.concatenate([wave[s["start"]:s["end"]] for s in stretches]),
            lambda seconds, is_end: back.get_original_time(seconds, is_end=is_end))


def read_speech(model, speech: np.ndarray, english_only: bool, beam_size: int) -> Reading:
    """Decode `speech` (16 kHz float32, at most MAX_SPEECH_S) in one pass: encoder on speech + silence,
    greedy or beam decoding with timestamps, words placed by Whisper's cross-attention alignment."""
    import ctranslate2
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_compression_ratio

    if not len(speech):
        return Reading([], None, 0, None)
    padded = np.concatenate([speech, np.zeros(int(TRAILING_SILENCE_S * SAMPLE_RATE), np.float32)])
    mel = model.feature_extractor(padded)
    frames = mel.shape[1] - mel.shape[1] % 2
    encoded = model.model.encode(ctranslate2.StorageView.from_array(
        np.ascontiguousarray(mel[None, :, :frames], dtype=np.float32)))
    language = None
    if not english_only:
        token, probability = model.model.detect_language(encoded)[0][0]
        language = (token[2:-2], float(probability))
    tokenizer = Tokenizer(model.hf_tokenizer, not english_only, task="transcribe",
                          language="en" if english_only else language[0])
    seconds = len(speech) / SAMPLE_RATE
    result = model.model.generate(
        encoded, [list(tokenizer.sot_sequence)], beam_size=beam_size, return_scores=True,
        return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1],
        max_length=min(model.max_length, int(TOKENS_PER_SECOND * seconds) + 8),
        max_initial_timestamp_index=int(MAX_INITIAL_TIMESTAMP_S / model.time_precision))[0]
    tokens = result.sequences_ids[0]
    text_tokens = [t for t in tokens if t < tokenizer.eot]
    if not text_tokens:
        return Reading([], None, 0, language)
    pieces = _pieces(tokens, tokenizer, model.time_precision, seconds)
    model.add_word_timestamps([pieces], tokenizer, encoded, min(int(round(seconds * 100)), frames),
                              PREPEND_PUNCTUATION, APPEND_PUNCTUATION, 0.0)
    aligned = [w for piece in pieces for w in piece.get("words", []) if w["word"].strip()]
    signals = Segment(no_speech_prob=float(result.no_speech_prob),
                      avg_logprob=float(np.mean([np.log(max(w["probability"], 1e-6)) for w in aligned]))
                      if aligned else float("-inf"),
                      compression_ratio=get_compression_ratio(tokenizer.decode(text_tokens)))
    words = [(w["word"].strip(), float(w["start"]), float(w["end"])) for w in aligned]
    return Reading(words, signals, len(pieces), language)


def heard_samples(reading: Reading, piece: np.ndarray, trusted: bool) -> int:
    """How far into `piece` a reading got, in samples (where the next reading starts). A piece cut short
    of the speech's end: to the end of its last word, or of the word before it where the last one touches
    the cut (it is read again whole). Otherwise to the end of the piece where the reading heard no words,
    was not trusted or got within a second of the end; else to the end of its last word (it stopped at a
    long pause)."""
    whole = len(piece)
    if not trusted or not reading.words:
        return whole
    words = reading.words
    if whole == int(MAX_SPEECH_S * SAMPLE_RATE):  # cut short: more speech follows
        if len(words) > 1 and words[-1][2] > whole / SAMPLE_RATE - 0.5:
            words = words[:-1]
        heard = int(words[-1][2] * SAMPLE_RATE)
        return heard if heard >= SAMPLE_RATE else whole
    heard = int(words[-1][2] * SAMPLE_RATE)
    return whole if heard >= whole - SAMPLE_RATE or heard < SAMPLE_RATE else heard


def _pieces(tokens: list[int], tokenizer, precision: float, seconds: float) -> list[dict]:
    """The reading cut at Whisper's timestamp tokens into the segments faster-whisper's word timing
    reads (its tokens, start and end); text after the last timestamp runs to the end of the speech."""
    pieces: list[dict] = []
    start, current = 0.0, []
    for token in tokens:
        if token >= tokenizer.timestamp_begin:
            stamp = (token - tokenizer.timestamp_begin) * precision
            if current:
                pieces.append({"seek": 0, "start": start, "end": stamp, "tokens": current})
                current = []
            start = stamp
        elif token < tokenizer.eot:
            current.append(token)
    if current:
        pieces.append({"seek": 0, "start": start, "end": seconds, "tokens": current})
    return pieces
