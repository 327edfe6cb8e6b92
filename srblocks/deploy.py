"""``deploy(model)``: the inference form of any model, re-parameterizing every block that has a training form.

Follows timm's convention (and uses its helper): a block exposing ``reparameterize()`` (FMEN's RRRB and HFAB),
``fuse()`` or ``switch_to_deploy()`` is converted in place on a copy. The result is numerically equivalent to the
input model in ``eval()`` mode and is returned in eval mode.
"""

from __future__ import annotations

from timm.utils.model import reparameterize_model
from torch import nn

__all__ = ["deploy"]


def deploy(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Deploy-form copy of ``model`` (or ``model`` itself with ``inplace=True``), in eval mode."""
    was = model.training
    model.eval()
    deployed = reparameterize_model(model, inplace=inplace)
    if not inplace:
        model.train(was)
    return deployed.eval()
