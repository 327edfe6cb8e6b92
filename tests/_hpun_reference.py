"""Test-only plain-torch assembly of HPUN-S/M/L from the srblocks HPUN blocks, plus closed-form counts.

HPUN (Sun et al., arXiv 2203.08921) has no official code; this follows ``docs/reference/hpun.md`` §2 (best fit):
EDSR-style body with the IMDN tail, n = 64 channels::

    f = head(x)                     # 3x3 conv, 3 -> 64
    g = body_end(body(f)) + f       # body: S = 8 PUB, M = 8 HPUB, L = 12 HPUB; body_end: 3x3 conv 64 -> 64
    y = pixel_shuffle(tail(g), s)   # tail: 3x3 conv 64 -> 3 s^2 (IMDN)

The closed-form formulas below are derived from the paper's definitions (Eqs. 2, 4, 5, 6; kernel setting 1-3-3-5;
HPUB = PUB with the first SR-DSC replaced by a standard 3x3 conv) and are what the tests compare the modules
against. Multi-Adds = conv MACs only (fvcore ``conv`` operator; biases not counted). ``HPUNReference`` uses the
same module names as ``arch_specs/hpun_{s,m,l}.yaml`` (``head``, ``body.i``, ``body_end``, ``tail.0``), so
``tests/test_hpun_specs.py`` loads its state_dict into the spec-built model and compares outputs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from srblocks.blocks.common import Conv, PixelShuffle
from srblocks.blocks.hpun import HPUB, PUB

N_FEATS = 64
PUB_KERNELS = (1, 3, 3, 5)
HPUB_KERNELS = (3, 3, 3, 5)
N_BLOCKS = {"S": 8, "M": 8, "L": 12}
SCALES = (2, 3, 4)
VARIANTS = ("S", "M", "L")

#: Paper Table 3: params (thousands, rounded by the paper) and Multi-Adds (G) at 1280x720 HR.
PAPER_PARAMS_K = {
    ("S", 2): 226, ("S", 3): 234, ("S", 4): 246,
    ("M", 2): 492, ("M", 3): 500, ("M", 4): 511,
    ("L", 2): 714, ("L", 3): 723, ("L", 4): 734,
}  # fmt: skip
PAPER_MACS_G = {
    ("S", 2): 45.9, ("S", 3): 21.3, ("S", 4): 12.7,
    ("M", 2): 106.2, ("M", 3): 48.1, ("M", 4): 27.7,
    ("L", 2): 151.1, ("L", 3): 69.3, ("L", 4): 39.7,
}  # fmt: skip

#: LR pixels for a 1280x720 HR output; x3 uses 1280*720/9 exactly (conventions.md §3).
LR_PIXELS = {2: 640 * 360, 3: 1280 * 720 // 9, 4: 320 * 180}


@dataclass(frozen=True)
class BiasPolicy:
    """Which convolutions carry a bias: per PUB/HPUB module (first, PUD 1, PUD 2, SR-DSC) and head/end/tail."""

    pub: tuple[bool, bool, bool, bool]
    hpub: tuple[bool, bool, bool, bool]
    head: bool
    body_end: bool
    tail: bool


#: Chosen policy (minimax over the 2^11 per-module policies, see test_hpun_blocks.py): biases only on the HPUB's
#: PUD and SR-DSC convs. Worst |params - paper| = 1,488 (S x4), which is the floor: S x4 weights alone exceed 246K
#: by 1,488, so no policy can do better; ties are broken by the smallest summed error.
CHOSEN_POLICY = BiasPolicy(
    pub=(False, False, False, False), hpub=(False, True, True, True), head=False, body_end=False, tail=False
)
#: PyTorch default (every conv biased), for comparison.
ALL_BIASED = BiasPolicy(pub=(True,) * 4, hpub=(True,) * 4, head=True, body_end=True, tail=True)


class HPUNReference(nn.Module):
    """HPUN-S/M/L at scale s: (B, 3, H, W) -> (B, 3, s H, s W), any H, W >= 1 (odd sizes via the PUD padding)."""

    def __init__(self, variant: str, scale: int, policy: BiasPolicy = CHOSEN_POLICY, n_feats: int = N_FEATS) -> None:
        super().__init__()
        self.head = Conv(3, n_feats, 3, bias=policy.head)
        if variant == "S":
            blocks: list[nn.Module] = [PUB(dim=n_feats, kernel_sizes=PUB_KERNELS, bias=policy.pub) for _ in range(8)]
        else:
            blocks = [HPUB(dim=n_feats, kernel_sizes=HPUB_KERNELS, bias=policy.hpub) for _ in range(N_BLOCKS[variant])]
        self.body = nn.Sequential(*blocks)
        self.body_end = Conv(n_feats, n_feats, 3, bias=policy.body_end)
        tail_conv = Conv(n_feats, 3 * scale * scale, 3, bias=policy.tail)
        self.tail = nn.Sequential(tail_conv, PixelShuffle(3 * scale * scale, scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        return self.tail(self.body_end(self.body(f)) + f)


# ---------------------------------------------------------------------------------------------- closed forms
def sr_dsc_params(n: int, k: int, bias: bool) -> int:
    return n * k * k + n * n + 2 * n * bias


def pud_params(n: int, k: int, bias: bool) -> int:
    return 4 * n * k * k + n * n + 2 * n * bias  # grouped conv: n groups, 4 inputs each, k x k


def conv_params(cin: int, cout: int, k: int, bias: bool, groups: int = 1) -> int:
    return cout * (cin // groups) * k * k + cout * bias


def pub_params(n: int, ks: tuple[int, ...], bias: tuple[bool, ...]) -> int:
    return sr_dsc_params(n, ks[0], bias[0]) + pud_params(n, ks[1], bias[1]) + pud_params(n, ks[2], bias[2]) + (
        sr_dsc_params(n, ks[3], bias[3])
    )


def hpub_params(n: int, ks: tuple[int, ...], bias: tuple[bool, ...]) -> int:
    return conv_params(n, n, ks[0], bias[0]) + pud_params(n, ks[1], bias[1]) + pud_params(n, ks[2], bias[2]) + (
        sr_dsc_params(n, ks[3], bias[3])
    )


def hpun_params(variant: str, scale: int, policy: BiasPolicy, n: int = N_FEATS) -> int:
    if variant == "S":
        body = 8 * pub_params(n, PUB_KERNELS, policy.pub)
    else:
        body = N_BLOCKS[variant] * hpub_params(n, HPUB_KERNELS, policy.hpub)
    return (
        conv_params(3, n, 3, policy.head)
        + body
        + conv_params(n, n, 3, policy.body_end)
        + conv_params(n, 3 * scale * scale, 3, policy.tail)
    )


def sr_dsc_macs_per_pixel(n: int, k: int) -> int:
    return n * k * k + n * n


def pud_macs(n: int, k: int, h: int, w: int) -> int:
    """Conv MACs of one PUD on an (h, w) input: grouped conv at ceil(h/2) x ceil(w/2), pointwise at (h, w)."""
    low = ((h + 1) // 2) * ((w + 1) // 2)
    return low * n * 4 * k * k + h * w * n * n


def pub_macs_per_pixel(n: int, ks: tuple[int, ...]) -> int:
    """Even H, W: the grouped conv's 4 n k^2 MACs per low-res pixel are n k^2 per input pixel."""
    return 4 * n * n + n * sum(k * k for k in ks)


