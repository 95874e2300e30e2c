"""The lean runtime: numpy in, numpy out, no torch.

Backends (ONNX Runtime, TensorRT, a lazily imported torch reference), the clip pipeline, streaming and
latency profiling. Input handling comes from `cmmsf/inputs/`, the same code training uses.
"""
