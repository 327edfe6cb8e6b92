"""Zero-cost proxies: score an untrained network from one forward/backward pass (fast scans, baselines).

* ``grad_norm``: L2 norm of the gradient of the L1 loss against the HR target on one batch (Abdelfattah et al.,
  "Zero-Cost Proxies for Lightweight NAS", ICLR 2021).
* ``synflow``: sum |theta * dR/dtheta| with R = sum of the output of the network with |weights| on an all-ones
  input (Tanaka et al., 2020), computed in float64 on a copy of the model.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["grad_norm", "synflow", "PROXIES"]


def grad_norm(model: nn.Module, lr: torch.Tensor, hr: torch.Tensor) -> float:
    """Gradient norm of the L1 loss on (lr, hr) with the model's current weights (weights unchanged)."""
    model.zero_grad(set_to_none=True)
    was = model.training
    model.train()
    loss = F.l1_loss(model(lr), hr)
    loss.backward()
    total = sum(float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    model.train(was)
    return total ** 0.5


def synflow(model: nn.Module, lr: torch.Tensor, hr: torch.Tensor | None = None) -> float:
    """SynFlow saliency summed over all parameters (data-independent: only ``lr``'s shape is used)."""
    probe = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in probe.parameters():
            p.abs_()
    probe.zero_grad(set_to_none=True)
    probe(torch.ones_like(lr, dtype=torch.float64)).sum().backward()
    return float(sum((p * p.grad).abs().sum() for p in probe.parameters() if p.grad is not None))


PROXIES = {"grad_norm": grad_norm, "synflow": synflow}
