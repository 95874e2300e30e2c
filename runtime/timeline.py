"""One picture of what the model heard, saw and read over time: `stream --plot` and `infer --plot`.

Three panels on the media's full time axis: each window's span drawn at its score on the -3..3 scale
with the neutral band (|score| < 0.5 reads as neutral), the words placed at their times (recognised
speech; a transcript without word times is written once as a line), and the three gates beneath. A clip
from `infer` is one window spanning the clip. Windows overlap, so each shows the words of its own stretch
(up to where the next one starts) and the last one those of its whole span, as the live page does.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

MODALITIES = ("text", "audio", "video")
COLOURS = {"text": "#0969da", "audio": "#bf8700", "video": "#8250df"}
NEUTRAL = 0.5


def placed_words(records: list[dict]) -> list[dict]:
    """Recognised words with times, each from the window that owns its start (no repeats from overlaps)."""
    words = []
    for i, record in enumerate(records):
        start = record.get("start_s", 0.0)
        until = records[i + 1].get("start_s", float("inf")) if i + 1 < len(records) else float("inf")
        words += [w for w in record.get("words", []) if start <= w["start_s"] < until]
    return words


def spans(records: list[dict]) -> list[tuple[float, float, dict]]:
    """(start, end, record) per window; a clip record without a span covers its own duration."""
    return [(r.get("start_s", 0.0), r.get("end_s", r.get("duration_s") or 0.0), r) for r in records]


def label_above(i: int, windows: list[tuple[float, float, dict]], close: float = 0.6) -> bool:
    """Whether window i's score label goes above its span: away from the overlapping spans whose scores are
    within `close` of it (two labels between two near lines would print over each other), else above."""
    start, stop, record = windows[i]
    near = [r["score"] for j, (s, e, r) in enumerate(windows) if j != i and "score" in r and s < stop and e > start
            and abs(r["score"] - record["score"]) < close]
    return not near or record["score"] >= float(np.mean(near))


def plot_timeline(records: list[dict], path: Path, title: str) -> None:
    """Draw the windows (or one clip) to a PNG."""
    import matplotlib.pyplot as plt

    fig = timeline_figure(records, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def timeline_figure(records: list[dict], title: str):
    """The three panels (score spans, words, gates) as a matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = spans(records)
    end = max((e for _, e, _ in windows), default=1.0) or 1.0
    fig, (score_ax, words_ax, gates_ax) = plt.subplots(3, 1, figsize=(10, 5.2), sharex=True,
                                                      gridspec_kw={"height_ratios": [3, 0.9, 1.3]})
    score_ax.axhspan(-NEUTRAL, NEUTRAL, color="#eaeef2", zorder=0, label="neutral band")
    score_ax.axhline(0, color="#8c959f", lw=0.8)
    for i, (start, stop, record) in enumerate(windows):
        if "score" not in record:
            score_ax.axvspan(start, stop, color="#cf222e", alpha=0.12, lw=0)
            score_ax.text((start + stop) / 2, 0, "error", color="#cf222e", ha="center", va="center", fontsize=8)
            continue
        score, colour = record["score"], ("#1a7f37" if record["score"] >= 0 else "#cf222e")
        score_ax.plot([start, stop], [score, score], color=colour, lw=3, solid_capstyle="butt", gid="window")
        score_ax.plot([start, stop], [score, score], ls="none", marker="|", ms=12, mew=2, color=colour)
        score_ax.annotate(f"{score:+.2f}", ((start + stop) / 2, score), textcoords="offset points",
                          xytext=(0, 6 if label_above(i, windows) else -13), ha="center", fontsize=8, color=colour)
        for modality in MODALITIES:
            gate = record.get("gates", {}).get(modality)
            if gate is not None and record.get("present", {}).get(modality, True):  # an absent one has no gate
                gates_ax.plot([start, stop], [gate, gate], color=COLOURS[modality], lw=2,
                              label=modality if i == 0 else None)
    score_ax.set_ylim(-3.2, 3.2)
    score_ax.set_yticks(range(-3, 4))
    score_ax.set_ylabel("sentiment")
    score_ax.set_title(title, fontsize=10)
    score_ax.grid(axis="y", color="#eaeef2", lw=0.6)

    words = placed_words(records)
    for i, word in enumerate(words):
        words_ax.text(word["start_s"], 0.7 if i % 2 == 0 else 0.25, word["text"], fontsize=7, va="center",
                      clip_on=True)
    transcript = next((r.get("transcript") for r in records if r.get("transcript")), None)
    if not words and transcript:
        source = next((r.get("transcript_source") for r in records if r.get("transcript")), "")
        line = textwrap.shorten(f"transcript ({source}, no word times): {transcript}", 150)
        words_ax.text(0.005, 0.5, line, transform=words_ax.transAxes, fontsize=7, va="center", style="italic")
    elif not words:
        words_ax.text(0.005, 0.5, "no words", transform=words_ax.transAxes, fontsize=7, va="center", color="grey")
    words_ax.set_yticks([])
    words_ax.set_ylabel("words", rotation=0, ha="right", va="center")
    words_ax.set_ylim(0, 1)

    gates_ax.set_ylim(0, 1)
    gates_ax.set_ylabel("gates")
    gates_ax.set_xlabel("time (s)")
    gates_ax.set_xlim(0, end)
    if gates_ax.lines:
        gates_ax.legend(loc="upper right", fontsize=7, ncol=3, frameon=False)
    fig.tight_layout()
    return fig
