"""A runtime behind the interface of a spec-built model, so ``srblocks.evaluate`` (tiling, self-ensemble, PSNR)
drives every backend through the same code."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..export.errors import DynamicShapeError, ExportError

__all__ = ["BACKENDS", "BackendModule", "make_backend"]

#: backend names accepted by --backend
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "openvino")


class BackendModule(nn.Module):
    """(B, 3, H, W) float32 -> (B, 3, sH, sW): ``runner`` on real tensors; the wrapped torch ``model`` on the
    ``meta`` device (shape probes such as ``minimum_input_size``). Carries the model's ``meta`` (spec, scale, input
    range, Y convention), so :func:`srblocks.build.model_info` and ``srblocks.evaluate`` treat it like the model.
    Outputs are returned on the input's device."""

    def __init__(self, model: nn.Module, runner: Callable[[torch.Tensor], torch.Tensor], backend: str) -> None:
        super().__init__()
        self.model = model
        self.runner = runner
        self.backend = backend
        self.meta = getattr(model, "meta", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "meta":
            return self.model(x)
        return self.runner(x).to(x.device)


def make_backend(model: nn.Module, backend: str, *, threads: int | None = None, precision: str = "f32",
                 form: str = "train") -> nn.Module:
    """``model`` (spec-built, weights loaded, eval mode, on CPU) on ``backend``: ``torch`` returns it unchanged;
    ``onnxruntime`` / ``openvino`` export it in memory with dynamic H/W, verify it (see
    :mod:`srblocks.export.verify`) and wrap the runtime in a :class:`BackendModule`. ``precision`` (OpenVINO
    only): ``f32`` (default) or the opt-in ``bf16``. Raises :class:`~srblocks.export.errors.ExportError` for
    networks that need a fixed input size (mask-guided models: use ``torch``)."""
    if backend not in BACKENDS:
        raise ExportError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "torch":
        if precision != "f32":
            raise ExportError("--precision applies to the openvino backend only")
        return model
    if backend == "onnxruntime" and precision != "f32":
        raise ExportError("--precision bf16 is available on the openvino backend only")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ExportError(f"the {backend} backend runs on CPU: pass --device cpu")
    from ..export.api import export_onnx_bytes

    try:
        data, metadata, _, _ = export_onnx_bytes(model.eval(), form=form)
    except DynamicShapeError as exc:
        raise ExportError(f"--backend {backend} needs a network with dynamic input sizes (images and tiles differ "
                          f"in size): {exc}; use --backend torch") from None
    if backend == "onnxruntime":
        from .onnxruntime import OnnxRuntimeRunner

        return BackendModule(model, OnnxRuntimeRunner(data, threads=threads), backend)
    from ..export.openvino import onnx_to_openvino
    from ..export.verify import verify
    from .openvino import OpenVinoRunner

    runner = OpenVinoRunner(onnx_to_openvino(data, metadata), threads=threads, precision=precision)  # type: ignore[arg-type]
    if precision == "f32":
        verify(model, runner, [(64, 64)], runtime="openvino (f32)")
    return BackendModule(model, runner, f"openvino ({precision})")
