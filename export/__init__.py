"""Per-stage export: ONNX (FP32 and FP16), parity checks, TensorRT engines and the manifest."""
