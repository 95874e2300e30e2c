"""Rich tables shared by the CLI commands: metrics, infer summaries, benchmarks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from rich.table import Table

from cmmsf.evaluation.metrics import METRIC_KEYS

METRIC_LABELS = {"mae": "MAE", "corr": "Corr", "acc7": "Acc-7", "acc5": "Acc-5", "acc2_has0": "Acc-2 has0",
                 "acc2_non0": "Acc-2 non0", "f1_has0": "F1 has0", "f1_non0": "F1 non0", "n": "n"}


DECIMALS = {"mae": 3, "corr": 3, "neutral_abs_median": 2, "emotion_spread": 2}
"""Digits shown per metric; accuracies and percentages get one."""


def _fmt(key: str, value: float) -> str:
    if key == "n":
        return str(int(value))
    return f"{value:.{DECIMALS.get(key, 1)}f}"


def metrics_table(rows: dict[str, dict], stds: dict[str, dict] | None = None) -> Table:
    """One row per named metric dict; where `stds` has the row, cells read mean ± std."""
    table = Table(title="metrics (MMSA definitions; accuracies and F1 in %)")
    table.add_column("", no_wrap=True)
    for key in METRIC_KEYS:
        table.add_column(METRIC_LABELS[key], justify="right", no_wrap=True)
    for name, metrics in rows.items():
        spread = (stds or {}).get(name, {})
        table.add_row(name, *(_fmt(key, metrics[key]) + (f" ± {_fmt(key, spread[key])}" if spread.get(key) else "")
                              for key in METRIC_KEYS))
    return table


SUBSET_COLUMNS = ("n", "mae", "corr", "acc2_non0", "acc7", "valence2_bal", "valence3_bal", "valence3_seen", "no_face",
                  "happy_vs_negative_bal", "neutral_abs_median", "emotion_spread", "voice_left_out", "framing_agree")


def subset_view(rows: list, title: str) -> Table:
    """cmmsf.evaluation.evaluator.SubsetRow rows: what each modality contributes per source, and the gates."""
    labels = {**METRIC_LABELS, "acc2_non0": "Acc-2", "valence2_bal": "val-2", "valence3_bal": "val-3",
              "valence3_seen": "val-3 seen", "no_face": "no face", "happy_vs_negative_bal": "hap/neg",
              "neutral_abs_median": "|neutral|", "emotion_spread": "spread", "voice_left_out": "voice out",
              "framing_agree": "framed"}
    table = Table(title=title, caption="Acc-2: non-0 · val-2, val-3: valence balanced accuracy · val-3 seen: counting "
                  "photos with no face found as misses · no face: % of photos with none found · hap/neg: sign of "
                  "happy vs sad/angry/fearful/disgust, balanced · |neutral|: median |score| of neutral examples · "
                  "spread: per speaker, std of the per-emotion mean score · voice out: % of voices unlike those it "
                  "learned, left out (counted as 0 where nothing else is left) · framed: % of photos placed small in a "
                  "640×480 frame that keep their 3-way class (cmmsf/evaluation/evaluator.py)")
    table.add_column("source", no_wrap=True)
    table.add_column("modalities", no_wrap=True)
    for key in SUBSET_COLUMNS:
        table.add_column(labels[key], justify="right", no_wrap=True)
    table.add_column("gate")
    for row in rows:
        gate = "" if not row.gate else ("[green]pass[/]" if not row.failures else "[red]FAIL: " + "; ".join(row.failures) + "[/]")
        table.add_row(row.source, row.subset, *(_fmt(k, row.metrics[k]) if np.isfinite(row.metrics.get(k, np.nan))
                                                else "-" for k in SUBSET_COLUMNS), gate)
    return table


def skipped_summary(skipped: list[Path]) -> str:
    """`3 files: .jpg ×2, .pdf` for files under the inputs that are not clips."""
    kinds = Counter("(not a regular file)" if not p.is_file() else p.suffix.lower() or "(no suffix)" for p in skipped)
    return f"{len(skipped)} files that are not clips: " + ", ".join(
        f"{kind} ×{n}" if n > 1 else kind for kind, n in kinds.most_common(6)) + (", …" if len(kinds) > 6 else "")


PER_CLIP_TABLE_MAX = 20
"""Up to this many clips, `infer` prints one row per clip before the summary."""


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def clips_table(records: list[dict]) -> Table:
    """One row per clip: id, score, label, the modalities it used and why any other was absent."""
    table = Table(title="clips", title_justify="left")
    for column in ("clip", "score", "label", "used", "absent (why)"):
        table.add_column(column, justify="right" if column == "score" else "left")
    for r in records:
        if "error" in r:
            table.add_row(r["id"], "", "[red]error[/]", "", r["error"])
            continue
        used = ", ".join(m for m, here in r["present"].items() if here)
        absent = "; ".join(f"{m}: {why}" for m, why in (r.get("absent") or {}).items())
        table.add_row(r["id"], f"{r['score']:+.2f}", r["label7"], used or "none", absent)
    return table


def infer_summary(records: list[dict], seconds: float) -> Table:
    """Counts, error list head, mean score, per-stage median milliseconds and warnings."""
    good = [r for r in records if "error" not in r]
    table = Table(title=f"{plural(len(good), 'clip')} scored, {len(records) - len(good)} failed, in {seconds:.1f} s")
    table.add_column("what", no_wrap=True)
    table.add_column("value")
    warned = [r for r in good if r.get("warnings")]
    if warned:
        head = ", ".join(r["id"] for r in warned[:3]) + (", …" if len(warned) > 3 else "")
        table.add_row("warnings", f"{plural(len(warned), 'clip')} ({head}): see `warnings` in their records")
    if good:
        scores = np.array([r["score"] for r in good])
        table.add_row("mean score", f"{scores.mean():+.3f} (min {scores.min():+.3f}, max {scores.max():+.3f})")
        stages = list(dict.fromkeys(s for r in good for s in r["stage_ms"]))  # asr: only the clips it heard
        for stage in stages:
            timed = [r["stage_ms"][stage] for r in good if stage in r["stage_ms"]]
            table.add_row(f"{stage} p50", f"{np.median(timed):.1f} ms")
        masked = sorted({m for r in good for m in r["masked"]})
        if masked:
            table.add_row("masked", f"{', '.join(masked)}: the checkpoint never learned them")
        truncated = sum(1 for r in good if r["truncated"])
        if truncated:
            table.add_row("truncated", f"{plural(truncated, 'clip')} longer than the model's maximum (first part used)")
        table.add_row("provider", good[0]["provider"])
    for r in [r for r in records if "error" in r][:5]:
        table.add_row(f"[red]{r['id']}[/]", r["error"])
    return table


def backends_table(rows: list) -> Table:
    """`cmmsf-run backends`: each registered backend (a BackendSpec) and whether it can run here."""
    table = Table(title="backends (runtime/backends: one module each)", title_justify="left")
    for column in ("backend", "precisions", "devices", "here", "what it is"):
        table.add_column(column)
    for spec, problem in rows:
        table.add_row(spec.name, ", ".join(spec.precisions) or "as its plans", ", ".join(spec.devices),
                      "[green]yes[/]" if problem is None else f"[yellow]no[/]: {problem}", spec.summary)
    return table
