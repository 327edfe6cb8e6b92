"""Export of spec-built models to deployment formats, each verified against eager PyTorch before it is written.

    from srblocks.export import export_model
    report = export_model(model, "onnx", "safmn_x4.onnx")        # dynamic H/W, verified in ONNX Runtime
    print(report.describe())

Modules: :mod:`~.api` (``export_model``), :mod:`~.onnx`, :mod:`~.openvino`, :mod:`~.torchscript`,
:mod:`~.safetensors` (one format each), :mod:`~.dynamic` (symbolic sizes and which node prevents them),
:mod:`~.metadata`, :mod:`~.verify`, :mod:`~.cli` (``srblocks export``). See docs/deploy.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:  # at run time each name is imported on first use (srblocks --help must not import torch)
    from .api import DEFAULT_SIZE, FORMATS, ExportReport, export_model, export_onnx_bytes
    from .errors import DynamicShapeError, ExportError, RuntimeMissingError, VerificationError
    from .verify import DEFAULT_TOLERANCE

_EXPORTS = {
    **dict.fromkeys(("DEFAULT_SIZE", "FORMATS", "ExportReport", "export_model", "export_onnx_bytes"), ".api"),
    **dict.fromkeys(("DynamicShapeError", "ExportError", "RuntimeMissingError", "VerificationError"), ".errors"),
    "DEFAULT_TOLERANCE": ".verify",
}
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)

__all__ = ["DEFAULT_SIZE", "DEFAULT_TOLERANCE", "FORMATS", "DynamicShapeError", "ExportError", "ExportReport",
           "RuntimeMissingError", "VerificationError", "export_model", "export_onnx_bytes"]
