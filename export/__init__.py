"""Export stage: ONNX, precision variants, TensorRT engines, Triton repositories, parity."""
