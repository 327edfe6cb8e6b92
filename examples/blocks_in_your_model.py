"""Dropping srblocks blocks into your own PyTorch model (no specs involved).

A small x2 network written by hand that uses SAFMN's SAFM for spatial modulation and FMEN's HFAB for attention,
trained for a few steps, then re-parameterized for deployment with ``srblocks.deploy`` (which works on any module
that contains FMEN blocks, not only on assembled models).

    python examples/blocks_in_your_model.py
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import srblocks
from srblocks.blocks import HFAB, SAFM, LayerNorm2d


class MyNet(nn.Module):
    def __init__(self, dim: int = 32, scale: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, dim, 3, padding=1)
        self.norm = LayerNorm2d(dim)
        self.safm = SAFM(dim=dim)  # (B, dim, H, W) -> (B, dim, H, W)
        self.attention = HFAB(dim=dim, mid_feats=16, n_erbs=1)  # training form with BatchNorm
        self.tail = nn.Sequential(nn.Conv2d(dim, 3 * scale**2, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        f = f + self.safm(self.norm(f))
        f = self.attention(f)
        return self.tail(f)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps on random images")
    parser.add_argument("--dim", type=int, default=32, help="feature width of MyNet")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    net = MyNet(dim=args.dim)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    lr = torch.rand(4, 3, 24, 24)
    hr = torch.nn.functional.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
    for _ in range(args.steps):
        loss = torch.nn.functional.l1_loss(net(lr), hr)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"after {args.steps} steps: L1 {loss.item():.4f}")
    net.eval()
    deployed = srblocks.deploy(net)  # HFAB: BatchNorms folded, ERBs merged into single 3x3 convs
    with torch.no_grad():
        diff = (deployed(lr) - net(lr)).abs().max().item()
    print(f"params: training form {sum(p.numel() for p in net.parameters()):,}, "
          f"deploy form {sum(p.numel() for p in deployed.parameters()):,}; max |diff| {diff:.2e}")
    print(srblocks.profile(deployed, (64, 64)).as_dict())


if __name__ == "__main__":
    main()
