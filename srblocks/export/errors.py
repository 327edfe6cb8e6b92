"""Errors of ``srblocks export`` and the inference backends (all :class:`~srblocks.errors.SrblocksError`: the CLI
reports them in one line with exit status 2)."""

from __future__ import annotations

from ..errors import SrblocksError

__all__ = ["ExportError", "DynamicShapeError", "VerificationError", "RuntimeMissingError"]


class ExportError(SrblocksError):
    """A model cannot be exported in the requested form (the message says why and what to do instead)."""


class DynamicShapeError(ExportError):
    """The network cannot take a symbolic height/width; ``node`` names the spec node that prevents it."""

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class VerificationError(ExportError):
    """The exported artifact's output differs from eager PyTorch by more than the stated tolerance."""


class RuntimeMissingError(ExportError):
    """The runtime a format or backend needs (onnx, onnxruntime, openvino, safetensors) is not installed."""


def require(module: str, extra: str) -> object:
    """Import ``module`` or raise :class:`RuntimeMissingError` naming the pip extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeMissingError(f"{module} is not installed ({exc}); install it with "
                                  f"pip install 'srblocks[{extra}]'") from None
