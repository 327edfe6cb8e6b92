"""TorchScript export with ``torch.jit.trace`` (metadata in the archive's extra file ``srblocks.json``)."""

from __future__ import annotations

import io
import json
import warnings

import torch
from torch import nn

__all__ = ["to_torchscript_bytes", "load_torchscript"]

EXTRA_FILE = "srblocks.json"


def to_torchscript_bytes(model: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> bytes:
    """Serialized ``torch.jit.trace`` of ``model`` at ``example`` (B, 3, H, W). The blocks take their export-friendly
    paths while tracing (``srblocks.blocks.traceable``), so sizes are recorded as shape arithmetic where they can
    be; :mod:`srblocks.export.verify` checks a second size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(model, (example,), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={EXTRA_FILE: json.dumps(metadata, sort_keys=True)})
    return buffer.getvalue()


def load_torchscript(data: bytes) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """The traced module and its srblocks metadata from serialized bytes."""
    extra = {EXTRA_FILE: ""}
    module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra)
    return module.eval(), json.loads(extra[EXTRA_FILE] or "{}")
