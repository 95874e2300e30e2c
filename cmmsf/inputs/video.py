"""RGB frames → the video encoder's input: the face found and cropped, resized, normalised.

The crop is part of the model (shared/DESIGN.md, "Lessons about real inputs"): a backbone trained on
tight face photos reads a whole webcam frame as something else. So every path that reads video (clips,
streams, served requests, Ray, evaluation and the trainer's photos) crops the same way:
1. the frame is shrunk so its shorter side is at most DETECT_SIDE pixels and padded by DETECT_PAD of that
   side with its own edge pixels repeated, so a tight photo (the training data) gets the context a face in
   a frame has, and a face at the frame's edge can still be found;
2. OpenCV's shipped Haar cascade (no download; the floor the issue names: no CNN detector's weights ship
   in a wheel that installs here offline) finds frontal faces, and the one confirmed by the most
   neighbouring windows is kept (the largest would be a textured background's false positive as often
   as the face);
3. the crop is the square of FACE_MARGIN × the box's larger side around its centre, the parts outside the
   frame filled with repeated edge pixels, resized to the model's size with INTER_AREA.
On a tight 96×96 photo the box covers about 0.97 of it, so the crop is nearly the photo itself, and the
same face placed small in a 640×480 frame gives nearly the same crop.

Over time a FaceTracker detects every `detect_every` frames, smooths the box, holds it through a few
missed detections, and drops frames it has no face for: a clip in which no face is found has no video
(`no face`), never a guess from the centre of the frame. `face_crop=False` (`--no-face-crop`) is for
input that is already cropped: the centre square of each frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .errors import InstallError

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

DETECT_SIDE = 200
"""Detection runs on the frame shrunk to this shorter side: a 130 px face of a 640×480 frame is 54 px
there (MIN_FACE is 32), and one detection of a 480×360 frame costs 16 ms on one CPU core (34 ms at 240
with finer scale steps, for 96% → 96% of faces/ and 81% → 78% of FER2013 found)."""
MIN_FACE = 32
SCALE_STEP = 1.15
DETECT_PAD = 0.25
"""Padding (share of the shorter side, edge pixels repeated) before detection: the cascade misses a face
that fills the whole image (FER2013: 63% found unpadded, 82% padded; faces/: 91% → 98%)."""
FACE_MARGIN = 1.0
"""Crop side as a multiple of the detected box's side (the box already spans brow to chin)."""
NO_FACE = "no face"
"""Why video is absent when frames arrived but no face was found in any of them."""


@dataclass(frozen=True)
class FaceBox:
    """A square face region in frame pixels: centre and side."""

    cx: float
    cy: float
    side: float

    def blend(self, new: "FaceBox", keep: float) -> "FaceBox":
        """Moving average towards `new` (keep = weight of the old box), or `new` when it jumped away
        (another face, a cut): more than one side between the centres."""
        if np.hypot(new.cx - self.cx, new.cy - self.cy) > self.side:
            return new
        mix = lambda a, b: keep * a + (1 - keep) * b  # noqa: E731
        return FaceBox(mix(self.cx, new.cx), mix(self.cy, new.cy), mix(self.side, new.side))


@lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise InstallError("OpenCV's Haar face cascade did not load: reinstall opencv-python-headless (<5)")
    return cascade


