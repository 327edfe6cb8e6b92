"""ONNX Runtime (CPU execution provider) as a tensor -> tensor callable."""

from __future__ import annotations

import os

import numpy as np
import torch

from ..export.errors import require

__all__ = ["OnnxRuntimeRunner"]


class OnnxRuntimeRunner:
    """Runs an ONNX model (serialized bytes or a file path) with ONNX Runtime on CPU.

    Call with a (B, 3, H, W) float32 tensor (any device; copied to CPU); returns the model's first output as a
    float32 CPU tensor. ``threads``: intra-op threads (default: ONNX Runtime's choice); inter-op is 1.
    """

    name = "onnxruntime"

    def __init__(self, model: bytes | str | os.PathLike[str], threads: int | None = None) -> None:
        ort = require("onnxruntime", "export")
        options = ort.SessionOptions()  # type: ignore[attr-defined]
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        source = model if isinstance(model, bytes) else os.fspath(model)
        self.session = ort.InferenceSession(source, sess_options=options,  # type: ignore[attr-defined]
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(out)
