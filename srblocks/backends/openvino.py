"""OpenVINO (CPU plugin) as a tensor -> tensor callable."""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
import torch

from ..export.errors import ExportError, require

__all__ = ["OpenVinoRunner", "Precision"]

Precision = Literal["f32", "bf16"]


class OpenVinoRunner:
    """Runs an OpenVINO model (an ``openvino.Model``, or a path to .xml/.onnx) on the CPU plugin.

    ``precision``: ``"f32"`` (default) sets ``INFERENCE_PRECISION_HINT`` to f32, since the plugin's default on CPUs
    with AMX/AVX512-BF16 is bf16 (about 5 grey levels off on a 0..255 scale); ``"bf16"`` is the opt-in fast form.
    ``threads``: ``INFERENCE_NUM_THREADS``. Call with (B, 3, H, W) float32; returns a float32 CPU tensor.
    """

    name = "openvino"

    def __init__(self, model: Any, threads: int | None = None, precision: Precision = "f32") -> None:
        ov = require("openvino", "openvino")
        if precision not in ("f32", "bf16"):
            raise ExportError(f"OpenVINO precision must be 'f32' or 'bf16', got {precision!r}")
        core = ov.Core()  # type: ignore[attr-defined]
        if isinstance(model, (str, os.PathLike)):
            model = core.read_model(os.fspath(model))
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision = precision

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        result = self.request.infer({0: array})
        return torch.from_numpy(np.array(result[self.compiled.output(0)], dtype=np.float32, copy=True))
