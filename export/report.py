"""Human-facing summaries of a build: the manifest as a table and the commands to run next."""

from __future__ import annotations

from rich.table import Table

from cmmsf.contracts import LENGTH_AXES, STAGE_ORDER
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


def _shape(shape: list) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def io_table(report: dict) -> Table:
    """Each stage's inputs and outputs as its graph declares them, with the build profile per input."""
    table = Table(title="stage inputs and outputs (read from the ONNX graphs; dynamic axes by name)")
    for column in ("stage", "io", "name", "dtype", "shape", "profile min", "opt", "max"):
        table.add_column(column, no_wrap=True, min_width=len(column))
    notes = []
    for stage, info in report["stages"].items():
        first = True
        for role, key in (("in", "inputs"), ("out", "outputs")):
            for tensor in info[key]:
                profile = tensor.get("profile") or {}
                table.add_row(stage if first else "", role, tensor["name"], tensor["dtype"], _shape(tensor["shape"]),
                              *(_shape(profile[k]) if k in profile else "-" for k in ("min", "opt", "max")))
                first = False
        if info["io_read_from"] is None:
            notes.append(f"[red]{stage}: not read, no ONNX artifact matched its sha256[/]")
        if info["io_differs"]:
            notes.append(f"[yellow]{stage}: a graph declares other inputs or outputs than the fp32 one[/]")
        table.add_section()
    axes = "dynamic axes: B batch, " + ", ".join(f"{axis} {modality} steps" for axis, modality in LENGTH_AXES.items())
    table.caption = "\n".join([axes, *notes])
    return table


def artifacts_table(report: dict) -> Table:
    """Each artifact's precision, file, size, opset and sha256, re-hashed against the manifest."""
    table = Table(title="artifacts (sha256 re-hashed now)")
    for column in ("stage", "precision", "file", "MB", "opset", "sha256", "status"):
        table.add_column(column, justify="right" if column == "MB" else "left", no_wrap=True)
    int8 = any("int8_ops" in a for info in report["stages"].values() for a in info["artifacts"].values())
    if int8:
        table.add_column("runs in int8 (dequantised inputs)")
    for stage, info in report["stages"].items():
        for kind, artifact in info["artifacts"].items():
            status = artifact["status"]
            ops = artifact.get("int8_ops")
            int8_cell = ("" if ops is None
                         else ", ".join(f"{op} ×{n}" for op, n in ops.items()) or "nothing (FP32 graph)")
            table.add_row(stage, kind, artifact["file"], _mb(artifact["bytes"]), str(artifact.get("opset", "-")),
                          artifact["sha256"][:16] + "…", f"[green]{status}[/]" if status == "ok" else f"[red]{status}[/]",
                          *([int8_cell] if int8 else []))
    return table
