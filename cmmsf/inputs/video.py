"""RGB frames → the video encoder's input: the face found, aligned by the eyes, cropped, resized, normalised.

The crop is part of the model (shared/DESIGN.md, "Lessons about real inputs"): a backbone trained on
tight face photos reads a whole webcam frame as something else. So every path that reads video (clips,
streams, served requests, Ray, evaluation and the trainer's photos) crops the same way:
1. YuNet (cmmsf/inputs/face_detector.py, a CNN detector: box, five landmarks, score) looks for faces in
   the frame resized to detection scale; of the faces found, the largest is kept (the person in front
   of the camera, not a face in a poster behind them);
2. the crop is the square of FACE_MARGIN × the box's larger side around the box's centre (that square
   matches, within 1-2% of its side, the one OpenCV's Haar cascade gave, which the shipped checkpoint was
   trained on), turned so the eyes are level, the parts outside the frame filled with repeated edge
   pixels, resized to the model's size.
On a tight 96×96 photo the box covers about the whole photo, so the crop is nearly the photo itself, and
the same face placed small in a 640×480 frame, or tilted, gives nearly the same crop.

Over time a FaceTracker detects every `detect_every` frames, smooths the box, holds it through a few
missed detections, and drops frames it has no face for: a clip in which no face is found has no video
(`no face`), never a guess from the centre of the frame. `face_crop=False` (`--no-face-crop`) is for
input that is already cropped: the centre square of each frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .face_detector import Face, YuNet, shipped_detector

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

FACE_MARGIN = 1.0
"""Crop side as a multiple of the face's size below (the square the shipped checkpoint was trained on)."""
BOX_SIDE, EYES_TO_MOUTH, EYE_SPAN = 1.0, 2.64, 2.68
"""Each measure of a face's size (YuNet's box's larger side, eyes-to-mouth and eye-to-eye distances)
scaled to the side of the square OpenCV's Haar cascade gave, which the shipped checkpoint was trained
on: medians of 1,362 photos of faces/ and FER2013 (0.99, 2.637, 2.680)."""
CENTRE_UP = 0.05
"""The crop's centre above the mean of box centre and landmarks, as a share of its side (the Haar
square's centre was 0.018 of the side above the box's centre and 0.080 above the eyes-mouth midpoint)."""
NO_FACE = "no face"
"""Why video is absent when frames arrived but no face was found in any of them."""

DITHER_SHIFT, DITHER_ZOOM = 0.03, 0.04
"""How far the crop of one frame is moved (share of its side) and zoomed (either way) by DITHER."""
_DITHER_STEPS = ((0, 0), (-1, -1), (1, 1), (-1, 1), (1, -1), (0, -1), (0, 1), (-1, 0), (1, 0))
DITHER = tuple((dx * DITHER_SHIFT, dy * DITHER_SHIFT, (1.0, 1 - DITHER_ZOOM, 1 + DITHER_ZOOM)[i % 3], mirrored)
               for i, (dx, dy) in enumerate(_DITHER_STEPS) for mirrored in (False, True))
"""(x shift, y shift, zoom, mirrored) of the crop of a clip's frame j: entry j mod 18. Every other frame is
read mirrored, and each pair a little moved or zoomed, within the jitter the video branch was trained with
(±4 px of a 96-px face, mirrored clips). Why: the score of a face hung on the one box its detection gave,
and that box wobbles when the same face is seen at another size (centre 2-3% of the side, side 4-7%,
tilt 3°): on dev photos, the same crops moved that way (framed geometry, tight pixels) changed the 3-way
class of 11% (faces/) and 18% (FER2013). A still face's identical frames read one crop; read this way the
temporal layers average a small neighbourhood of crops, which test-time augmentation would buy with more
frames, at no cost: the frames are read anyway. Real video moves on its own; the dither adds to it."""


@dataclass(frozen=True)
class FaceBox:
    """A square face region in frame pixels: centre, side, and the eyes' tilt in degrees (positive: the
    face's left eye, on the image's right, lower than its right eye)."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0

    @classmethod
    def of(cls, face: Face) -> "FaceBox":
        """The crop square of a YuNet face. Box and landmarks each wobble when the same face is seen at
        another size or with other surroundings; their mean wobbles least (the same face, tight and
        placed small in a 640×480 frame: centre 1.7% of the side apart and side spread 5.5% on faces/,
        against 3.1% and 8.1% from the box alone), so the centre is the mean of the box's centre and
        the landmarks' and the side the mean of three measures of the face's size, each scaled to the
        square the shipped checkpoint was trained on (BOX_SIDE, EYES_TO_MOUTH, EYE_SPAN, CENTRE_UP)."""
        x, y, w, h = (float(v) for v in face.box)
        marks = face.landmarks.astype(np.float64)
        (rx, ry), (lx, ly) = marks[0], marks[1]
        eyes, mouth = (marks[0] + marks[1]) / 2, (marks[3] + marks[4]) / 2
        side = FACE_MARGIN * (BOX_SIDE * max(w, h) + EYES_TO_MOUTH * float(np.hypot(*(mouth - eyes)))
                              + EYE_SPAN * float(np.hypot(lx - rx, ly - ry))) / 3
        angle = math.degrees(math.atan2(ly - ry, lx - rx))
        cx, cy = (x + w / 2 + marks[:, 0].mean()) / 2, (y + h / 2 + marks[:, 1].mean()) / 2
        up = CENTRE_UP * side  # towards the brow, along the face's own vertical
        return cls(cx + up * math.sin(math.radians(angle)), cy - up * math.cos(math.radians(angle)), side, angle)

    def blend(self, new: "FaceBox", keep: float) -> "FaceBox":
        """Moving average towards `new` (keep = weight of the old box), or `new` when it jumped away
        (another face, a cut): more than one side between the centres."""
        if np.hypot(new.cx - self.cx, new.cy - self.cy) > self.side:
            return new
        mix = lambda a, b: keep * a + (1 - keep) * b  # noqa: E731
        return FaceBox(mix(self.cx, new.cx), mix(self.cy, new.cy), mix(self.side, new.side),
                       mix(self.angle, new.angle))


def face_boxes(frame: np.ndarray, detector: YuNet | None = None, min_side: float = 0.0) -> list[FaceBox]:
    """The crop box of every face of an RGB (or grey) uint8 frame at least `min_side` pixels, in its own
    pixels. `detector` defaults to the shipped YuNet; the runtime passes its engine folder's."""
    boxes = (FaceBox.of(face) for face in (detector or shipped_detector()).faces(frame))
    return [box for box in boxes if box.side >= min_side]


