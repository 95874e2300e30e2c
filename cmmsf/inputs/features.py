"""Clip → model inputs, and a list of clips → one padded batch (the stage contracts' dict).

The one preprocessing implementation: the trainer's clip-folder dataset and the runtime call the same
`Preprocessor`, so deployed inputs equal training inputs. Rules users must know:
- a modality with no data (no or empty transcript, a transcript of no known words or of binary data,
  no audio track or silent audio, no video stream, no face found in any frame) is *absent*: its mask
  is all zero, the model's gate for it reads 0, and `absent` says why;
- a modality the checkpoint never learned is masked too, and the result says so (`masked`);
- a clip left with no usable modality is an error (`no usable input: …`), never a confident score;
- only what the model uses is decoded: the first `max_len` steps (12 s by default) and one more, so a
  longer clip is cut to its first part and listed in `truncated` (text included), never silently;
- a voice unlike those the model learned from (cmmsf/inputs/familiarity.py, when the checkpoint ships
  its statistics) is absent too (`voice unlike those it learned`); every heard voice's record says
  `voice_familiarity` (its distance in units of the bound: above 1 is left out);
- non-finite audio samples are set to 0 and counted in the record (`audio_nonfinite_samples`);
- video is the face the detector finds and tracks (cmmsf/inputs/video.py), unless `face_crop=False` (input
  already cropped: the centre square);
- words come from the transcript sidecar, or, for a clip without one (`asr="auto"`; `"always"`: every
  clip), from speech recognition on the same audio; the record says which (`transcript_source`) and
  keeps the timing (`words` from ASR, `cues` from .srt/.vtt).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .asr import ASR_MODES, Recognised, SpeechRecognizer, speech_seconds
from .asr_models import FRONT_END_MODEL
from .audio import WIN, audible, log_mel
from .clips import Clip
from .errors import CmmsfError, DataError, UsageError
from .familiarity import VoiceFamiliarity
from .media import decode_audio, decode_video, media_duration
from .speech_features import whisper_features
from .spec import DATA_KEY, MODALITIES, InputSpec
from .text import Transcript, has_words, parse_transcript, read_transcript, tokenize, truncate_ids
from .face_detector import YuNet
from .video import NO_FACE, frames_to_input



class NoUsableInput(CmmsfError, ValueError):
    """A clip or window with no modality the model can use; the message names each one's reason."""


@dataclass
class ClipInputs:
    """One clip's unbatched inputs; a modality maps to None when absent."""

    id: str
    arrays: dict[str, np.ndarray | None]
    truncated: list[str] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)
    duration_s: float | None = None
    absent: dict[str, str] = field(default_factory=dict)
    """Why a modality has no data (`no transcript`, `silent`, …), for the ones that have none."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Facts the record must state: `transcript`, `transcript_source`, `words`/`cues`,
    `transcript_decoding`, `audio_nonfinite_samples`."""
    front_ms: dict[str, float] = field(default_factory=dict)
    """Milliseconds of the front-ends that ran for this clip alone (`asr`)."""

    @property
    def present(self) -> dict[str, bool]:
        """Which modalities the clip has data for (a masked one is present but not used)."""
        return {m: self.arrays.get(m) is not None or m in self.masked for m in MODALITIES}

    def length(self, modality: str) -> int:
        array = self.arrays.get(modality)
        return 0 if array is None else len(array)

    def require_usable(self) -> "ClipInputs":
        """Raise NoUsableInput unless some modality has data the model uses."""
        if all(self.arrays.get(m) is None for m in MODALITIES):
            reasons = {**self.absent, **{m: "the checkpoint never learned it" for m in self.masked}}
            raise NoUsableInput("no usable input: " + "; ".join(f"{m}: {reasons.get(m, 'none')}" for m in MODALITIES))
        return self


