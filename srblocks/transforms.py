"""Spec-level transforms of assembled models (MGA mask-guided split)."""

from __future__ import annotations

from typing import Any

from torch import fx


def mask_guided_transform(model: fx.GraphModule, options: dict[str, Any], variables: dict[str, Any]) -> fx.GraphModule:
    """(placeholder: implemented by the MGA issue)."""
    raise NotImplementedError("mask_guided transform is not implemented yet")
