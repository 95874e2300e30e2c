"""Check audio and video on the deployed path, the way held-out speakers and images will be checked:

    python scripts/heldout_check.py --data-dir ../shared/data --split test [--engines engines/default]

- RAVDESS clips of the split's actors, as plain audio files with no transcript (`--asr off`): balanced
  accuracy of the score's sign, happy/calm against sad/angry/fearful/disgust;
- faces of the split's people, each written as a 1 s still-image mp4 (H.264, no audio): 3-way balanced
  accuracy (happiness / neutral+surprise / negative) reading the score as `label7` does.
Runs `Pipeline.predict` (what `cmmsf-run infer` runs) on the engine folder, so it measures the
exported graphs and the runtime's own decoding, not the PyTorch model.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np
from rich.console import Console

from cmmsf.evaluation.metrics import valence_metrics
from cmmsf.data.sources import emotion_score, face_bucket, load_sources_config
from cmmsf.export.default_engines import ensure_default_engines
from cmmsf.runtime.pipeline import Pipeline


def still_mp4(image_rgb: np.ndarray, path: Path, seconds: float = 1.0, fps: int = 30) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.height, stream.width = image_rgb.shape[:2]
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(image_rgb, format="rgb24")
        for _ in range(int(seconds * fps)):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def scores(pipeline: Pipeline, folder: Path) -> dict[str, float]:
    records = pipeline.predict([folder], batch_size=16)
    failed = [r for r in records if "error" in r]
    if failed:
        print(f"{len(failed)} clips failed, e.g. {failed[0]}")
    return {r["id"]: r["score"] for r in records if "score" in r}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", choices=("dev", "test"), default="test")
    parser.add_argument("--engines", type=Path, default=None,
                        help="engine folder [default: the shipped checkpoint's, rebuilt first when stale]")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    rules = load_sources_config()
    if args.engines is None:  # as `infer` does: never measure engines of a replaced checkpoint
        args.engines = ensure_default_engines(Console(stderr=True))
    pipeline = Pipeline.load(args.engines)  # RunSettings defaults: ASR off
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        voices, labels = Path(tmp) / "voices", {}
        voices.mkdir()
        actors = set(rules["ravdess"][f"{args.split}_actors"])
        for row in csv.DictReader(open(args.data_dir / "ravdess" / "labels.csv", encoding="utf-8")):
            if int(row["actor"]) in actors:
                name = row["file"].replace("/", "_")
                shutil.copy(args.data_dir / "ravdess" / row["file"], voices / name)
                labels[Path(name).stem] = emotion_score(row["emotion"], rules, row["intensity"])
        got = scores(pipeline, voices)
        ids = sorted(set(got) & set(labels))
        report["ravdess_audio_only"] = {"n": len(ids), **valence_metrics(np.array([got[i] for i in ids]),
                                                                            np.array([labels[i] for i in ids]))}
        faces, labels = Path(tmp) / "faces", {}
        faces.mkdir()
        bucket = rules["faces"][f"{args.split}_bucket"]
        for row in csv.DictReader(open(args.data_dir / "faces" / "labels.csv", encoding="utf-8")):
            if face_bucket(row["file"], rules["faces"]["buckets"]) == bucket:
                image = cv2.imread(str(args.data_dir / "faces" / row["file"]))
                name = Path(row["file"]).stem
                still_mp4(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), faces / f"{name}.mp4")
                labels[name] = emotion_score(row["emotion"].strip().lower(), rules)
        got = scores(pipeline, faces)
        ids = sorted(set(got) & set(labels))
        report["faces_video_only"] = {"n": len(ids), **valence_metrics(np.array([got[i] for i in ids]),
                                                                         np.array([labels[i] for i in ids]))}
    pipeline.close()
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
