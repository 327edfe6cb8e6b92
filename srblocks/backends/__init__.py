"""Inference backends: callables (B, 3, H, W) float32 tensor -> (B, 3, sH, sW) float32 tensor on CPU.

- ``torch``: the model itself (eager PyTorch).
- ``onnxruntime``: :class:`OnnxRuntimeRunner` on an ONNX model (CPU execution provider).
- ``openvino``: :class:`OpenVinoRunner` on an OpenVINO model, f32 inference precision unless bf16 is asked for.

:func:`make_backend` turns a spec-built model into a backend module (exported in memory, verified, wrapped in
:class:`BackendModule`, which ``srblocks.evaluate`` drives through the same tiling, self-ensemble and PSNR code as
the torch model).
"""

from __future__ import annotations

from .module import BACKENDS, BackendModule, make_backend
from .onnxruntime import OnnxRuntimeRunner
from .openvino import OpenVinoRunner

__all__ = ["BACKENDS", "BackendModule", "make_backend", "OnnxRuntimeRunner", "OpenVinoRunner"]
