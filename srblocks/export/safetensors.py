"""Weights as safetensors with the srblocks metadata (``__metadata__``), keys as ``model.state_dict()``."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import require

__all__ = ["to_safetensors_bytes", "reload_model"]


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    # contiguous, unshared copies (safetensors refuses views of one storage and non-contiguous layouts)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def to_safetensors_bytes(model: nn.Module, metadata: dict[str, str]) -> bytes:
    """The state_dict of ``model`` serialized as safetensors, with ``metadata`` (str -> str)."""
    require("safetensors", "export")
    from safetensors.torch import save

    return save(_tensors(model), metadata=metadata)


def reload_model(model: nn.Module, data: bytes) -> nn.Module:
    """A copy of ``model`` with every tensor loaded back from ``data`` (strict), for verification."""
    from safetensors.torch import load

    other = copy.deepcopy(model)
    other.load_state_dict(load(data), strict=True)
    return other.eval()
