"""`cmmsf-run infer --ray local`: Ray Data on a local Ray instance gives the records a single process
gives, error line included, and resumes like it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.media import write_video, write_wav

pytest.importorskip("ray.data", reason="--ray needs Ray Data: pip install -e '.[ray]'")

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("good", "terrible", "movie", "plot", "actors", "boring", "wonderful", "really", "not", "the", "was")


@pytest.fixture(scope="module")
def fifty_clips(tmp_path_factory):
    """40 transcripts, 6 tones, 3 drawn faces with sound, and one mp4 that is not a video."""
    folder = tmp_path_factory.mktemp("fifty")
    for i in range(40):
        (folder / f"text_{i:02d}.txt").write_text(" ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(3 + i % 9)))
    for i in range(6):
        write_wav(folder / f"tone_{i}.wav", seconds=0.6 + 0.2 * i, tone_hz=200.0 + 60 * i)
    for i in range(3):
        write_video(folder / f"face_{i}.mp4", seconds=0.8 + 0.3 * i, fps=15, tone_hz=300.0 + 100 * i)
    (folder / "broken.mp4").write_bytes(b"\x00\x01 this is no video" * 50)
    return folder


@pytest.fixture
def ray_tmp():
    """Ray's session folder, short (its sockets live there) and removed afterwards."""
    folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def infer(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cmmsf.cli", "infer", *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env=env)


def records(path: Path) -> dict[str, dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    by_id = {r["id"]: r for r in lines}
    assert len(by_id) == len(lines), "a clip was written twice"
    return by_id


def test_ray_gives_the_single_process_records(fifty_clips, tiny_engines, tmp_path, ray_tmp):
    single, distributed = tmp_path / "single.jsonl", tmp_path / "ray.jsonl"
    done = infer(str(fifty_clips), "--engines", str(tiny_engines), "--asr", "off", "--out", str(single))
    assert done.returncode == 3, done.stderr[-2000:]  # 3: finished, one clip failed
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    done = infer(str(fifty_clips), "--engines", str(tiny_engines), "--asr", "off", "--out", str(distributed),
                 "--ray", "local", "--batch", "4", env=env)
    assert done.returncode == 3, done.stderr[-3000:] + done.stdout[-3000:]
    want, got = records(single), records(distributed)
    assert len(want) == 50 and set(got) == set(want)
    assert set(got["broken"]) == {"id", "error"} and got["broken"]["error"] == want["broken"]["error"]
    for clip_id, record in want.items():
        if "error" in record:
            continue
        assert abs(got[clip_id]["score"] - record["score"]) <= 2e-4, clip_id  # records round to 1e-4
        assert got[clip_id]["present"] == record["present"] and got[clip_id]["label7"] == record["label7"]

    # resume: keep 20 lines, run again; every clip ends up exactly once, the kept lines untouched
    kept = distributed.read_text().splitlines()[:20]
    distributed.write_text("\n".join(kept) + "\n")
    done = infer(str(fifty_clips), "--engines", str(tiny_engines), "--asr", "off", "--out", str(distributed),
                 "--ray", "local", "--batch", "4", "--resume", env=env)
    assert "resuming: 20 of 50" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    again = records(distributed)
    scored = [line for line in kept if '"error"' not in line]  # a failed clip is retried: its line replaced
    assert set(again) == set(want) and distributed.read_text().splitlines()[:len(scored)] == scored


def test_an_unreachable_cluster_is_one_error_line(fifty_clips, tiny_engines, tmp_path, ray_tmp):
    done = infer(str(fifty_clips / "text_00.txt"), "--engines", str(tiny_engines), "--out", str(tmp_path / "r.jsonl"),
                 "--ray", "127.0.0.1:1", env={**os.environ, "RAY_TMPDIR": ray_tmp})
    assert done.returncode == 1 and "error:" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
