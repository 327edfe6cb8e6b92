"""Test-only plain-torch assembly of the whole HPINet network (S/M/L, x2/x3/x4) from srblocks blocks.

Used to check the golden outputs until the declarative spec exists. Structure (official ``HPINet``):

    base = bilinear x s (align_corners=False) of the input           # ``skip``
    f = first_conv(x)                                                 # 3x3, 3 -> C
    f = body[i](f) for every hpi_block                                # official blocks/cross_match/mid_convs
    x4: u = lrelu(shuffle2(conv C->4C)); u = lrelu(shuffle2(conv C->4C))
    x2/x3: u = lrelu(shuffle_s(conv C->C s^2))                        # ``upsampler``
    out = base + last_conv(u)                                         # 3x3, C -> 3

Official checkpoint keys are mapped with the regex renames the spec will use (:data:`OFFICIAL_RENAMES`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from srblocks.blocks.common import Act, Conv, PixelShuffle, Resize
from srblocks.blocks.hpinet import HPIBlock


@dataclass(frozen=True)
class Variant:
    dim: int
    qk_dim: int
    mlp_dim: int
    patch_sizes: tuple[int, ...]


VARIANTS: dict[str, Variant] = {
    "S": Variant(40, 24, 72, (12, 16, 20, 24, 12, 16, 20, 24)),
    "M": Variant(56, 32, 100, (12, 16, 20, 24, 12, 16, 20, 24)),
    "L": Variant(64, 36, 128, (12, 14, 16, 20, 24, 12, 14, 16, 20, 24)),
}

OFFICIAL_RENAMES: list[tuple[str, str]] = [
    (r"^blocks\.(\d+)\.layers\.(.*)$", r"body.\1.layers.\2"),
    (r"^cross_match\.(\d+)\.(.*)$", r"body.\1.match.\2"),
    (r"^mid_convs\.(\d+)\.(.*)$", r"body.\1.conv.\2"),
    (r"^upconv1\.(.*)$", r"upsampler.0.\1"),
    (r"^upconv2\.(.*)$", r"upsampler.3.\1"),
    (r"^upconv\.(.*)$", r"upsampler.0.\1"),
]


def remap_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official HPINet keys (``module.`` prefix optional) -> keys of :class:`HPINetReference`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        for pattern, repl in OFFICIAL_RENAMES:
            key, hits = re.subn(pattern, repl, key)
            if hits:
                break
        out[key] = value
    return out


class HPINetReference(nn.Module):
    """HPINet-{S,M,L} x{2,3,4}: (B, 3, h, w) in [0, 1] -> (B, 3, s h, s w), unclamped; h, w >= max patch size."""

    def __init__(self, variant: str, scale: int, exact_average: bool = False) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
        v = VARIANTS[variant]
        c = v.dim
        self.skip = Resize(in_channels=3, scale=scale, mode="bilinear", align_corners=False)
        self.first_conv = Conv(in_channels=3, out_channels=c)
        self.body = nn.ModuleList(
            HPIBlock(dim=c, patch_size=ps, qk_dim=v.qk_dim, mlp_dim=v.mlp_dim, exact_average=exact_average)
            for ps in v.patch_sizes
        )
        if scale == 4:
            up: list[nn.Module] = []
            for _ in range(2):
                up += [
                    Conv(in_channels=c, out_channels=4 * c),
                    PixelShuffle(in_channels=4 * c, scale=2),
                    Act(in_channels=c, kind="lrelu", negative_slope=0.1),
                ]
        else:
            up = [
                Conv(in_channels=c, out_channels=c * scale * scale),
                PixelShuffle(in_channels=c * scale * scale, scale=scale),
                Act(in_channels=c, kind="lrelu", negative_slope=0.1),
            ]
        self.upsampler = nn.Sequential(*up)
        self.last_conv = Conv(in_channels=c, out_channels=3)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Input of every body block (after first_conv, ...), for per-block checks such as GPA partners."""
        f = self.first_conv(x)
        feats = []
        for block in self.body:
            feats.append(f)
            f = block(f)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.skip(x)
        f = self.first_conv(x)
        for block in self.body:
            f = block(f)
        return base + self.last_conv(self.upsampler(f))


def load_official(model: HPINetReference, state_dict: dict[str, torch.Tensor]) -> None:
    """Strict load of an official HPINet state_dict (keys remapped)."""
    model.load_state_dict(remap_official(state_dict), strict=True)
