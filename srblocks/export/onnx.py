"""ONNX export through ``torch.export`` (the dynamo exporter), with metadata; the result stays in memory until it
has been verified (:mod:`srblocks.export.verify`)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from .errors import ExportError, require

__all__ = ["DEFAULT_OPSET", "export_program", "to_onnx_bytes"]

#: ONNX opset used unless --opset says otherwise
DEFAULT_OPSET = 18


def export_program(model: nn.Module, example: torch.Tensor, dims: dict[int, Any] | None) -> Any:
    """``torch.export.export`` of ``model`` at ``example`` (B, 3, H, W), H/W symbolic when ``dims`` is given.

    Raises the exporter's own exception when a size is specialised (the caller locates the node)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(model, (example,), dynamic_shapes=(dims,) if dims else None)


def to_onnx_bytes(program: Any, example: torch.Tensor, metadata: dict[str, str], opset: int = DEFAULT_OPSET) -> bytes:
    """Serialized ONNX model of an exported program: input ``image`` (B, 3, H, W), output ``sr`` (B, 3, sH, sW),
    float32; ``metadata`` stored as ``metadata_props``."""
    require("onnx", "export")
    require("onnxscript", "export")
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            onnx_program = torch.onnx.export(program, (example,), dynamo=True, opset_version=opset,
                                             input_names=["image"], output_names=["sr"], verbose=False)
        except Exception as exc:  # noqa: BLE001 - the converter's failures become one clear line
            line = next((x.strip() for x in str(exc).splitlines() if "Error" in x or "error" in x), str(exc)[:300])
            raise ExportError(f"the ONNX converter failed (opset {opset}): {type(exc).__name__}: {line}") from None
    proto = onnx_program.model_proto
    onnx.helper.set_model_props(proto, metadata)
    proto.producer_name = "srblocks"
    return proto.SerializeToString()
