"""One writer per results file (issue 17): two runs on one --out never tear, repeat or lose a line.

The runs are real `cmmsf-run infer` processes on one tiny engine folder; every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmmsf.cli import run_app

from .media import transcript_clips

ROOT = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from cmmsf.runtime.results import ResultWriter
writer = ResultWriter(sys.argv[1], resume=True)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def clips(tmp_path) -> Path:
    return transcript_clips(tmp_path / "clips", 8)


def infer_process(clips: Path, engines: Path, out: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cmmsf.cli", "infer", str(clips), "--engines", str(engines),
                             "--out", str(out), *flags], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=120)
    return process.returncode, " ".join(err.split())


def ids_in(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in out.read_text().splitlines()]  # a torn line fails here


@pytest.mark.parametrize("flags", [("--resume", "--wait"), ("--overwrite", "--wait")])
def test_two_concurrent_runs_write_every_clip_exactly_once(tiny_engines, clips, tmp_path, flags):
    out = tmp_path / "r.jsonl"
    runs = [infer_process(clips, tiny_engines, out, *flags) for _ in range(2)]
    results = [finish(run) for run in runs]
    assert [code for code, _ in results] == [0, 0], results
    assert sorted(ids_in(out)) == sorted(f"c{n}" for n in range(8))


def test_two_fresh_runs_without_wait_end_in_one_result_or_a_clean_refusal(tiny_engines, clips, tmp_path):
    out = tmp_path / "r.jsonl"
    results = [finish(run) for run in [infer_process(clips, tiny_engines, out) for _ in range(2)]]
    for code, err in results:  # the later one is refused: busy, or (once the first is done) it holds results
        assert code == 0 or (code == 1 and "is being written by pid" in err and "Traceback" not in err) or (
            code == 2 and "already holds results" in err), err
    assert sorted(ids_in(out)) == sorted(f"c{n}" for n in range(8))


def test_a_held_file_is_refused_at_once_naming_the_holder_then_waited_for(tiny_engines, clips, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"id":"old"}\n')
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out), "3"], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        refused = CliRunner().invoke(run_app, ["infer", str(clips), "--engines", str(tiny_engines),
                                               "--out", str(out)])
        said = " ".join(refused.output.split())
        assert refused.exit_code == 1 and f"is being written by pid {holder.pid}" in said, said
        assert time.monotonic() - start < 10 and out.read_text() == '{"id":"old"}\n'  # untouched
        waited = CliRunner().invoke(run_app, ["infer", str(clips), "--engines", str(tiny_engines),
                                              "--out", str(out), "--wait", "--resume"])
        assert waited.exit_code == 0 and "waiting:" in waited.output, waited.output
        assert holder.poll() is not None  # it ran only after the holder let go
        assert sorted(ids_in(out)) == sorted(["old"] + [f"c{n}" for n in range(8)])
    finally:
        holder.kill()
        holder.wait(timeout=10)
