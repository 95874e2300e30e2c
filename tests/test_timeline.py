"""The timeline picture of `stream --plot` and `infer --plot`: full axis, spans, words at their times, gates."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest
from typer.testing import CliRunner

from cmmsf.cli import run_app
from cmmsf.runtime.timeline import placed_words, timeline_figure

from .media import write_video

runner = CliRunner()


def window(start: float, end: float, score: float | None, words=(), video: bool = True) -> dict:
    record = {"start_s": start, "end_s": end, "id": f"{start:.2f}-{end:.2f}",
              "words": [{"text": t, "start_s": s, "end_s": s + 0.3} for t, s in words]}
    if score is None:
        return {**record, "error": "no usable input"}
    return {**record, "score": score, "gates": {"text": 0.4, "audio": 0.5, "video": 0.6 if video else 0.0},
            "present": {"text": True, "audio": True, "video": video}}


def test_each_recognised_word_is_placed_once_by_the_window_that_owns_its_start():
    records = [window(0, 4, 1.0, [("hello", 0.5), ("there", 2.5)]),
               window(2, 6, 0.5, [("there", 2.6), ("friend", 4.5)]),  # heard again by the overlap
               window(4, 7, -0.5, [("friend", 4.4), ("bye", 6.0)])]
    assert [(w["text"], w["start_s"]) for w in placed_words(records)] == [
        ("hello", 0.5), ("there", 2.6), ("friend", 4.4), ("bye", 6.0)]


def test_the_figure_spans_the_whole_media_with_each_window_its_words_and_its_gates():
    records = [window(0, 4, 1.25, [("good", 1.0)]), window(2, 6, None), window(4, 7.5, -2.0, [("bad", 5.0)], video=False)]
    fig = timeline_figure(records, "clip")
    try:
        score_ax, words_ax, gates_ax = fig.axes
        assert gates_ax.get_xlim() == pytest.approx((0, 7.5))
        assert score_ax.get_ylim()[0] < -3 and score_ax.get_ylim()[1] > 3
        spans = [tuple(line.get_xdata()) + (line.get_ydata()[0],) for line in score_ax.lines
                 if line.get_gid() == "window"]
        assert (0, 4, 1.25) in spans and (4, 7.5, -2.0) in spans
        assert len(spans) == 2  # the error window is no span ...
        assert "error" in [t.get_text() for t in score_ax.texts]  # ... but is marked
        assert {"+1.25", "-2.00"} <= {t.get_text() for t in score_ax.texts}
        assert [t.get_text() for t in words_ax.texts] == ["good", "bad"]
        assert [t.get_position()[0] for t in words_ax.texts] == [1.0, 5.0]
        gates = sorted((tuple(line.get_xdata()), line.get_ydata()[0]) for line in gates_ax.lines)
        assert gates == sorted([((0, 4), 0.4), ((0, 4), 0.5), ((0, 4), 0.6), ((4, 7.5), 0.4), ((4, 7.5), 0.5)])
    finally:
        plt.close(fig)


def test_a_transcript_without_word_times_is_written_once_as_a_line():
    records = [{**window(0, 4, 0.3), "transcript": "what a day", "transcript_source": "sidecar"}]
    fig = timeline_figure(records, "clip")
    try:
        [line] = fig.axes[1].texts
        assert line.get_text() == "transcript (sidecar, no word times): what a day"
    finally:
        plt.close(fig)


def test_infer_plot_writes_one_timeline_per_clip(tiny_engines, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "one.mp4", seconds=1.5)
    (clips / "one.txt").write_text("this is fine")
    (clips / "two.txt").write_text("a terrible day")
    out, plots = tmp_path / "r.jsonl", tmp_path / "plots"
    result = runner.invoke(run_app, ["infer", str(clips), "--engines", str(tiny_engines), "--out", str(out),
                                     "--plot", str(plots)])
    assert result.exit_code == 0, result.output
    ids = {json.loads(line)["id"] for line in out.read_text().splitlines()}
    assert ids == {"one", "two"}
    assert sorted(p.name for p in plots.iterdir()) == ["one.png", "two.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in plots.iterdir())


def test_labels_of_overlapping_spans_at_close_scores_sit_on_opposite_sides():
    """The MOSI mp4's windows (-1.37, -2.01, -2.27, hop 2 s): the two close ones get their labels outside
    the gap between their lines (before, both sat between them and printed over each other)."""
    fig = timeline_figure([window(0, 4, -1.37), window(2, 6, -2.01), window(4, 7.5, -2.27)], "mp4")
    try:
        offsets = {t.get_text(): t.xyann[1] for t in fig.axes[0].texts}
        assert offsets["-2.01"] > 0 > offsets["-2.27"] and offsets["-1.37"] > 0
    finally:
        plt.close(fig)
