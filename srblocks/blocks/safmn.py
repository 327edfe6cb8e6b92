"""SAFMN blocks (Sun et al., "Spatially-Adaptive Feature Modulation for Efficient Image Super-Resolution", ICCV 2023).

Attribute names follow the official ``basicsr/archs/safmn_arch.py`` so official checkpoints load by name:
SAFM ``mfr.{j}``/``aggr``, CCM ``ccm.{0,2}``, FMM ``norm1``/``safm``/``norm2``/``ccm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import PositiveFloat, PositiveInt
from torch import nn

from ..registry import register_block
from . import traceable
from .common import LayerNorm2d
from .traceable import exporting

__all__ = ["SAFM", "CCM", "FMM"]


@register_block("safm", in_channels="dim")
class SAFM(nn.Module):
    """Spatially-Adaptive Feature Modulation, (B, dim, H, W) -> (B, dim, H, W).

    The input is split into ``n_levels`` channel chunks; chunk 0 goes through a depthwise 3x3 conv at full
    resolution, chunk i >= 1 is adaptive-max-pooled to (H // 2**i, W // 2**i) (floor), depthwise-convolved and
    nearest-upsampled back (legacy ``'nearest'``). A 1x1 ``aggr`` conv fuses the levels and GELU(aggr) multiplies the
    block input. Needs H, W >= 2**(n_levels - 1) so the coarsest level is non-empty.
    """

    def __init__(self, dim: PositiveInt, n_levels: PositiveInt = 4) -> None:
        super().__init__()
        if dim % n_levels:
            raise ValueError(f"dim ({dim}) must be divisible by n_levels ({n_levels})")
        chunk = dim // n_levels
        self.n_levels = n_levels
        self.out_channels = dim
        self.mfr = nn.ModuleList(nn.Conv2d(chunk, chunk, 3, 1, 1, groups=chunk) for _ in range(n_levels))
        self.aggr = nn.Conv2d(dim, dim, 1, 1, 0)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        chunks = x.chunk(self.n_levels, dim=1)
        levels = [self.mfr[0](chunks[0])]
        if exporting():  # the same values with H, W kept symbolic (see srblocks.blocks.traceable)
            for i in range(1, self.n_levels):
                pooled = traceable.adaptive_max_pool2d(chunks[i], (h // 2**i, w // 2**i), 2**i)
                levels.append(traceable.interpolate_nearest(self.mfr[i](pooled), (h, w)))
            return self.act(self.aggr(torch.cat(levels, dim=1))) * x
        for i in range(1, self.n_levels):
            pooled = F.adaptive_max_pool2d(chunks[i], (h // 2**i, w // 2**i))
            levels.append(F.interpolate(self.mfr[i](pooled), size=(h, w), mode="nearest"))
        return self.act(self.aggr(torch.cat(levels, dim=1))) * x


@register_block("ccm", in_channels="dim")
class CCM(nn.Module):
    """Convolutional Channel Mixer, (B, dim, H, W) -> (B, dim, H, W): 3x3 conv to int(dim*ffn_scale), GELU, 1x1 back."""

    def __init__(self, dim: PositiveInt, ffn_scale: PositiveFloat = 2.0) -> None:
        super().__init__()
        hidden = int(dim * ffn_scale)
        if hidden < 1:
            raise ValueError(f"int(dim * ffn_scale) must be >= 1, got dim={dim}, ffn_scale={ffn_scale}")
        self.out_channels = dim
        self.ccm = nn.Sequential(nn.Conv2d(dim, hidden, 3, 1, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1, 1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ccm(x)


@register_block("fmm", in_channels="dim")
class FMM(nn.Module):
    """Feature Mixing Module (the official ``AttBlock``), (B, dim, H, W) -> (B, dim, H, W).

    ``x = x + SAFM(LN(x)); x = x + CCM(LN(x))`` with channels-first LayerNorms (eps 1e-6).
    """

    def __init__(self, dim: PositiveInt, ffn_scale: PositiveFloat = 2.0, n_levels: PositiveInt = 4) -> None:
        super().__init__()
        self.out_channels = dim
        self.norm1 = LayerNorm2d(dim)
        self.norm2 = LayerNorm2d(dim)
        self.safm = SAFM(dim, n_levels)
        self.ccm = CCM(dim, ffn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.safm(self.norm1(x)) + x
        return self.ccm(self.norm2(x)) + x
