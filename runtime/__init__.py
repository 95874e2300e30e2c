"""The lean runtime: numpy in, numpy out, no torch.

Backends (ONNX Runtime, TensorRT, a lazily imported torch reference), torch-free preprocessing shared
with training, the clip pipeline, streaming and latency profiling.
"""
