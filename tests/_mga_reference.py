"""Test-only plain-torch assembly of the official RFDN-MGA from srblocks blocks (an independent cross-check of the
declarative ``rfdn_m`` spec, which tests/test_mga_specs.py checks against the same golden case).

``RFDNBase`` / ``RFDNRefine`` mirror ``huxiaotaostasy/MGA-scheme`` ``exps/rfdn/RFDNMGA.py`` with the official
attribute names, so the official state_dict (keys ``base.*``, ``mask.*``, ``refine.*``) loads with strict=True into
``rfdn_mga(scale)``. Built only from registered blocks (rfdb, conv, act, pixel_shuffle, mask_guided).
"""

from __future__ import annotations

import torch
from torch import nn

from srblocks.blocks.backbones import RFDB
from srblocks.blocks.common import Act, Conv, PixelShuffle
from srblocks.blocks.mga import MaskGuided


def _upsampler(nf: int, out_nc: int, scale: int) -> nn.Sequential:
    """RFDN ``pixelshuffle_block``: 3x3 conv nf -> out_nc*s^2, PixelShuffle (key ``upsampler.0``)."""
    return nn.Sequential(Conv(nf, out_nc * scale * scale, 3), PixelShuffle(out_nc * scale * scale, scale))


def _fuse(cin: int, nf: int) -> nn.Sequential:
    """RFDN ``conv_block(.., 1, act_type='lrelu')``: 1x1 conv + LeakyReLU(0.05) (key ``c.0``)."""
    return nn.Sequential(Conv(cin, nf, 1), Act(nf, "lrelu", negative_slope=0.05))


class RFDNBase(nn.Module):
    """Base-Net: the 4-RFDB RFDN; returns (coarse SR image, out_lr) as the official ``RFDNBase``."""

    def __init__(self, nf: int = 50, num_modules: int = 4, scale: int = 4, esa: str = "mga", in_nc: int = 3) -> None:
        super().__init__()
        self.num_modules = num_modules
        self.fea_conv = Conv(in_nc, nf, 3)
        for i in range(num_modules):
            setattr(self, f"B{i + 1}", RFDB(nf, esa=esa))  # type: ignore[arg-type]
        self.c = _fuse(nf * num_modules, nf)
        self.LR_conv = Conv(nf, nf, 3)
        self.upsampler = _upsampler(nf, 3, scale)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        outs, cur = [], fea
        for i in range(self.num_modules):
            cur = getattr(self, f"B{i + 1}")(cur)
            outs.append(cur)
        return self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_lr = self.features(x)
        return self.upsampler(out_lr), out_lr


class RFDNRefine(nn.Module):
    """Refine-Net: 2 RFDBs + fusion + LR conv (residual), conv1 -> lrelu(0.1) -> conv2 (padding 0), upsampler."""

    def __init__(self, nf: int = 50, scale: int = 4, esa: str = "mga") -> None:
        super().__init__()
        self.B1 = RFDB(nf, esa=esa)  # type: ignore[arg-type]
        self.B2 = RFDB(nf, esa=esa)  # type: ignore[arg-type]
        self.c = _fuse(2 * nf, nf)
        self.LR_conv = Conv(nf, nf, 3)
        self.conv1 = Conv(nf, nf, 3)
        self.conv2 = Conv(nf, nf, 3, padding=0)
        self.upsampler = _upsampler(nf, 3, scale)
        self.lrelu = Act(nf, "lrelu", negative_slope=0.1)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        r1 = self.B1(q)
        r2 = self.B2(r1)
        q = self.LR_conv(self.c(torch.cat([r1, r2], dim=1))) + q
        return self.upsampler(self.conv2(self.lrelu(self.conv1(q))))


def rfdn_mga(scale: int = 4, k: int | float = 50, nf: int = 50) -> MaskGuided:
    """RFDN-M (official ``RFDNMGA``): MaskGuided(base=RFDNBase, refine=RFDNRefine), patch 4, halo 1."""
    return MaskGuided(
        in_channels=3, base=RFDNBase(nf, 4, scale), refine=RFDNRefine(nf, scale), dim=nf, k=k, patch_size=4, halo=1
    )


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
