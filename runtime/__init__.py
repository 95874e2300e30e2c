"""The lean runtime: numpy in, numpy out, no torch.

Installed as `cmmsf.runtime`. Run settings, the engine folder, backends (ONNX Runtime, TensorRT, a lazily
imported torch reference), the clip pipeline, infer, streaming, bench and eval; serving (`serving/`) and
Ray (`scale/`) sit in rooms above it that it never imports. Input handling comes from `cmmsf/inputs/`,
the same code training uses.
"""