def detect_face(frame: np.ndarray, min_side: float | None = None) -> FaceBox | None:
    """The best-confirmed frontal face of an RGB (or grey) uint8 frame, in its own pixels; None if there is none.

    `min_side` (frame pixels) skips faces smaller than that: the cascade's finest scales, where most of
    its time goes. The tracker passes a share of the face it follows."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    scale = min(1.0, DETECT_SIDE / min(grey.shape[:2]))
    if scale < 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    pad = int(DETECT_PAD * min(grey.shape[:2]))
    padded = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    smallest = max(MIN_FACE, int(min_side * scale)) if min_side else MIN_FACE
    faces, hits = _cascade().detectMultiScale2(padded, scaleFactor=SCALE_STEP, minNeighbors=4,
                                               minSize=(smallest, smallest))
    if len(faces) == 0:
        return None
    best = max(range(len(faces)), key=lambda i: (int(hits[i]), int(faces[i][2] * faces[i][3])))
    x, y, w, h = (float(v) for v in faces[best])
    return FaceBox((x + w / 2 - pad) / scale, (y + h / 2 - pad) / scale, max(w, h) * FACE_MARGIN / scale)


def crop_face(frame: np.ndarray, box: FaceBox, size: int) -> np.ndarray:
    """The box's square (outside the frame: edge pixels repeated) resized to size × size."""
    side = max(2, int(round(box.side)))
    left, top = int(round(box.cx - side / 2)), int(round(box.cy - side / 2))
    height, width = frame.shape[:2]
    pads = (max(0, -top), max(0, top + side - height), max(0, -left), max(0, left + side - width))
    if any(pads):
        frame = cv2.copyMakeBorder(frame, *pads, cv2.BORDER_REPLICATE)
        top, left = top + pads[0], left + pads[2]
    return cv2.resize(frame[top: top + side, left: left + side], (size, size), interpolation=cv2.INTER_AREA)


def centre_square(frame: np.ndarray) -> np.ndarray:
    """The largest centred square of a frame (for input that is already a face crop)."""
    height, width = frame.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return frame[top: top + side, left: left + side]


TRACK_MIN_SHARE = 0.6
"""A followed face is looked for among faces at least this share of its size (it cannot shrink more
between two detections a third of a second apart, or the full search finds it)."""


class FaceTracker:
    """The face box of each frame of one clip or stream, causally (a frame's box depends only on earlier
    frames): detect every `detect_every` frames, blend each detection into the box (`keep` of the old
    one), hold the box through `hold` missed detections, then let it go."""

    def __init__(self, detect_every: int = 5, keep: float = 0.5, hold: int = 2):
        self.detect_every, self.keep, self.hold = detect_every, keep, hold
        self.box: FaceBox | None = None
        self.frames = 0
        self.misses = 0
        self.detections = 0
        """Detector calls so far (what detection costs)."""

    def update(self, frame: np.ndarray) -> FaceBox | None:
        if self.frames % self.detect_every == 0:
            # while a face is followed, look only for faces at least TRACK_MIN_SHARE of its size (about
            # half the detector's time); a miss there falls back to the whole range of sizes
            found = detect_face(frame, TRACK_MIN_SHARE * self.box.side / FACE_MARGIN) if self.box else None
            if found is None:
                found = detect_face(frame)
            self.detections += 1
            if found is not None:
                self.box = found if self.box is None else self.box.blend(found, self.keep)
                self.misses = 0
            elif self.box is not None:
                self.misses += 1
                if self.misses > self.hold:
                    self.box = None
        self.frames += 1
        return self.box


def normalise(square: np.ndarray) -> np.ndarray:
    """uint8 [S, S, 3] → float32 [3, S, S], ImageNet-normalised."""
    return ((square.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def frame_to_input(frame: np.ndarray, size: int, tracker: FaceTracker | None) -> np.ndarray | None:
    """One RGB frame → [3, size, size]: its face (None without one) or, with no tracker, its centre square."""
    if tracker is None:
        return normalise(cv2.resize(centre_square(frame), (size, size), interpolation=cv2.INTER_AREA))
    box = tracker.update(frame)
    return None if box is None else normalise(crop_face(frame, box, size))


def frames_to_input(frames: np.ndarray, size: int, face_crop: bool = True) -> np.ndarray | None:
    """uint8 [T, H, W, 3] → float32 [T', 3, size, size], the frames with a face (all of them without
    face_crop); None when no frame has one."""
    tracker = FaceTracker() if face_crop else None
    kept = [x for x in (frame_to_input(f, size, tracker) for f in frames) if x is not None]
    return np.stack(kept) if kept else None