class Preprocessor:
    """Turns clips into ClipInputs for one model's InputSpec."""

    def __init__(self, spec: InputSpec, face_crop: bool = True, asr: str = "off",
                 recognizer: SpeechRecognizer | None = None, voice: VoiceFamiliarity | None = None,
                 detector: YuNet | None = None):
        if asr not in ASR_MODES:
            raise UsageError(f"--asr must be one of {', '.join(ASR_MODES)}, got {asr!r}")
        self.spec = spec
        self.face_crop = face_crop
        self.detector = detector
        """The face detector (an engine folder's sealed YuNet; None: the shipped one)."""
        self.asr = asr
        self.voice = voice
        """The familiarity check of voices (None: every voice is heard, as in training)."""
        self.recognizer = recognizer if recognizer is not None or asr == "off" else SpeechRecognizer()
        shared = self.recognizer if self.recognizer and self.recognizer.spec.name == FRONT_END_MODEL else None
        self.speech = (shared or SpeechRecognizer(model=FRONT_END_MODEL)) if spec.audio_frontend == "whisper" else None
        """The Whisper model whose encoder the `whisper` audio front-end runs: always tiny.en, the one the
        checkpoint was trained on (shared with ASR when ASR runs it too)."""

    def text(self, transcript: str) -> np.ndarray | None:
        """All token ids of a transcript (truncation is truncate_to_limits' job), None without words."""
        if not transcript.strip():
            return None
        ids = tokenize(transcript, self.spec.text_backbone)
        return ids if has_words(ids, self.spec.text_backbone) else None

    def audio(self, wave: np.ndarray | None) -> np.ndarray | None:
        """Log-mel or Whisper states of finite samples (clean_audio first), None when there is nothing to hear."""
        spec = self.spec
        if not audible(wave, spec.sample_rate):
            return None
        if self.speech is not None:
            return whisper_features(self.speech, wave, spec.audio_frame_rate_hz)
        return log_mel(wave, spec.sample_rate, spec.audio_feature_dim, spec.audio_frame_rate_hz)

    def words(self, clip: Clip, wave: np.ndarray | None, item_notes: dict[str, Any],
              front_ms: dict[str, float]) -> Transcript | None:
        """The clip's words: its sidecar, or speech recognised in `wave` as the asr mode says."""
        sidecar = clip.transcript if self.asr != "always" else None
        given = clip.transcript_text if self.asr != "always" else None
        if given is not None:
            transcript = parse_transcript(given, f"the transcript of {clip.id}")
            item_notes.update(sidecar_notes(transcript))
        elif sidecar is not None:
            transcript = read_transcript(sidecar)
            item_notes.update(sidecar_notes(transcript))
        elif self.recognizer is not None and audible(wave, self.spec.sample_rate):
            heard = self.recognizer.transcribe(wave)
            front_ms["asr"] = heard.seconds * 1e3
            transcript = Transcript(heard.text, problem=None if heard.text else asr_problem(heard))
            item_notes.update(transcript_source="asr", words=[vars(w) for w in heard.words],
                              asr_options=self.recognizer.options, **heard.notes)
        else:
            item_notes["transcript_source"] = "none"
            return None
        item_notes["transcript"] = transcript.text
        return transcript

    def video(self, frames: np.ndarray | None) -> np.ndarray | None:
        if frames is None or len(frames) == 0:
            return None
        return frames_to_input(frames, self.spec.image_size, self.face_crop, self.detector)

    def audio_samples_needed(self) -> int:
        """Samples that give the model's max_len steps and one more (so a longer clip shows as cut)."""
        spec = self.spec
        return int(np.ceil((spec.audio_max_len + 1) * spec.sample_rate / spec.audio_frame_rate_hz)) + WIN

    def from_clip(self, clip: Clip) -> ClipInputs:
        """Decode and featurise one clip. Raises MediaError / NoUsableInput with a one-line reason."""
        spec = self.spec
        if not spec.takes_media:
            raise DataError("this checkpoint takes precomputed feature vectors (MMSA format), not clips; "
                             "use a checkpoint trained with the mel/frames front-ends")
        absent: dict[str, str] = {}
        notes: dict[str, Any] = {}
        front_ms: dict[str, float] = {}
        wave, frames, duration = None, None, None
        if clip.media is not None:
            stopped: list[str] = []  # a file cut short: scored on what decoded, with a warning
            wave = decode_audio(clip.media, spec.sample_rate, max_samples=self.audio_samples_needed(), stopped=stopped)
            decoded = decode_video(clip.media, spec.fps, max_frames=spec.video_max_len + 1, stopped=stopped)
            for reason in stopped:
                warn(notes, f"{reason}: scored on what was decoded before it")
            if decoded is not None:
                frames, duration = decoded
            if wave is not None:
                duration = max(duration or 0.0, len(wave) / spec.sample_rate)
            cut = (wave is not None and len(wave) > self.audio_samples_needed()) or (
                frames is not None and len(frames) > spec.video_max_len)
            stated = media_duration(clip.media)
            check_decoded_length(duration or 0.0, stated, cut, notes)
            duration = stated or duration
        wave = clean_audio(wave, notes)
        self.speech_notes(wave, notes, front_ms)
        transcript = self.words(clip, wave, notes, front_ms)
        arrays = {"text": self.text(transcript.text) if transcript else None,
                  "audio": self.audio(wave), "video": self.video(frames)}
        if arrays["text"] is None:
            none = "no transcript" if self.asr == "off" or wave is None else "no transcript, no speech heard"
            absent["text"] = (none if transcript is None else transcript.problem
                              or ("empty transcript" if not transcript.text.strip() else "no known words in the transcript"))
        if arrays["audio"] is None:
            absent["audio"] = ("no audio track" if wave is None else
                               "every sample was NaN or infinite" if notes.get("audio_nonfinite_samples") == len(wave)
                               and len(wave) else
                               "silent" if len(wave) >= spec.sample_rate // 50 else "under 20 ms")
        if arrays["video"] is None:
            absent["video"] = "no video stream" if frames is None or not len(frames) else NO_FACE
        return self.assemble(ClipInputs(clip.id, arrays, duration_s=duration, absent=absent, notes=notes,
                                        front_ms=front_ms))

    def speech_notes(self, wave: np.ndarray | None, notes: dict[str, Any], front_ms: dict[str, float]) -> None:
        """`speech_s` (and the `vad` milliseconds) of audible audio, and a warning when none of it is speech."""
        if not audible(wave, self.spec.sample_rate):
            return
        began = time.perf_counter()
        speech = speech_seconds(wave, self.spec.sample_rate)
        if speech is not None:
            front_ms["vad"] = (time.perf_counter() - began) * 1e3
            notes["speech_s"] = round(speech, 2)
            if speech == 0:
                warn(notes, "no speech in the audio (voice-activity detection): the voice score reads noise")

    def assemble(self, item: ClipInputs) -> ClipInputs:
        """The last step of every clip and stream window: the documented rules applied (modalities never
        trained masked, an unfamiliar voice left out, max lengths cut), then NoUsableInput unless some
        modality is left."""
        item = mask_untrained(item, self.spec)
        if self.voice is not None:
            item = self.voice.check(item)
        return truncate_to_limits(item, self.spec).require_usable()


def sidecar_notes(transcript: Transcript) -> dict[str, Any]:
    """What a record says of words read from a transcript file (clip sidecar or `stream --transcript`)."""
    notes: dict[str, Any] = {"transcript_source": "sidecar"}
    if transcript.decoding != "utf-8":
        notes["transcript_decoding"] = transcript.decoding
    if transcript.cues:
        notes["cues"] = [vars(c) for c in transcript.cues]
    return notes


def asr_problem(heard: Recognised) -> str:
    """Why recognition gave no words: nothing heard, or every segment dropped (the reasons named)."""
    if not heard.dropped:
        return "no speech recognised"
    return "words heard but not trusted: " + ", ".join(f"{n} {why}" for why, n in heard.dropped.items())


SHORT_DECODE = 0.8
"""A clip whose decoded length is under this share of what its container states is flagged."""


def warn(notes: dict[str, Any], warning: str) -> None:
    """Add one plain-sentence warning to a record's `warnings` list."""
    notes.setdefault("warnings", []).append(warning)


def check_decoded_length(decoded_s: float, stated_s: float | None, cut: bool, notes: dict[str, Any]) -> None:
    """Record `decoded_s`; warn when a clip decoded to its end holds far less than its container states
    (a file cut short or damaged is then scored on what is left, and says so). A clip the model's max
    length cut is decoded short on purpose and not flagged."""
    notes["decoded_s"] = round(decoded_s, 3)
    if stated_s and not cut and decoded_s < SHORT_DECODE * stated_s and stated_s - decoded_s > 0.5:
        warn(notes, f"only {decoded_s:.1f} s of the {stated_s:.1f} s the container states could be decoded: "
                    "the file may be cut short or damaged")


def clean_audio(wave: np.ndarray | None, notes: dict[str, Any] | None = None) -> np.ndarray | None:
    """Non-finite samples set to 0 and counted in `notes` (once per clip)."""
    if wave is None:
        return None
    finite = np.isfinite(wave)
    if finite.all():
        return wave
    if notes is not None:
        notes["audio_nonfinite_samples"] = int((~finite).sum())
    return np.where(finite, wave, np.float32(0.0))


def mask_untrained(item: ClipInputs, spec: InputSpec) -> ClipInputs:
    """Drop the data of modalities the checkpoint never learned, listing them in `masked`."""
    for m in MODALITIES:
        if item.arrays.get(m) is not None and m not in spec.trained_modalities:
            item.arrays[m] = None
            item.masked.append(m)
    return item


def truncate_to_limits(item: ClipInputs, spec: InputSpec) -> ClipInputs:
    """Keep the first max_len steps of each modality (text: and its closing [SEP]), listing the cut ones
    in `truncated`."""
    for m in MODALITIES:
        top, array = spec.max_len(m), item.arrays.get(m)
        if array is not None and len(array) > top:
            item.arrays[m] = truncate_ids(array, top) if m == "text" else array[:top]
            if m not in item.truncated:
                item.truncated.append(m)
    return item


def collate(items: list[ClipInputs], spec: InputSpec) -> dict[str, np.ndarray]:
    """Pad a list of clips into one batch dict; absent modalities get one masked zero step."""
    batch: dict[str, np.ndarray] = {}
    for m in MODALITIES:
        length = max([item.length(m) for item in items] + [1])
        data = np.zeros((len(items), length, *spec.step_shape(m)), dtype=np.int32 if m == "text" else np.float32)
        mask = np.zeros((len(items), length), dtype=bool)
        for row, item in enumerate(items):
            array = item.arrays.get(m)
            if array is not None:
                data[row, : len(array)] = array
                mask[row, : len(array)] = True
        batch[DATA_KEY[m]], batch[f"{m}_mask"] = data, mask
    return batch
