"""Weights as safetensors with the srblocks metadata (``__metadata__``), keys as ``model.state_dict()`` or, with
``keys="official"``, the official implementation's names (:func:`srblocks.interop.spandrel.official_state_dict`)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import require

__all__ = ["to_safetensors_bytes", "reload_model"]


def _tensors(model: nn.Module, keys: str = "srblocks") -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = model.state_dict()
    if keys == "official":
        from ..interop.spandrel import official_state_dict

        state = official_state_dict(model, state)
    # contiguous, unshared copies (safetensors refuses views of one storage and non-contiguous layouts)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def to_safetensors_bytes(model: nn.Module, metadata: dict[str, str], keys: str = "srblocks") -> bytes:
    """The state_dict of ``model`` serialized as safetensors, with ``metadata`` (str -> str); ``keys``:
    ``"srblocks"`` (``model.state_dict()``) or ``"official"`` (the official implementation's names, which spandrel
    detects for SAFMN and RCAN; :class:`~srblocks.weights.WeightsError` for a spec without an official layout)."""
    require("safetensors", "export")
    from safetensors.torch import save

    return save(_tensors(model, keys), metadata=metadata)


def reload_model(model: nn.Module, data: bytes, keys: str = "srblocks") -> nn.Module:
    """A copy of ``model`` with every tensor loaded back from ``data`` (strict; official keys renamed through the
    spec's map, as ``load_weights(..., official=True)`` does), for verification."""
    from safetensors.torch import load

    state = load(data)
    if keys == "official":
        from ..weights import official_to_model_keys

        state = official_to_model_keys(model, state)
    other = copy.deepcopy(model)
    other.load_state_dict(state, strict=True)
    return other.eval()
