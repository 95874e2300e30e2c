"""YuNet, the face detector: its graph's outputs decoded into faces in numpy (torch-free, engine-free).

YuNet (OpenCV Zoo, MIT licence) is a fully-convolutional single-shot detector. For each of three
strides (8, 16, 32) and each cell of that stride's grid it predicts a class score, an objectness, a box
(centre offset in cells, log width and height in cells) and five landmarks (offsets in cells): right
eye, left eye, nose tip, right and left mouth corners, as the person's own sides. A face's score is
sqrt(class × objectness); overlapping faces are reduced by non-maximum suppression. The graph takes
a BGR image, 0-255 floats, NCHW, with sides that are multiples of 32 (zero padding at the bottom and
right); it is run by whatever runs the engine folder's other graphs (`GraphRunner`).

The shipped graph (`yunet/`, its MIT notice beside it) has a fixed 640×640 input; `dynamic_graph` frees
its height and width (every reshape inside is already -1), so frames are detected at their own shape.
The engine folder carries that graph, sealed like every artifact (`face_detector.onnx`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

SHIPPED = Path(__file__).with_name("yunet") / "face_detection_yunet_2023mar.onnx"
LICENCE = SHIPPED.with_name("LICENSE")
SHIPPED_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
DETECT_MIN = 224
"""A frame whose shorter side is smaller is enlarged to it first: YuNet finds faces of about 10 to 300
pixels, but a tight 96×96 photo's face is found more often enlarged (FER2013: 93% → 98% of 600 photos
found, faces/: 99.8% either way, at a score threshold of 0.4)."""
DETECT_MAX = 640
"""A frame whose longer side is larger is shrunk to it. A 640×480 webcam frame is read whole: photos of
FER2013 placed small in such a frame (130-200 pixels) were missed 12% of the time read at 320 and 5% at
480, 2.7% at 640 (150 photos), for 3.7, 8.6 and 13.5 ms a detection on one core (the Haar cascade took
8.5 ms on the same frames, missing 7%)."""
SCORE_THRESHOLD = 0.4
"""sqrt(class × objectness) a face needs; no generated noise or flat frame reaches it."""
NMS_THRESHOLD = 0.3
STRIDES = (8, 16, 32)
ALIGN = 32
"""The graph's input sides must be multiples of the largest stride."""
PLAN_SHAPES = {"input": [[1, 3, ALIGN, ALIGN], [1, 3, 480, 640], [1, 3, DETECT_MAX, DETECT_MAX]]}
"""Input name → [min, opt, max] shapes of a TensorRT plan of the graph: every blob `YuNet.faces` sends
(sides aligned to ALIGN, none above DETECT_MAX), fastest at a 640×480 webcam frame."""
GraphRunner = Callable[[np.ndarray], dict[str, np.ndarray]]
"""float32 [1, 3, H, W] BGR → YuNet's outputs by name (cls_8, obj_8, bbox_8, kps_8, … for each stride)."""


@dataclass(frozen=True)
class Face:
    """One detected face in the pixels of the frame it was found in."""

    box: np.ndarray
    """x, y, width, height."""
    landmarks: np.ndarray
    """[5, 2]: right eye, left eye, nose tip, right mouth corner, left mouth corner."""
    score: float


