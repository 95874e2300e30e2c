"""RGB frames → the video encoder's input: square crop (optionally around the face), resize, normalise.

Face crop uses OpenCV's shipped Haar cascade (no download): the largest face of a frame, widened by
half its size; frames without a detected face reuse the last face box, else a centre crop.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@lru_cache(maxsize=1)
def _face_detector() -> cv2.CascadeClassifier:
    return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def detect_face(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the largest frontal face, or None."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    faces = _face_detector().detectMultiScale(grey, scaleFactor=1.2, minNeighbors=4, minSize=(24, 24))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    return int(x), int(y), int(w), int(h)


def _square(frame: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    height, width = frame.shape[:2]
    if box is None:
        side = min(height, width)
        cx, cy = width // 2, height // 2
    else:
        x, y, w, h = box
        side = min(int(max(w, h) * 1.5), height, width)
        cx, cy = x + w // 2, y + h // 2
    left = int(np.clip(cx - side // 2, 0, width - side))
    top = int(np.clip(cy - side // 2, 0, height - side))
    return frame[top: top + side, left: left + side]


def frames_to_input(frames: np.ndarray, size: int, face_crop: bool = False) -> np.ndarray:
    """uint8 [T, H, W, 3] → float32 [T, 3, size, size], ImageNet-normalised."""
    out = np.empty((len(frames), 3, size, size), dtype=np.float32)
    box = None
    for i, frame in enumerate(frames):
        if face_crop:
            box = detect_face(frame) or box
        square = cv2.resize(_square(frame, box), (size, size), interpolation=cv2.INTER_AREA)
        out[i] = ((square.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    return out
