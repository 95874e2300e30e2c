"""Human-facing summaries of a build: the manifest as a table and the commands to run next."""

from __future__ import annotations

from rich.table import Table

from cmmsf.contracts import STAGE_ORDER
from cmmsf.runtime.manifest import Manifest


def _mb(n: int | None) -> str:
    return f"{n / 1e6:.1f}" if n else "-"


def manifest_table(manifest: Manifest) -> Table:
    """One row per stage in pipeline order: sizes per precision, export time, worst parity errors, plan status."""
    parity = manifest.parity.get("stages", {})
    table = Table(title=f"CM-MSF engines ({manifest.model.config['name']} preset, opset {manifest.opset})")
    for column in ("stage", "fp32 MB", "fp16 MB", "plan", "export s", "fp32 err", "fp16 err"):
        table.add_column(column, justify="left" if column in ("stage", "plan") else "right", no_wrap=True)
    seconds = manifest.build_seconds
    for stage in STAGE_ORDER:  # pipeline order (the manifest's JSON keys are sorted)
        artifacts = manifest.stages[stage].artifacts
        table.add_row(stage, _mb(artifacts["fp32"].bytes), _mb(artifacts["fp16"].bytes),
                      "built" if "plan" in artifacts else "-", f"{seconds.get(f'export {stage}', 0):.1f}",
                      f"{parity.get('fp32', {}).get(stage, {}).get('max_abs', float('nan')):.2e}",
                      f"{parity.get('fp16', {}).get(stage, {}).get('max_abs', float('nan')):.2e}")
    return table


def next_commands(folder: str) -> str:
    """What to run after a build, as Ultralytics' exporter prints it."""
    return (f"Next:\n  cmmsf-run infer CLIPS_DIR --engines {folder}\n"
            f"  cmmsf-run bench --engines {folder}\n  cmmsf-export check {folder}")