def to_input(bgr: np.ndarray) -> np.ndarray:
    """A BGR uint8 image → the graph's input: float32 [1, 3, H', W'], zero-padded to multiples of ALIGN."""
    height, width = bgr.shape[:2]
    padded_h, padded_w = -(-height // ALIGN) * ALIGN, -(-width // ALIGN) * ALIGN
    blob = np.zeros((1, 3, padded_h, padded_w), np.float32)
    blob[0, :, :height, :width] = bgr.transpose(2, 0, 1)
    return blob


def decode(outputs: dict[str, np.ndarray], height: int, width: int, score_threshold: float,
           nms_threshold: float, top_k: int = 5000) -> list[Face]:
    """The graph's outputs for an input of `height` × `width` (padded sides) → faces, best first."""
    boxes, marks, scores = [], [], []
    for stride in STRIDES:
        rows, cols = height // stride, width // stride
        cls = outputs[f"cls_{stride}"].reshape(-1)
        obj = outputs[f"obj_{stride}"].reshape(-1)
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        keep = np.flatnonzero(score >= score_threshold)
        if not len(keep):
            continue
        row, col = np.divmod(keep, cols)
        assert rows * cols == len(cls), "YuNet's outputs do not match the input size"
        bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[keep]
        kps = outputs[f"kps_{stride}"].reshape(-1, 10)[keep]
        cx, cy = (col + bbox[:, 0]) * stride, (row + bbox[:, 1]) * stride
        w, h = np.exp(bbox[:, 2]) * stride, np.exp(bbox[:, 3]) * stride
        boxes.append(np.stack([cx - w / 2, cy - h / 2, w, h], axis=1))
        marks.append(np.stack([(kps[:, 0::2] + col[:, None]) * stride, (kps[:, 1::2] + row[:, None]) * stride],
                              axis=2))
        scores.append(score[keep])
    if not scores:
        return []
    boxes_all, marks_all, scores_all = np.concatenate(boxes), np.concatenate(marks), np.concatenate(scores)
    chosen = nms(boxes_all, scores_all, nms_threshold)[:top_k]
    return [Face(boxes_all[i].astype(np.float32), marks_all[i].astype(np.float32), float(scores_all[i]))
            for i in chosen]


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy non-maximum suppression of [N, 4] x, y, w, h boxes: indices kept, best score first."""
    order = list(np.argsort(-scores, kind="stable"))
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    areas = boxes[:, 2] * boxes[:, 3]
    kept = []
    while order:
        best, rest = order[0], np.array(order[1:], dtype=int)
        kept.append(int(best))
        if not len(rest):
            break
        overlap = (np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
                   * np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None))
        iou = overlap / np.maximum(areas[best] + areas[rest] - overlap, 1e-9)
        order = list(rest[iou <= threshold])
    return kept


def detection_scale(height: int, width: int) -> float:
    """The factor a frame is resized by before detection (DETECT_MAX, DETECT_MIN)."""
    if max(height, width) > DETECT_MAX:
        return DETECT_MAX / max(height, width)
    if min(height, width) < DETECT_MIN:
        return min(DETECT_MIN / min(height, width), DETECT_MAX / max(height, width))
    return 1.0


class YuNet:
    """Faces of RGB (or grey) uint8 frames, in the frame's own pixels, best score first."""

    def __init__(self, run: GraphRunner, score_threshold: float = SCORE_THRESHOLD,
                 nms_threshold: float = NMS_THRESHOLD):
        self.run, self.score_threshold, self.nms_threshold = run, score_threshold, nms_threshold

    def faces(self, frame: np.ndarray) -> list[Face]:
        image = frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=2)
        scale = detection_scale(*image.shape[:2])
        if scale != 1.0:
            image = cv2.resize(image, None, fx=scale, fy=scale,
                               interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        blob = to_input(np.ascontiguousarray(image[..., ::-1]))
        found = decode(self.run(blob), blob.shape[2], blob.shape[3], self.score_threshold, self.nms_threshold)
        return [Face(face.box / scale, face.landmarks / scale, face.score) for face in found]


def dynamic_graph(raw: bytes) -> bytes:
    """YuNet's graph with a free input height and width (and output lengths): a frame is run at its shape."""
    import onnx

    model = onnx.load_from_string(raw)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    del model.graph.value_info[:]
    return model.SerializeToString()


def onnx_runner(graph: bytes, providers: list[str] | None = None) -> GraphRunner:
    """A GraphRunner on ONNX Runtime (its CPU kernels unless `providers` say otherwise), one thread (a
    detection is a few milliseconds: more threads cost more than they give, and the stages have the cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(graph, options, providers=providers or ["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    feed = session.get_inputs()[0].name
    return lambda blob: dict(zip(names, session.run(names, {feed: blob})))


@lru_cache(maxsize=1)
def shipped_detector() -> YuNet:
    """YuNet on the package's own graph: for paths that run without an engine folder (training, the
    photo evaluations); the runtime runs the engine folder's sealed copy of the same bytes."""
    return YuNet(onnx_runner(dynamic_graph(SHIPPED.read_bytes())))
