"""Face detection by default: one crop for photos and frames, tracking, `no face`, framing, containers."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cmmsf.cli import run_app
from cmmsf.config import preset
from cmmsf.data.datasets import load_dataset
from cmmsf.evaluation.framing import FACE_PX, FRAME, place_in_frame
from cmmsf.inputs.clips import find_clips
from cmmsf.inputs.features import Preprocessor
from cmmsf.inputs.video import (DITHER, NO_FACE, FaceBox, FaceTracker, centre_square, crop_face, detect_face,
                                frames_to_input, read_face)

from .media import draw_face, write_video

runner = CliRunner()


def paste(photo: np.ndarray, top: int, left: int, shape: tuple[int, int] = FRAME) -> np.ndarray:
    frame = np.full((*shape, 3), 160, np.uint8)
    frame[top: top + photo.shape[0], left: left + photo.shape[1]] = photo
    return frame


def test_a_face_moved_around_a_big_frame_gives_the_crop_of_the_tight_photo():
    photo = draw_face(160, 0.0)
    tight_box = detect_face(photo)
    tight = crop_face(photo, tight_box, 64).astype(np.float32)
    for top, left in ((0, 0), (300, 460), (150, 40), (20, 400)):
        frame = paste(photo, top, left)
        box = detect_face(frame)
        assert box is not None
        # where the face really is, and as big (detection runs at half scale here)
        assert abs(box.cx - (left + tight_box.cx)) < 8 and abs(box.cy - (top + tight_box.cy)) < 8
        assert abs(box.side / tight_box.side - 1) < 0.1
        crop = crop_face(frame, box, 64).astype(np.float32)
        assert np.abs(crop - tight).mean() < 18.0, (top, left)  # grey levels of 255: the same content
        centre = cv2.resize(centre_square(frame), (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
        assert np.abs(centre - tight).mean() > 40.0  # what reading the frame without detection gives


def test_a_still_face_is_read_dithered_the_same_way_in_evaluation_and_at_run_time():
    """Frame j of a clip reads its face's crop moved, zoomed and mirrored as DITHER[j mod 18] says; a photo
    in evaluation (StillFace) gets the same frames as the same face through the run-time tracker."""
    from cmmsf.data.sources import StillFace

    photo = draw_face(160, 0.0)
    box = detect_face(photo)
    plain = crop_face(photo, box, 64)
    np.testing.assert_array_equal(read_face(photo, box, 64, 0), plain)  # the first frame is the crop itself
    np.testing.assert_array_equal(read_face(photo, box, 64, 1), plain[:, ::-1])  # the next, its mirror
    assert read_face(photo, box, 64, 18).tobytes() == plain.tobytes()  # the cycle repeats
    moved = [np.abs(read_face(photo, box, 64, j).astype(float) - plain).mean() for j in range(2, 18, 2)]
    assert all(0.5 < m < 30 for m in moved), moved  # each pair a little moved or zoomed: the same face
    assert max(abs(dx) for dx, *_ in DITHER) * 96 <= 4  # within the training jitter (±4 px of a 96-px face)

    native = crop_face(photo, box, int(round(box.side)))
    still = StillFace(id="p", source="faces", emotion="happy", label=1.0, image=native).sample()
    tracked = frames_to_input(np.repeat(photo[None], 15, axis=0), 64)
    assert still.arrays["video"].shape == tracked.shape == (15, 3, 64, 64)
    assert not np.allclose(still.arrays["video"][0], still.arrays["video"][2])  # frames differ now
    # the same reading both ways, but for resampling (a crop at the photo's size, then resized)
    assert np.abs(still.arrays["video"] - tracked).mean() < 0.15


def test_a_frame_without_a_face_has_none_and_a_clip_without_one_has_no_video(tmp_path):
    rng = np.random.default_rng(0)
    assert detect_face(np.full((480, 640, 3), 120, np.uint8)) is None
    assert detect_face(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)) is None
    assert frames_to_input(np.full((5, 120, 160, 3), 120, np.uint8), 32) is None
    assert frames_to_input(np.full((5, 120, 160, 3), 120, np.uint8), 32, face_crop=False).shape == (5, 3, 32, 32)

    write_video(tmp_path / "empty_room.mp4", seconds=1.0, face=False)
    item = Preprocessor(preset("tiny").input_spec()).from_clip(find_clips([tmp_path / "empty_room.mp4"])[0])
    assert item.arrays["video"] is None and item.absent["video"] == NO_FACE
    assert item.arrays["audio"] is not None  # the tone still counts: the clip is scored on what it has
    opted_out = Preprocessor(preset("tiny").input_spec(), face_crop=False)
    assert opted_out.from_clip(find_clips([tmp_path / "empty_room.mp4"])[0]).arrays["video"].shape[0] == 15


def test_the_tracker_detects_every_kth_frame_smooths_holds_and_lets_go():
    photo = draw_face(160, 0.0)
    frames = [paste(photo, 100, 100)] * 6 + [paste(photo, 106, 104)] * 5 + [np.full((*FRAME, 3), 160, np.uint8)] * 20
    tracker = FaceTracker(detect_every=5, keep=0.5, hold=2)
    boxes = [tracker.update(f) for f in frames]
    assert tracker.detections == 7  # frames 0, 5, 10, ..., 30
    assert boxes[0] == boxes[4] and boxes[5] == boxes[9]  # held between detections
    first, moved = boxes[0], boxes[10]
    assert first.cx < moved.cx < first.cx + 4  # halfway towards the new box (keep=0.5), not a jump
    assert boxes[14] is not None and boxes[24] is not None  # two missed detections (15, 20) are held
    assert boxes[25] is None and boxes[-1] is None  # the third lets go: those frames have no face
    far = FaceBox(0, 0, 50).blend(FaceBox(400, 300, 50), keep=0.9)
    assert far == FaceBox(400, 300, 50)  # another face, not a slow slide across the frame


def test_the_tracker_keeps_its_face_and_takes_the_largest_when_it_is_gone():
    """Of several faces the largest is taken; once followed, a face keeps its place while it is there
    (another face entering does not take over); when it is gone, the largest of the others."""
    big, small = draw_face(200, 0.0), draw_face(120, 0.0)
    both = paste(big, 60, 40)
    both[200:320, 420:540] = small
    first = detect_face(both)
    assert first is not None and first.cx < 300  # the largest: the big face on the left
    assert detect_face(both, min_side=1.5 * first.side) is None  # nothing that large
    tracker = FaceTracker(detect_every=1, keep=0.0)
    followed = tracker.update(paste(small, 200, 420))  # first only the small face (right)
    assert followed.cx > 300
    assert tracker.update(both).cx > 300  # the big one came in: the followed face stays
    alone = paste(big, 60, 40)
    taken = tracker.update(alone)  # the followed face left: the largest of what is there
    assert taken.cx < 300


def test_framing_places_a_photo_of_the_documented_size_somewhere_in_a_webcam_frame():
    rng = np.random.default_rng(3)
    photo = draw_face(96, 0.0)
    for _ in range(5):
        frame = place_in_frame(photo, rng)
        assert frame.shape == (*FRAME, 3) and frame.dtype == np.uint8
        box = detect_face(frame)
        assert box is not None and FACE_PX[0] * 0.6 < box.side < FACE_PX[1] * 1.1


def test_training_photos_are_cropped_by_the_detector_and_faceless_ones_are_skipped(tmp_path):
    (tmp_path / "faces" / "images").mkdir(parents=True)
    rows = []
    for i in range(30):
        name = f"images/P{i}_Q_0001.jpg"
        image = draw_face(96, 0.0) if i % 3 else np.full((96, 96, 3), 90, np.uint8)
        cv2.imwrite(str(tmp_path / "faces" / name), image)
        rows.append({"file": name, "emotion": "neutral", "annotator": "t"})
    with open(tmp_path / "faces" / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "emotion", "annotator"])
        writer.writeheader()
        writer.writerows(rows)
    items, skipped = [], 0
    for split in ("train", "dev", "test"):
        got, why = load_dataset(tmp_path / "faces", split, preset("tiny"))
        items += got
        skipped += why.count
        assert all("no face found" in r for r in why.reasons)
    assert skipped == 10 and len({it.maker.id for it in items}) == 20
    crop = items[0].maker.image
    assert crop.shape[0] == crop.shape[1] and 40 <= crop.shape[0] < 96  # the detector's square, not the file


@pytest.mark.parametrize("name,codecs", [
    ("a.flv", dict(codec="flv")), ("b.ts", dict(codec="mpeg2video", audio_codec="mp2")),
    ("c.3gp", dict(codec="h263", frame_size=(176, 144))), ("d.wmv", dict(codec="wmv2", audio_codec="wmav2")),
    ("e.mpg", dict(codec="mpeg1video", audio_codec="mp2"))])
def test_common_containers_are_clips_with_a_face_and_a_voice(tmp_path, name, codecs):
    write_video(tmp_path / name, seconds=1.0, **codecs)
    clips = find_clips([tmp_path])
    assert [c.id for c in clips] == [name.split(".")[0]]
    item = Preprocessor(preset("tiny").input_spec()).from_clip(clips[0])
    assert item.arrays["video"].shape[1:] == (3, 32, 32) and len(item.arrays["video"]) >= 14
    assert item.arrays["audio"] is not None and 0.8 < item.duration_s < 1.2


def test_an_undecodable_container_is_one_error_line_and_the_run_goes_on(tmp_path, tiny_engines):
    folder = tmp_path / "clips"
    folder.mkdir()
    write_video(folder / "good.ts", seconds=1.0, codec="mpeg2video", audio_codec="mp2")
    (folder / "bad.wmv").write_bytes(b"\x30\x26\xb2\x75" + bytes(range(256)) * 40)  # an ASF header, then junk
    out = tmp_path / "r.jsonl"
    result = runner.invoke(run_app, ["infer", str(folder), "--engines", str(tiny_engines), "--out", str(out)])
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert result.exit_code == 3 and set(records) == {"good", "bad"}
    assert "error" in records["bad"] and "score" in records["good"] and records["good"]["present"]["video"]


def test_a_stream_follows_the_face_and_says_no_face_once_it_has_left(tmp_path, tiny_engines):
    from cmmsf.runtime.pipeline import Pipeline
    from cmmsf.runtime.settings import RunSettings
    from cmmsf.runtime.stream import iter_windows

    write_video(tmp_path / "leaves.mp4", seconds=4.0, face=2.0, frame_size=(160, 120))
    pipeline = Pipeline.load(tiny_engines)
    windows = [record for record, _ in iter_windows(pipeline, str(tmp_path / "leaves.mp4"), window=1.0, hop=1.0)]
    assert [w["start_s"] for w in windows] == [0.0, 1.0, 2.0, 3.0]
    assert windows[0]["present"]["video"] and windows[1]["present"]["video"]
    # the tracker holds the box through two missed detections (2/3 s at 15 fps), then lets go
    assert windows[3]["absent"]["video"] == NO_FACE and not windows[3]["present"]["video"]
    assert all("score" in w for w in windows)  # the tone keeps every window scored
    plain = Pipeline.load(RunSettings(engines=tiny_engines, face_crop=False))
    assert all(r["present"]["video"] for r, _ in iter_windows(plain, str(tmp_path / "leaves.mp4"), window=1.0,
                                                              hop=1.0))
