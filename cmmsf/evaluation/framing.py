"""The framing reading: does the video branch read one expression the same way whether the face fills
the photo or sits small somewhere in a webcam-sized frame?

A webcam or a talking-head video shows a face of 130-200 px somewhere in a 640×480 frame, not a tight
crop. `place_in_frame` makes such a frame from a face photo: the photo scaled to a random side in
FACE_PX, put at a random spot of a FRAME-sized background (a smooth random colour field with sensor
noise, like a blurred room). `cmmsf-train eval` scores each test photo both ways through the same
detector and crop (cmmsf/inputs/video.py) and reports how often the 3-way valence class agrees.
"""

from __future__ import annotations

import cv2
import numpy as np

FRAME = (480, 640)
"""Height, width of the frame a photo is placed in."""
FACE_PX = (130, 200)
"""Range of the placed photo's side in pixels."""


def background(rng: np.random.Generator, shape: tuple[int, int] = FRAME) -> np.ndarray:
    """A smooth random colour field (a 4×5 grid upsampled) with a little noise: an out-of-focus room."""
    grid = rng.integers(30, 226, size=(4, 5, 3)).astype(np.float32)
    field = cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    noisy = field + rng.normal(0, 4, size=field.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def place_in_frame(photo: np.ndarray, rng: np.random.Generator, shape: tuple[int, int] = FRAME,
                   face_px: tuple[int, int] = FACE_PX) -> np.ndarray:
    """The RGB photo scaled to a random side in `face_px` and pasted at a random spot of a background."""
    side = int(rng.integers(face_px[0], face_px[1] + 1))
    scaled = cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC if side > photo.shape[0]
                        else cv2.INTER_AREA)
    frame = background(rng, shape)
    top = int(rng.integers(0, shape[0] - side + 1))
    left = int(rng.integers(0, shape[1] - side + 1))
    frame[top: top + side, left: left + side] = scaled
    return frame
