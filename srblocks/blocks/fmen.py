"""FMEN blocks (Du et al., "Fast and Memory-Efficient Network Towards Efficient Image Super-Resolution", CVPRW 2022).

Each block exists in a training form and a deploy form. ``reparameterize()`` (timm's convention, used by
:func:`timm.utils.model.reparameterize_model` and :func:`srblocks.deploy`) turns the training form into the deploy form
in place; it is numerically equivalent in ``eval()`` mode. Attribute names follow the official ``train_fmen.py`` /
``test_fmen.py``: RRRB ``expand_conv``/``fea_conv``/``reduce_conv`` -> ``rep_conv``; ERB ``conv1``/``conv2``; HFAB
``bn1``/``squeeze``/``convs``/``bn2``/``excitate``/``bn3``.

Unlike the official ``reparameterize.py`` the merge is device-agnostic, reads eps from each BatchNorm, works on
copies and is computed in float64 before casting back to the parameters' dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import NonNegativeInt, PositiveInt
from torch import nn

__all__ = ["RRRB", "ERB", "HFAB", "pad_with_values"]

from ..registry import register_block

LEAKY_SLOPE = 0.1


def pad_with_values(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Pad (B, C, H, W) by one pixel on each side with a per-channel constant ``values`` (C,) -> (B, C, H+2, W+2)."""
    fill = values.reshape(1, -1, 1, 1).to(x.dtype)
    return F.pad(x - fill, (1, 1, 1, 1)) + fill


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = scale * x + shift (float64 tensors of shape (C,))."""
    std = (bn.running_var.double() + bn.eps).sqrt()
    weight = bn.weight.double() if bn.weight is not None else torch.ones_like(std)
    bias = bn.bias.double() if bn.bias is not None else torch.zeros_like(std)
    scale = weight / std
    return scale, bias - bn.running_mean.double() * scale


def _bn_zero_response(bn: nn.BatchNorm2d) -> torch.Tensor:
    """What an eval-mode BatchNorm outputs for a zero input (C,): the padding value of the training form."""
    return _bn_scale_shift(bn)[1].to(bn.running_mean.dtype)


def _conv3x3(cin: int, cout: int, padding: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, padding)


def _set_conv(like: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> nn.Conv2d:
    """A new conv of ``weight``'s shape carrying float64-computed ``weight``/``bias`` in ``like``'s dtype and device."""
    out_ch, in_ch, kh, kw = weight.shape
    out = nn.Conv2d(in_ch, out_ch, (kh, kw), 1, padding).to(device=like.weight.device, dtype=like.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(bias)
    return out


@register_block("rrrb", in_channels="dim", renamed={"n_feats": "dim"})
class RRRB(nn.Module):
    """Re-parameterizable Residual-in-Residual Block, (B, dim, H, W) -> (B, dim, H, W).

    Training form: ``reduce(fea(pad_b0(expand(x))) + expand(x)) + x`` with 1x1 expand/reduce convs (ratio*dim
    hidden channels) and an unpadded 3x3 ``fea_conv`` on input padded with the expand bias (exact merge at borders).
    Deploy form: one 3x3 conv ``rep_conv`` with padding 1.
    """

    def __init__(self, dim: PositiveInt, ratio: PositiveInt = 2, deploy: bool = False) -> None:
        super().__init__()
        self.out_channels = dim
        self.deploy = deploy
        if deploy:
            self.rep_conv = _conv3x3(dim, dim, 1)
        else:
            hidden = ratio * dim
            self.expand_conv = nn.Conv2d(dim, hidden, 1, 1, 0)
            self.fea_conv = nn.Conv2d(hidden, hidden, 3, 1, 0)
            self.reduce_conv = nn.Conv2d(hidden, dim, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return self.rep_conv(x)
        e = self.expand_conv(x)
        y = self.fea_conv(pad_with_values(e, self.expand_conv.bias)) + e
        return self.reduce_conv(y) + x

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge expand/fea/reduce and both identities into ``rep_conv`` (in place; no-op when deployed)."""
        if self.deploy:
            return
        k0, b0 = self.expand_conv.weight.double(), self.expand_conv.bias.double()  # (h, n, 1, 1), (h,)
        k1, b1 = self.fea_conv.weight.double().clone(), self.fea_conv.bias.double()  # (h, h, 3, 3)
        k2, b2 = self.reduce_conv.weight.double(), self.reduce_conv.bias.double()  # (n, h, 1, 1)
        hidden, n = k0.shape[0], k0.shape[1]
        k1[:, :, 1, 1] += torch.eye(hidden, dtype=k1.dtype, device=k1.device)  # + e
        w01 = torch.tensordot(k1, k0[:, :, 0, 0], dims=([1], [0])).permute(0, 3, 1, 2)  # (h, n, 3, 3)
        b01 = b1 + k1.sum(dim=(2, 3)) @ b0
        w = (k2[:, :, 0, 0] @ w01.reshape(hidden, -1)).reshape(n, n, 3, 3)
        b = k2[:, :, 0, 0] @ b01 + b2
        w[:, :, 1, 1] += torch.eye(n, dtype=w.dtype, device=w.device)  # + x
        self.rep_conv = _set_conv(self.fea_conv, w, b, padding=1)
        del self.expand_conv, self.fea_conv, self.reduce_conv
        self.deploy = True


