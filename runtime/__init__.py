"""Runtime backends (torch, onnxruntime, tensorrt) behind one small protocol."""
