"""``deploy(model)``: the inference form of any model, re-parameterizing every block that has a training form.

Follows timm's convention (and uses its helper): a block exposing ``reparameterize()`` (FMEN's RRRB and HFAB),
``fuse()`` or ``switch_to_deploy()`` is converted in place on a copy. The result is numerically equivalent to the
input model in ``eval()`` mode and is returned in eval mode, with the input model's weight layout (channels-last
models stay channels-last).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["deploy"]


def deploy(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Deploy-form copy of ``model`` (or ``model`` itself with ``inplace=True``), in eval mode."""
    from timm.utils.model import reparameterize_model  # imported here: timm pulls in torchvision (~3 s at start-up)

    was = model.training
    model.eval()
    channels_last = any(p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
                        for p in model.parameters())
    deployed = reparameterize_model(model, inplace=inplace)
    if channels_last:  # fused convs are new NCHW tensors: keep the layout the model was built with
        deployed.to(memory_format=torch.channels_last)
    if not inplace:
        model.train(was)
    return deployed.eval()