@register_block("erb", in_channels="dim", renamed={"n_feats": "dim"})
class ERB(nn.Module):
    """Enhanced Residual Block, (B, dim, H, W) -> (B, dim, H, W): RRRB -> LeakyReLU(0.1) -> RRRB.

    No activation after the second RRRB and no skip around the ERB.
    """

    def __init__(self, dim: PositiveInt, ratio: PositiveInt = 2, deploy: bool = False) -> None:
        super().__init__()
        self.out_channels = dim
        self.conv1 = RRRB(dim, ratio, deploy)
        self.conv2 = RRRB(dim, ratio, deploy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.leaky_relu(self.conv1(x), LEAKY_SLOPE))


@register_block("hfab", in_channels="dim", renamed={"n_feats": "dim"})
class HFAB(nn.Module):
    """High-Frequency Attention Block, (B, dim, H, W) -> (B, dim, H, W).

    ``x * sigmoid(excitate(lrelu(ERBs(lrelu(squeeze(x))))))`` with 3x3 squeeze (dim -> mid_feats) and excitate
    (mid_feats -> dim) convs and ``n_erbs`` ERBs on mid_feats channels, no residual. Training form adds BatchNorms
    before squeeze (bn1), before excitate (bn2) and after excitate (bn3); the convs are unpadded and their input is
    padded with each BN's zero-input response (running statistics), so folding the BNs is exact at borders (eval mode).
    """

    def __init__(
        self,
        dim: PositiveInt,
        mid_feats: PositiveInt,
        n_erbs: NonNegativeInt = 1,
        ratio: PositiveInt = 2,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        self.out_channels = dim
        self.deploy = deploy
        pad = 1 if deploy else 0
        if not deploy:
            self.bn1 = nn.BatchNorm2d(dim)
            self.bn2 = nn.BatchNorm2d(mid_feats)
            self.bn3 = nn.BatchNorm2d(dim)
        self.squeeze = _conv3x3(dim, mid_feats, pad)
        self.convs = nn.Sequential(*(ERB(mid_feats, ratio, deploy) for _ in range(n_erbs)))
        self.excitate = _conv3x3(mid_feats, dim, pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            a = F.leaky_relu(self.squeeze(x), LEAKY_SLOPE)
            a = F.leaky_relu(self.convs(a), LEAKY_SLOPE)
            return torch.sigmoid(self.excitate(a)) * x
        a = pad_with_values(self.bn1(x), _bn_zero_response(self.bn1))
        a = F.leaky_relu(self.squeeze(a), LEAKY_SLOPE)
        a = F.leaky_relu(self.convs(a), LEAKY_SLOPE)
        a = pad_with_values(self.bn2(a), _bn_zero_response(self.bn2))
        return torch.sigmoid(self.bn3(self.excitate(a))) * x

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold bn1 into squeeze, bn2 and bn3 into excitate, pad the convs by 1, and deploy the ERBs (in place)."""
        if self.deploy:
            return
        s1, t1 = _bn_scale_shift(self.bn1)
        w, b = self.squeeze.weight.double(), self.squeeze.bias.double()
        self.squeeze = _set_conv(self.squeeze, w * s1.view(1, -1, 1, 1), b + w.sum(dim=(2, 3)) @ t1, 1)
        s2, t2 = _bn_scale_shift(self.bn2)
        s3, t3 = _bn_scale_shift(self.bn3)
        w, b = self.excitate.weight.double(), self.excitate.bias.double()
        w2, b2 = w * s2.view(1, -1, 1, 1), b + w.sum(dim=(2, 3)) @ t2
        self.excitate = _set_conv(self.excitate, w2 * s3.view(-1, 1, 1, 1), b2 * s3 + t3, 1)
        for erb in self.convs:
            erb.conv1.reparameterize()
            erb.conv2.reparameterize()
        del self.bn1, self.bn2, self.bn3
        self.deploy = True
