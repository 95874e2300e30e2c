"""`cmmsf-export inspect`: every stage's I/O read from its graph, the build profile, each artifact re-hashed."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from cmmsf.cli import export_app
from cmmsf.contracts import LENGTH_AXES, STAGES
from cmmsf.inputs.hashing import sha256_file

runner = CliRunner()


def test_inspect_lists_each_stages_io_with_dynamic_axes_and_the_profile(tiny_engines):
    result = runner.invoke(export_app, ["inspect", str(tiny_engines), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    manifest = json.loads((tiny_engines / "manifest.json").read_text())
    assert list(report["stages"]) == list(STAGES)
    for name, spec in STAGES.items():
        stage = report["stages"][name]
        assert stage["io_read_from"] == "fp32" and stage["io_differs"] is False
        assert [(t["name"], t["dtype"]) for t in stage["inputs"]] == [(t.name, t.dtype) for t in spec.inputs]
        assert [(t["name"], t["dtype"]) for t in stage["outputs"]] == [(t.name, t.dtype) for t in spec.outputs]
        for tensor, contract in zip(stage["inputs"] + stage["outputs"], spec.inputs + spec.outputs):
            assert tensor["shape"][0] == "B"  # the dynamic batch axis, by name
            for got, axis in zip(tensor["shape"], contract.axes):
                if axis in LENGTH_AXES:
                    assert got == axis  # dynamic lengths keep their names; feature sizes are numbers
                elif axis != "B":
                    assert isinstance(got, int) and got > 0
        for tensor in stage["inputs"]:
            low, opt, high = manifest["stages"][name]["profile_shapes"][tensor["name"]]
            assert tensor["profile"] == {"min": low, "opt": opt, "max": high}
            assert low[0] == 1 and high[0] == 4  # the tiny build's batch profile (1, 2, 4)
        for kind, artifact in stage["artifacts"].items():
            assert artifact["status"] == "ok" and artifact["opset"] == manifest["opset"]
            assert artifact["sha256"] == sha256_file(tiny_engines / artifact["file"])
            assert artifact["bytes"] == (tiny_engines / artifact["file"]).stat().st_size
        assert set(stage["artifacts"]) == {"fp32", "fp16"}  # no GPU here: no plans


def test_inspect_tables_show_names_dtypes_shapes_and_hashes(tiny_engines):
    result = runner.invoke(export_app, ["inspect", str(tiny_engines)], terminal_width=220)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "input_ids" in text and "int32" in text and "[B, Lt]" in text and "[B, Lv, 3," in text
    assert "dynamic axes: B batch, Lt text steps, La audio steps, Lv video steps" in text
    fp16 = json.loads((tiny_engines / "manifest.json").read_text())["stages"]["mgf_head"]["artifacts"]["fp16"]
    assert fp16["sha256"][:16] in text and "mgf_head.fp16.onnx" in text


def test_a_changed_artifact_is_named_its_graph_left_unread_and_the_exit_code_is_1(tiny_engines, tmp_path):
    folder = shutil.copytree(tiny_engines, tmp_path / "copy")
    target = folder / "video_encoder.fp16.onnx"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    result = runner.invoke(export_app, ["inspect", str(folder), "--json"])
    assert result.exit_code == 1
    stage = json.loads(result.output)["stages"]["video_encoder"]
    assert stage["artifacts"]["fp16"]["status"] == "sha256 mismatch" and "opset" not in stage["artifacts"]["fp16"]
    assert stage["artifacts"]["fp32"]["status"] == "ok" and stage["io_read_from"] == "fp32"
    table = runner.invoke(export_app, ["inspect", str(folder)], terminal_width=220)
    assert table.exit_code == 1
    assert "video_encoder fp16: video_encoder.fp16.onnx sha256 mismatch" in table.output
