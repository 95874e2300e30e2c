"""YuNet as the engine folder's face detector (issue 41): our numpy decoding against OpenCV's own
`cv2.FaceDetectorYN` on real photos, crops turned level by the eyes, the sealed graph refused when changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cmmsf.export.inspect import inspect_folder
from cmmsf.inputs.face_detector import SHIPPED, YuNet, decode, dynamic_graph, nms, onnx_runner, to_input
from cmmsf.inputs.video import FaceBox, crop_face, detect_face
from cmmsf.runtime.engine_folder import EngineFolder, ManifestError

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "images"
photos = pytest.mark.skipif(not FACES.is_dir(), reason="needs ../shared/data/faces")


@pytest.fixture(scope="module")
def run():
    return onnx_runner(dynamic_graph(SHIPPED.read_bytes()))


@photos
def test_our_decoding_matches_opencvs_face_detector_on_real_photos(run):
    """Boxes, landmarks and scores as cv2.FaceDetectorYN gives them (OpenCV decodes the same graph in C++),
    on press photos framed at several sizes; the same faces found."""
    compared = 0
    for path in sorted(FACES.glob("*.jpg"))[:24]:
        bgr = cv2.imread(str(path))
        for border in (0, 40, 120):
            image = cv2.copyMakeBorder(bgr, border, border, border + 30, border, cv2.BORDER_REPLICATE)
            reference = cv2.FaceDetectorYN.create(str(SHIPPED), "", (image.shape[1], image.shape[0]), 0.5, 0.3, 50)
            _, expected = reference.detect(image)
            blob = to_input(image)
            ours = decode(run(blob), blob.shape[2], blob.shape[3], 0.5, 0.3)
            assert len(ours) == (0 if expected is None else len(expected)), path.name
            for face, row in zip(ours, [] if expected is None else expected):
                np.testing.assert_allclose(face.box, row[:4], atol=0.05)
                np.testing.assert_allclose(face.landmarks.reshape(-1), row[4:14], atol=0.05)
                assert abs(face.score - row[14]) < 1e-3
                compared += 1
    assert compared >= 60


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 10, 10]], np.float32)
    assert nms(boxes, np.array([0.8, 0.9, 0.7]), 0.3) == [1, 2]


@photos
def test_a_tilted_face_is_turned_level_closer_to_its_upright_crop(run):
    """A real face turned by 15° either way: the crop turned by the eyes' angle is nearer the upright
    photo's crop than the same box left unturned."""
    detector = YuNet(run)
    nearer = 0
    for path in sorted(FACES.glob("*.jpg"))[200:210]:
        photo = cv2.resize(cv2.imread(str(path))[..., ::-1], (160, 160))
        upright_box = detect_face(photo, detector=detector)
        upright = crop_face(photo, upright_box, 64).astype(np.float32)
        framed = cv2.copyMakeBorder(photo, 60, 60, 60, 60, cv2.BORDER_REPLICATE)
        for angle in (-15, 15):
            turned = cv2.warpAffine(framed, cv2.getRotationMatrix2D((140, 140), angle, 1.0), (280, 280),
                                    borderMode=cv2.BORDER_REPLICATE)
            box = detect_face(turned, detector=detector)
            assert box is not None and np.sign(box.angle - upright_box.angle) == -np.sign(angle)
            aligned = np.abs(crop_face(turned, box, 64).astype(np.float32) - upright).mean()
            level = FaceBox(box.cx, box.cy, box.side, 0.0)
            unturned = np.abs(crop_face(turned, level, 64).astype(np.float32) - upright).mean()
            nearer += aligned < unturned
    assert nearer >= 18  # of 20


def test_no_face_in_flat_or_noisy_frames(run):
    detector, rng = YuNet(run), np.random.default_rng(0)
    assert detect_face(np.full((480, 640, 3), 120, np.uint8), detector=detector) is None
    assert all(detect_face(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), detector=detector) is None
               for _ in range(10))


def test_the_engine_folders_detector_is_sealed(tiny_engines, tmp_path):
    engines = EngineFolder.open(tiny_engines)
    assert engines.detector_file.name == "face_detector.onnx"
    assert (tiny_engines / "face_detector.LICENSE").read_text().count("MIT License") == 1
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_engines, copy)
    graph = copy / "face_detector.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")
    with pytest.raises(ManifestError, match="face_detector.onnx is missing or does not match its sha256"):
        EngineFolder.open(copy).face_detector()


def test_a_detector_plan_is_sealed_like_every_artifact(tiny_engines, tmp_path):
    """Where plans were built the manifest seals `face_detector.plan` too: a changed plan is refused before
    TensorRT deserialises it (the plan's bytes here are a stand-in: this machine has no TensorRT)."""
    from cmmsf.runtime.manifest import DETECTOR_PLAN, artifact_record, write_manifest

    copy = tmp_path / "tiny"
    shutil.copytree(tiny_engines, copy)
    assert EngineFolder.open(copy).detector_plan is None  # built without TensorRT: no plan, none asked for
    plan = copy / DETECTOR_PLAN
    plan.write_bytes(b"serialised engine")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["detector"]["plan"] = artifact_record(plan)
    write_manifest(copy, manifest)
    assert EngineFolder.open(copy).detector_plan == plan
    inspected = inspect_folder(EngineFolder.open(copy))["files"]["face_detector plan"]
    assert inspected["file"] == DETECTOR_PLAN and inspected["bytes"] == len(b"serialised engine")
    plan.write_bytes(b"serialised engin3")
    with pytest.raises(ManifestError, match="face_detector.plan is missing or does not match its sha256"):
        EngineFolder.open(copy).detector_plan  # noqa: B018


@photos
def test_a_training_photo_framed_is_read_as_a_webcam_would_crop_it_and_only_in_training():
    from cmmsf.data.sources import StillFace, face_photo, framed_crops

    rgb = cv2.cvtColor(cv2.imread(str(sorted(FACES.glob("*.jpg"))[0])), cv2.COLOR_BGR2RGB)
    framed = framed_crops(rgb, 3, "images/a.jpg")
    assert len(framed) == 3 and all(c.shape[0] == c.shape[1] for c in framed)
    assert all(np.array_equal(a, b) for a, b in zip(framed, framed_crops(rgb, 3, "images/a.jpg")))  # seeded
    assert not np.array_equal(framed[0], framed_crops(rgb, 1, "images/b.jpg")[0])
    # placed at 130-200 px, the face is cut at the frame's resolution, not the photo's
    tight = face_photo(rgb)
    assert {c.shape[0] for c in framed} != {tight.shape[0]}
    face = StillFace("a", "faces", "happy", 2.0, image=tight, framed=framed, image_size=32, max_shift=0)
    plain = face.sample().arrays["video"]
    assert np.allclose(plain[0], StillFace("a", "faces", "happy", 2.0, image=tight, image_size=32).sample()
                       .arrays["video"][0])  # evaluation never reads the framed crops
    firsts = {face.sample(np.random.default_rng(seed)).arrays["video"][0].tobytes() for seed in range(24)}
    assert len(firsts) > 2  # training draws among the tight crop and the framed ones (and their mirrors)
