"""Reusing HPINet's ``hpi_block`` and ``gpa`` inside a small user-defined SR network (plain PyTorch).

The blocks are ordinary ``nn.Module``s taking and returning (B, C, H, W) feature maps, so they drop into any
network. Here: a 3x3 head, one GPA stage (global patch matching + cross-attention, no conv), two HPI blocks with
different patch sizes, a conv + pixel-shuffle x2 tail, and a bilinear image skip. H and W of the LR input must be
>= the largest patch size (16 here); smaller inputs raise ValueError.

Run: ``python examples/hpinet_block_reuse.py``
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from srblocks.blocks.common import Act, Conv, PixelShuffle, Resize
from srblocks.blocks.hpinet import GPA, HPIBlock
from srblocks.cli import parse_size
from srblocks.registry import get_block


class TinyHPISR(nn.Module):
    """(B, 3, h, w) in [0, 1] -> (B, 3, 2h, 2w); h, w >= 16."""

    def __init__(self, dim: int = 32, scale: int = 2) -> None:
        super().__init__()
        self.skip = Resize(in_channels=3, scale=scale, mode="bilinear")
        self.head = Conv(in_channels=3, out_channels=dim)
        self.body = nn.Sequential(
            GPA(dim=dim, patch_size=8, qk_dim=16, mlp_dim=64),  # exact_average=True would average overlaps exactly
            HPIBlock(dim=dim, patch_size=12, qk_dim=16, mlp_dim=64),
            HPIBlock(dim=dim, patch_size=16, qk_dim=16, mlp_dim=64),
        )
        self.tail = nn.Sequential(
            Conv(in_channels=dim, out_channels=dim * scale * scale),
            PixelShuffle(in_channels=dim * scale * scale, scale=scale),
            Act(in_channels=dim, kind="lrelu", negative_slope=0.1),
            Conv(in_channels=dim, out_channels=3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.tail(self.body(self.head(x)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default="40x52",
                        help="LR input HxW or N (each side >= 16, the largest patch size)")
    args = parser.parse_args(argv)
    h, w = args.size
    torch.manual_seed(0)
    net = TinyHPISR().eval()
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        y = net(x)
        partners = net.body[1].partners(net.body[0](net.head(x)))  # GPA partners of the first hpi_block, per image
    print(f"TinyHPISR: {sum(p.numel() for p in net.parameters()):,} params, {tuple(x.shape)} -> {tuple(y.shape)}")
    print(f"hpi_block(patch_size=12) partners per image: {tuple(partners.shape)} (indices within each image)")

    # The same blocks by registry name, as a spec would build them:
    info = get_block("hpi_block")
    block = info.cls(**info.args_model(dim=32, patch_size=12, qk_dim=16, mlp_dim=64).model_dump())
    print(f"registry 'hpi_block': out_channels={block.out_channels}, args={sorted(info.args_model.model_fields)}")

    # One training step: GPA switches to hard Gumbel-softmax matching in train mode and stays differentiable.
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss = (net(x) - nn.functional.interpolate(x, scale_factor=2, mode="bicubic")).abs().mean()
    loss.backward()
    opt.step()
    print(f"one training step done, L1 loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
