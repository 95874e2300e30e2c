"""`cmmsf-run bench`'s report as a reader sees it: the end-to-end table, the per-stage table, memory,
the speed-up baseline, the busy-machine note and the log-axis plot."""

from __future__ import annotations

import json

import matplotlib.image
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cmmsf.cli import run_app
from cmmsf.contracts import STAGES
from cmmsf.runtime.bench import bench_table, busy_note, speedups, stage_table, stages_figure

runner = CliRunner()


def rendered(table) -> str:
    console = Console(record=True, width=250)
    console.print(table)
    return console.export_text()


@pytest.fixture(scope="module")
def report(tiny_engines, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    out, plot = folder / "bench.json", folder / "bench.png"
    result = runner.invoke(run_app, ["bench", "--engines", str(tiny_engines), "--backends", "onnxruntime",
                                     "--precision", "fp32,fp16", "--batch", "1,2", "--runs", "5", "--warmup", "1",
                                     "--no-front-ends", "--json", str(out), "--plot", str(plot)], terminal_width=250)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output, plot


def test_the_per_stage_table_has_each_stage_p50_and_p99_for_every_row(report):
    data, output, _ = report
    text = rendered(stage_table(data))
    for stage in STAGES:
        assert stage in text
    rows = [line for line in text.splitlines() if line.startswith("│ onnxruntime")]
    assert len(rows) == 4  # two precisions × two batch sizes
    fp16_b2 = data["results"]["onnxruntime fp16"]["2"]
    row = next(line for line in rows if "fp16" in line and "│     2 │" in line)
    for stage in STAGES:
        cell = f"{fp16_b2['stages'][stage]['p50']:.2f} / {fp16_b2['stages'][stage]['p99']:.2f}"
        assert cell in row
    assert "per stage: p50 / p99 ms" in output  # the command prints it too


def test_the_end_to_end_table_shows_peak_memory_throughput_and_the_speed_up_over_the_first_row(report):
    data, _, _ = report
    text = rendered(bench_table(data))
    baseline, ratios = speedups(data)
    assert baseline == "onnxruntime fp32"  # no torch in this run: the first row of each batch
    assert ratios[("onnxruntime fp32", "1")] == pytest.approx(1.0)
    fp16 = data["results"]["onnxruntime fp16"]["1"]
    assert ratios[("onnxruntime fp16", "1")] == pytest.approx(
        data["results"]["onnxruntime fp32"]["1"]["end_to_end_ms"]["p50"] / fp16["end_to_end_ms"]["p50"])
    assert "speed-up vs onnxruntime fp32" in text and "peak RSS MB" in text
    assert fp16["peak_rss_mb"] > 50  # a Python process with ONNX Runtime loaded holds tens of MB at least
    row = next(line for line in text.splitlines() if "fp16" in line and "│     1 │" in line)
    assert f"{fp16['peak_rss_mb']:.0f}" in row and f"{fp16['clips_per_s']:.1f}" in row
    assert f"{ratios[('onnxruntime fp16', '1')]:.2f}×" in row


def test_a_busy_machine_is_named_and_a_quiet_one_is_not(report):
    data, _, _ = report
    assert set(data["machine"]) == {"before", "after"} and data["machine"]["before"]["cores"] >= 1
    quiet = {"before": {"load_1min": 0.5, "cores": 2}, "after": {"load_1min": 1.9, "cores": 2}}
    busy = {"before": {"load_1min": 0.5, "cores": 2}, "after": {"load_1min": 3.25, "cores": 2}}
    assert busy_note(quiet) is None
    assert "load average 3.2 on 2 cores" in busy_note(busy)


def test_the_plot_is_drawn_on_a_log_axis_with_each_bar_labelled(report):
    import matplotlib.pyplot as plt

    data, _, plot = report
    assert matplotlib.image.imread(plot).shape[1] > 500
    fig = stages_figure(data)
    try:
        [ax] = fig.axes
        assert ax.get_xscale() == "log"
        labels = [t.get_text() for t in ax.texts]
        assert len(labels) == 4 * (len(STAGES) + 1)  # four rows, each stage and the end to end
        e2e = data["results"]["onnxruntime fp32"]["1"]["end_to_end_ms"]["p50"]
        assert f"{e2e:.2f}" in labels
    finally:
        plt.close(fig)


def test_each_row_shows_the_accuracy_tune_measured_beside_its_speed(report):
    """Speed and accuracy side by side: the guard's verdicts from tuning.json, per backend and precision."""
    data, _, _ = report
    with_guard = {**data, "accuracy": {"onnxruntime fp16": "passed: 0/1353 flips, mosi text mae +0.000",
                                       "onnxruntime fp32": "passed"}}
    text = rendered(bench_table(with_guard))
    assert "tune's guard" in text and "0/1353 flips, mosi text mae +0.000" in text and "the reference" in text
    assert "tune's guard" not in rendered(bench_table({**data, "accuracy": {}}))
