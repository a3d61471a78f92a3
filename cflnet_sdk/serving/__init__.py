"""Serving on NVIDIA Triton Inference Server: the server-side pipeline, the Python-backend model,
its model repository and the ``tritonserver`` that the ``nvidia-pytriton`` wheel bundles.

Every piece imports only numpy and Pillow at load, so the copy of this package that a model
repository carries runs in a stock Triton's Python backend.
"""