def hpub_macs_per_pixel(n: int, ks: tuple[int, ...]) -> int:
    return n * n * ks[0] ** 2 + 3 * n * n + n * sum(k * k for k in ks[1:])


def hpun_macs_per_lr_pixel(variant: str, scale: int, n: int = N_FEATS) -> int:
    if variant == "S":
        body = 8 * pub_macs_per_pixel(n, PUB_KERNELS)
    else:
        body = N_BLOCKS[variant] * hpub_macs_per_pixel(n, HPUB_KERNELS)
    return 3 * n * 9 + body + n * n * 9 + n * 3 * scale * scale * 9


def hpun_conv_macs(variant: str, scale: int, h: int, w: int, n: int = N_FEATS) -> int:
    """Exact conv MACs of the network on an (h, w) LR input, odd sizes included (grouped convs at ceil(h/2) x ceil(w/2)).

    For even h, w this equals ``hpun_macs_per_lr_pixel * h * w``.
    """
    hw = h * w
    if variant == "S":
        k1, k2, k3, k4 = PUB_KERNELS
        block = (sr_dsc_macs_per_pixel(n, k1) + sr_dsc_macs_per_pixel(n, k4)) * hw
    else:
        k1, k2, k3, k4 = HPUB_KERNELS
        block = (n * n * k1 * k1 + sr_dsc_macs_per_pixel(n, k4)) * hw
    block += pud_macs(n, k2, h, w) + pud_macs(n, k3, h, w)
    return (3 * n * 9 + n * n * 9 + n * 3 * scale * scale * 9) * hw + N_BLOCKS[variant] * block


def hpun_bilinear_macs(variant: str, h: int, w: int, n: int = N_FEATS) -> int:
    """fvcore bilinear MACs: 4 per output element of each PUD's x2 upsampler (2 PUDs per block; output before crop)."""
    up = n * (2 * ((h + 1) // 2)) * (2 * ((w + 1) // 2))
    return 2 * N_BLOCKS[variant] * 4 * up


def params_errors(policy: BiasPolicy) -> dict[tuple[str, int], int]:
    """actual - paper (paper figure in thousands x 1000) for the 9 variants."""
    return {(v, s): hpun_params(v, s, policy) - 1000 * PAPER_PARAMS_K[(v, s)] for v in VARIANTS for s in SCALES}


def all_policies() -> list[BiasPolicy]:
    """Every per-module bias policy: 4 PUB + 4 HPUB module flags and head/body_end/tail (2^11 policies)."""
    out = []
    for flags in itertools.product((False, True), repeat=11):
        out.append(BiasPolicy(tuple(flags[0:4]), tuple(flags[4:8]), *flags[8:11]))  # type: ignore[arg-type]
    return out
