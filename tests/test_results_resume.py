"""A results file is never emptied by accident, resumes in bounded memory, keeps aside what is not a
line, and retries the clips that failed (issue 40 item 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmmsf.cli import run_app
from cmmsf.runtime.results import MAX_RECORD, ResultWriter, scan

from .media import transcript_clips

ROOT = Path(__file__).resolve().parents[1]


def infer(*args: str):
    return CliRunner().invoke(run_app, ["infer", *map(str, args)])


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def clips(tmp_path) -> Path:
    return transcript_clips(tmp_path / "clips", 3)


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_a_file_that_holds_results_is_refused_without_resume_or_overwrite(tiny_engines, clips, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"id": "earlier", "score": 1.0}\n')
    refused = infer(clips, "--engines", tiny_engines, "--out", out)
    said = flat(refused.output)
    assert refused.exit_code == 2 and "already holds results" in said and "--overwrite" in said, said
    assert out.read_text() == '{"id": "earlier", "score": 1.0}\n'  # untouched
    both = infer(clips, "--engines", tiny_engines, "--out", out, "--resume", "--overwrite")
    assert both.exit_code == 2 and "exclude each other" in flat(both.output)
    replaced = infer(clips, "--engines", tiny_engines, "--out", out, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert sorted(ids(out)) == ["c0", "c1", "c2"]
    empty = tmp_path / "empty.jsonl"
    empty.touch()  # an empty file holds nothing to lose
    assert infer(clips, "--engines", tiny_engines, "--out", empty).exit_code == 0


def test_resume_retries_failed_clips_once_each_unless_no_retry(tiny_engines, clips, tmp_path):
    out = tmp_path / "r.jsonl"
    assert infer(clips, "--engines", tiny_engines, "--out", out).exit_code == 0
    good = {json.loads(line)["id"]: line for line in out.read_text().splitlines()}
    failed = ('{"id": "c0", "error": "cannot open c0.txt: disk was unplugged"}')
    out.write_text(good["c1"] + "\n" + failed + "\n")

    kept = infer(clips, "--engines", tiny_engines, "--out", out, "--resume", "--no-retry")
    assert kept.exit_code == 3, kept.output  # the earlier failure still counts
    assert "1 of them failed and are kept" in flat(kept.output)
    assert sorted(ids(out)) == ["c0", "c1", "c2"] and '"error"' in out.read_text()

    retried = infer(clips, "--engines", tiny_engines, "--out", out, "--resume")
    assert retried.exit_code == 0, retried.output
    assert "retrying 1 clip(s) that failed before" in flat(retried.output)
    assert sorted(ids(out)) == ["c0", "c1", "c2"] and '"error"' not in out.read_text()  # each once, all scored
    assert out.read_text().splitlines()[0] == good["c1"]  # kept lines are untouched
    assert not list(tmp_path.glob(".r.jsonl.*"))  # no temporary left


def test_a_torn_last_line_is_cut_and_said(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"id": "a", "score": 0.5}\n{"id": "b", "sco')
    writer = ResultWriter(out, resume=True)
    writer.close()
    assert writer.done == {"a"} and out.read_text() == '{"id": "a", "score": 0.5}\n'
    assert any("cut a torn last line (16 bytes)" in note for note in writer.notes), writer.notes


def test_lines_that_are_not_records_are_counted_and_left(tmp_path):
    out = tmp_path / "r.jsonl"
    text = '{"id": "a", "score": 0.5}\nnot json at all\n[1, 2]\n\n{"id": "b", "score": 0.1}\n'
    out.write_text(text)
    writer = ResultWriter(out, resume=True)
    writer.close()
    assert writer.done == {"a", "b"} and out.read_text() == text
    assert any("2 line(s)" in note for note in writer.notes), writer.notes


MEASURE = """
import resource, sys
from cmmsf.runtime.results import ResultWriter
writer = ResultWriter(sys.argv[1], resume=True)
writer.close()
print(sorted(writer.done), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "|".join(writer.notes))
"""


def test_a_huge_tail_resumes_in_bounded_memory_and_is_kept_aside(tmp_path):
    """1 GiB without a newline after one record (sparse: no disk used): read in chunks, the file as it
    was kept as r.jsonl.torn (a hard link, not a copy), the record kept."""
    out = tmp_path / "r.jsonl"
    out.write_text('{"id": "a", "score": 0.5}\n')
    os.truncate(out, 1 << 30)
    baseline = subprocess.run([sys.executable, "-c", "import resource, cmmsf.runtime.results; "
                               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"],
                              cwd=ROOT, capture_output=True, text=True, check=True)
    done = subprocess.run([sys.executable, "-c", MEASURE, str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found, peak_mb, notes = done.stdout.split(" ", 2)[0], int(done.stdout.split()[1]), done.stdout
    assert found == "['a']"
    assert peak_mb < int(baseline.stdout) + 64, (peak_mb, baseline.stdout)  # chunks, never the whole file
    assert out.read_text() == '{"id": "a", "score": 0.5}\n'
    torn = tmp_path / "r.jsonl.torn"
    assert torn.stat().st_size == 1 << 30 and "is kept as" in notes and str(torn) in notes


def test_scan_skips_an_endless_line_without_holding_it(tmp_path):
    out = tmp_path / "r.jsonl"
    with open(out, "wb") as handle:
        handle.write(b'{"id": "a"}\n' + b"x" * (3 * MAX_RECORD) + b'\n{"id": "b", "error": "bad"}\n')
    fd = os.open(out, os.O_RDONLY)
    try:
        found = scan(fd)
    finally:
        os.close(fd)
    assert found.done == {"a"} and found.failed == {"b"} and found.not_records == 1 and found.tail == 0


def test_a_retry_rewrite_drops_only_the_failed_clips_lines(tmp_path):
    """Every other line, one too long to be a record included, is copied as it was."""
    out = tmp_path / "r.jsonl"
    endless = b"x" * (2 * MAX_RECORD) + b"\n"
    out.write_bytes(b'{"id": "a", "score": 0.5}\n' + endless + b'{"id": "b", "error": "bad"}\nnot json\n')
    writer = ResultWriter(out, resume=True)
    writer.close()
    assert writer.done == {"a"}
    assert out.read_bytes() == b'{"id": "a", "score": 0.5}\n' + endless + b"not json\n"