def detect_face(frame: np.ndarray, min_side: float = 0.0, detector: YuNet | None = None) -> FaceBox | None:
    """The largest face of a frame (of those at least `min_side` pixels); None if there is none."""
    return max(face_boxes(frame, detector, min_side), key=lambda box: box.side, default=None)


def crop_face(frame: np.ndarray, box: FaceBox, size: int) -> np.ndarray:
    """The box's square, turned by its angle so the eyes are level (outside the frame: edge pixels
    repeated), resized to size × size. One resampling for every angle, 0 included, so a face whose
    measured tilt wavers by a degree or two is not cropped two ways."""
    scale = size / max(2.0, box.side)
    if scale < 0.5:  # shrink by area first so the turn does not alias, then turn at half scale
        step = 2 * scale
        small = cv2.resize(frame, None, fx=step, fy=step, interpolation=cv2.INTER_AREA)
        return crop_face(small, FaceBox(box.cx * step, box.cy * step, box.side * step, box.angle), size)
    turn = cv2.getRotationMatrix2D((box.cx, box.cy), box.angle, scale)
    turn[:, 2] += (size / 2 - box.cx, size / 2 - box.cy)
    return cv2.warpAffine(frame, turn, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def read_face(frame: np.ndarray, box: FaceBox, size: int, index: int) -> np.ndarray:
    """The crop of a clip's frame number `index`: the box moved, zoomed and mirrored as DITHER says."""
    dx, dy, zoom, mirrored = DITHER[index % len(DITHER)]
    crop = crop_face(frame, FaceBox(box.cx + dx * box.side, box.cy + dy * box.side, box.side * zoom, box.angle), size)
    return np.ascontiguousarray(crop[:, ::-1]) if mirrored else crop


def centre_square(frame: np.ndarray) -> np.ndarray:
    """The largest centred square of a frame (for input that is already a face crop)."""
    height, width = frame.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return frame[top: top + side, left: left + side]


TRACK_MIN_SHARE = 0.6
"""A followed face is looked for among faces at least this share of its size (it cannot shrink more
between two detections a third of a second apart)."""


class FaceTracker:
    """The face box of each frame of one clip or stream, causally (a frame's box depends only on earlier
    frames): detect every `detect_every` frames, blend each detection into the box (`keep` of the old
    one), hold the box through `hold` missed detections, then let it go."""

    def __init__(self, detect_every: int = 5, keep: float = 0.5, hold: int = 2, detector: YuNet | None = None):
        self.detect_every, self.keep, self.hold = detect_every, keep, hold
        self.detector = detector
        self.box: FaceBox | None = None
        self.frames = 0
        self.misses = 0
        self.detections = 0
        """Detector calls so far (what detection costs)."""

    def update(self, frame: np.ndarray) -> FaceBox | None:
        if self.frames % self.detect_every == 0:
            # the face followed is the one of its size nearest to it (a larger face walking past does not
            # take over); with none of its size, or none followed, the largest face
            faces = face_boxes(frame, self.detector)
            near = [b for b in faces if self.box is not None and b.side >= TRACK_MIN_SHARE * self.box.side]
            found = (min(near, key=lambda b: np.hypot(b.cx - self.box.cx, b.cy - self.box.cy)) if near
                     else max(faces, key=lambda b: b.side, default=None))
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
    """One RGB frame → [3, size, size]: its face (None without one; read as DITHER says for the tracker's
    frame count) or, with no tracker, its centre square (input that is already a crop is read as it is)."""
    if tracker is None:
        return normalise(cv2.resize(centre_square(frame), (size, size), interpolation=cv2.INTER_AREA))
    box = tracker.update(frame)
    return None if box is None else normalise(read_face(frame, box, size, tracker.frames - 1))


def frames_to_input(frames: np.ndarray, size: int, face_crop: bool = True,
                    detector: YuNet | None = None) -> np.ndarray | None:
    """uint8 [T, H, W, 3] → float32 [T', 3, size, size], the frames with a face (all of them without
    face_crop); None when no frame has one. `detector`: the shipped YuNet unless given."""
    tracker = FaceTracker(detector=detector) if face_crop else None
    kept = [x for x in (frame_to_input(f, size, tracker) for f in frames) if x is not None]
    return np.stack(kept) if kept else None
