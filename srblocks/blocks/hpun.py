"""HPUN blocks: Self-Residual DSC, Pixel-Unshuffled Downsampling (PUD), PUB and HPUB.

Sun, Zhang, Jiang, Fu, "Hybrid Pixel-Unshuffled Network for Lightweight Image Super-Resolution" (arXiv 2203.08921).
There is **no official code and there are no official weights**; these blocks follow the paper's equations and the
best-fit configuration of ``docs/reference/hpun.md`` (which reproduces the paper's Multi-Adds). Submodule names are
the library's own; the PUD's ``depthwise`` (pixel-unshuffle, pool, grouped conv) / ``pointwise`` split mirrors the
third-party re-implementation so that its PUD weights (``depthwise.2.weight`` of shape (C, 4, k, k),
``pointwise.weight``) map one to one.

Choices the paper leaves open (all inferred, each an explicit constructor argument):

* **Max-pool kernel** ``pool_size=3`` with padding 1 and stride 1 (size preserving, "-inf" padding). The paper only
  says "max-pooling with stride 1"; the pool is parameter- and MAC-free, so the counts do not constrain it.
* **Bilinear upsampler** ``align_corners=False`` (PyTorch's and the library's default for ``resize``).
* **Odd H or W** (the paper's figures assume even sizes): the PUD pads its input by one row/column at the bottom/right
  (``pad_mode="replicate"``, or ``"reflect"``, which needs H, W >= 2), runs the low-resolution branch on the even
  size, crops the x2-upsampled result back to (H, W) top-left anchored, and adds the unpadded input. For even sizes
  this is a no-op, so MACs and outputs equal the paper's definition.
* **Activation placement**: one activation (ReLU, Eq. 6) inside each residual unit, between its two modules; no
  activation after the residual additions (EDSR-style residual units).
* **Initialisation**: PyTorch's default ``nn.Conv2d`` initialisation (Kaiming-uniform, a = sqrt(5)); the paper does
  not state one (the third-party code uses MSRA x 0.1).
* **Biases**: the paper never states them, yet they decide the parameter counts (64 parameters per biased 64-channel
  conv). Every block takes ``bias`` explicitly (``pub``/``hpub`` per module, see :class:`PUB`), so the parameter fit
  to the paper's Table 3 is a spec choice. The default ``bias=True`` is PyTorch's. The minimax fit over all
  per-module policies (``tests/test_hpun_blocks.py``) is: PUB ``bias=False``, HPUB ``bias=(False, True, True,
  True)`` (standard conv unbiased), head / body-end / tail convs unbiased; worst |params - paper| = 1,488 (S x4),
  which is the floor (S x4 *weights alone* exceed the paper's 246K by 1,488). No policy that biases PUB and HPUB
  modules alike keeps all nine variants within 2.5K.

Parameter counts for C channels and kernel k (b = 1 if biased else 0), used by the tests:
``sr_dsc`` C*k^2 + C^2 + 2*C*b; ``pud`` 4*C*k^2 + C^2 + 2*C*b (grouped conv: C groups of 4 inputs). MACs per input
pixel (even H, W): ``sr_dsc`` C*k^2 + C^2; ``pud`` C*k^2 + C^2 (the grouped conv has 4*C*k^2 MACs per
low-resolution pixel, a quarter of the input pixels).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import nn

from ..registry import register_block
from .common import ActKind, Conv, PixelUnshuffle, make_activation
from .traceable import exporting

__all__ = ["SelfResidualDSC", "PixelUnshuffledDownsampling", "PUB", "HPUB"]

Kernels4 = tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt]
Bias4 = tuple[bool, bool, bool, bool]


def _check_odd(name: str, value: int) -> None:
    if value < 1 or value % 2 == 0:
        raise ValueError(f"{name} must be a positive odd integer (size-preserving 'same' padding), got {value}")


@register_block("sr_dsc", in_channels="dim")
class SelfResidualDSC(nn.Module):
    """Self-Residual Depthwise Separable Conv (HPUN Eq. 2): ``pointwise(depthwise(x) + x)``.

    (B, dim, H, W) -> (B, dim, H, W), any H, W. ``depthwise`` is a k x k conv with ``groups=dim`` ("same" padding),
    ``pointwise`` a 1x1 conv. With ``kernel_size=1`` the depthwise conv is a per-channel scale (+ bias), so the block
    is a per-channel affine map followed by the pointwise conv. ``bias`` applies to both convs.

    Params: dim*k^2 + dim^2 + 2*dim*bias. MACs per pixel: dim*k^2 + dim^2.
    """

    def __init__(self, dim: PositiveInt, kernel_size: PositiveInt = 3, bias: bool = True) -> None:
        super().__init__()
        _check_odd("kernel_size", kernel_size)
        self.out_channels = dim
        self.depthwise = Conv(dim, dim, kernel_size, groups=dim, bias=bias)
        self.pointwise = Conv(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x) + x)


@register_block("pud", in_channels="dim")
class PixelUnshuffledDownsampling(nn.Module):
    """Pixel-Unshuffled Downsampling (HPUN Eqs. 3-5, Fig. 4a).

    (B, dim, H, W) -> (B, dim, H, W), any H, W >= 1::

        u = pixel_unshuffle(x, 2)          # (B, 4*dim, H/2, W/2), channel c*4 + offset (channel-major)
        u = pool(u)                        # stride 1, size preserving (Eq. 3)
        u = gconv(u)                       # k x k, 4*dim -> dim, groups = dim: 4 sub-images -> 1 channel (Eq. 4)
        out = pointwise(up2(u) + x)        # bilinear x2, add the input, 1x1 conv (Eq. 5)

    ``depthwise`` is ``nn.Sequential(pixel_unshuffle, pool, gconv)`` (third-party key layout), ``pointwise`` the
    1x1 conv; ``bias`` applies to both convs.

    Open choices (inferred): ``pool="max"`` with ``pool_size`` 3 (padding ``pool_size // 2``; ``"avg"`` excludes the
    padding from the mean, ``"none"`` skips pooling: the paper's Table 2 ablation), ``upsample="bilinear"`` with
    ``align_corners=False`` (``"nearest"`` for the ablation). Odd H or W: the input is padded by one row/column at
    the bottom/right with ``pad_mode`` before the unshuffle, the upsampled branch is cropped back to (H, W)
    (top-left anchored) and added to the *unpadded* input; ``"reflect"`` needs H, W >= 2.

    Params: 4*dim*k^2 + dim^2 + 2*dim*bias. MACs (even H, W): (dim*k^2 + dim^2) per input pixel; odd sizes count the
    grouped conv at ceil(H/2) x ceil(W/2).
    """

    def __init__(
        self,
        dim: PositiveInt,
        kernel_size: PositiveInt = 3,
        bias: bool = True,
        pool: Literal["max", "avg", "none"] = "max",
        pool_size: PositiveInt = 3,
        upsample: Literal["bilinear", "nearest"] = "bilinear",
        align_corners: bool = False,
        pad_mode: Literal["replicate", "reflect"] = "replicate",
    ) -> None:
        super().__init__()
        _check_odd("kernel_size", kernel_size)
        _check_odd("pool_size", pool_size)
        if upsample == "nearest" and align_corners:
            raise ValueError("align_corners=True is only valid with upsample='bilinear'")
        if pool not in ("max", "avg", "none"):
            raise ValueError(f"pool must be 'max', 'avg' or 'none', got {pool!r}")
        if upsample not in ("bilinear", "nearest"):
            raise ValueError(f"upsample must be 'bilinear' or 'nearest', got {upsample!r}")
        if pad_mode not in ("replicate", "reflect"):
            raise ValueError(f"pad_mode must be 'replicate' or 'reflect', got {pad_mode!r}")
        self.out_channels = dim
        self.upsample, self.align_corners, self.pad_mode = upsample, align_corners, pad_mode
        pooling: nn.Module
        if pool == "max":
            pooling = nn.MaxPool2d(pool_size, stride=1, padding=pool_size // 2)
        elif pool == "avg":
            pooling = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)
        else:
            pooling = nn.Identity()
        self.depthwise = nn.Sequential(
            PixelUnshuffle(dim, 2), pooling, Conv(4 * dim, dim, kernel_size, groups=dim, bias=bias)
        )
        self.pointwise = Conv(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = h % 2, w % 2
        if self.pad_mode == "reflect" and ((pad_h and h < 2) or (pad_w and w < 2)):
            raise ValueError(f"pud with pad_mode='reflect' needs H, W >= 2 to pad an odd size, got {h}x{w} "
                             "(use pad_mode='replicate')")
        if exporting():  # one graph for even and odd sizes: pad to even and crop back always (no-ops when even);
            # sizes written as 2 * k so the exporter sees they are even; upsampling to an explicit 2x size uses the
            # same source coordinates as scale_factor=2 (in/out = 1/2 exactly)
            hk, wk = (h + 1) // 2, (w + 1) // 2
            y = self.depthwise(F.pad(x, (0, 2 * wk - w, 0, 2 * hk - h), mode=self.pad_mode))
            y = F.interpolate(y, size=(2 * hk, 2 * wk), mode="bilinear" if self.upsample == "bilinear" else "nearest",
                              align_corners=self.align_corners if self.upsample == "bilinear" else None)
            rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)  # the crop as a
            return self.pointwise(y.index_select(2, rows).index_select(3, cols) + x)  # gather: no bound to prove
        y = F.pad(x, (0, pad_w, 0, pad_h), mode=self.pad_mode) if pad_h or pad_w else x
        y = self.depthwise(y)
        if self.upsample == "bilinear":
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=self.align_corners)
        else:
            y = F.interpolate(y, scale_factor=2, mode="nearest")
        if pad_h or pad_w:
            y = y[..., :h, :w]
        return self.pointwise(y + x)


def _bias_flags(bias: bool | tuple[bool, ...] | list[bool]) -> tuple[bool, bool, bool, bool]:
    if isinstance(bias, bool):
        return (bias,) * 4
    flags = tuple(bias)
    if len(flags) != 4 or not all(isinstance(b, bool) for b in flags):
        raise ValueError(f"bias must be a bool or 4 bools (one per module), got {bias!r}")
    return flags  # type: ignore[return-value]


def _kernels(kernel_sizes: tuple[int, ...] | list[int]) -> tuple[int, int, int, int]:
    ks = tuple(kernel_sizes)
    if len(ks) != 4:
        raise ValueError(f"kernel_sizes must have 4 entries (e.g. the paper's 1-3-3-5), got {kernel_sizes!r}")
    for i, k in enumerate(ks):
        _check_odd(f"kernel_sizes[{i}]", int(k))
    return ks  # type: ignore[return-value]


class _TwoUnitBlock(nn.Module):
    """Shared body of PUB / HPUB: ``x = x + unit1(x); x = x + unit2(x)``, unit2 = PUD -> act -> SR-DSC (Eq. 6)."""

    def __init__(
        self,
        dim: int,
        first: nn.Module,
        kernel_sizes: tuple[int, int, int, int],
        bias: tuple[bool, bool, bool, bool],
        act: ActKind,
        pud_args: dict[str, object],
    ) -> None:
        super().__init__()
        _, k2, k3, k4 = kernel_sizes
        self.out_channels = dim
        pud1 = PixelUnshuffledDownsampling(dim, k2, bias[1], **pud_args)  # type: ignore[arg-type]
        self.unit1 = nn.Sequential(first, make_activation(act), pud1)
        self.unit2 = nn.Sequential(
            PixelUnshuffledDownsampling(dim, k3, bias[2], **pud_args),  # type: ignore[arg-type]
            make_activation(act),
            SelfResidualDSC(dim, k4, bias[3]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.unit1(x)
        return x + self.unit2(x)


@register_block("pub", in_channels="dim")
class PUB(_TwoUnitBlock):
    """Pixel-Unshuffled Block (HPUN Eq. 6, Fig. 4b) with the paper's kernel setting 1-3-3-5.

    (B, dim, H, W) -> (B, dim, H, W), any H, W. Two residual units (EDSR-style, no activation after the adds)::

        x = x + PUD_k2(act(SRDSC_k1(x)))          # unit1 = [sr_dsc, act, pud]
        x = x + SRDSC_k4(act(PUD_k3(x)))          # unit2 = [pud, act, sr_dsc]  (exactly Eq. 6)

    ``kernel_sizes`` = (k1, k2, k3, k4): depthwise kernel of the first SR-DSC, grouped-conv kernels of the two PUDs,
    depthwise kernel of the last SR-DSC (paper: 1-3-3-5). ``bias``: one bool for every conv, or 4 bools for the
    modules (SR-DSC 1, PUD 1, PUD 2, SR-DSC 2), each covering both convs of its module. ``pool``, ``pool_size``,
    ``upsample``, ``align_corners``, ``pad_mode`` are passed to both PUDs (see :class:`PixelUnshuffledDownsampling`).

    Params: sum of the four modules (see the module docstring); with dim = 64, 1-3-3-5 and no bias, 22,656.
    MACs per pixel (even H, W): 4 dim^2 + dim (k1^2 + k2^2 + k3^2 + k4^2) = 19,200 for dim = 64, 1-3-3-5.
    """

    def __init__(
        self,
        dim: PositiveInt,
        kernel_sizes: Kernels4 = (1, 3, 3, 5),
        bias: bool | Bias4 = True,
        act: ActKind = "relu",
        pool: Literal["max", "avg", "none"] = "max",
        pool_size: PositiveInt = 3,
        upsample: Literal["bilinear", "nearest"] = "bilinear",
        align_corners: bool = False,
        pad_mode: Literal["replicate", "reflect"] = "replicate",
    ) -> None:
        kernel_sizes = _kernels(kernel_sizes)
        flags = _bias_flags(bias)
        pud_args: dict[str, object] = dict(
            pool=pool, pool_size=pool_size, upsample=upsample, align_corners=align_corners, pad_mode=pad_mode
        )
        super().__init__(dim, SelfResidualDSC(dim, kernel_sizes[0], flags[0]), kernel_sizes, flags, act, pud_args)


@register_block("hpub", in_channels="dim")
class HPUB(_TwoUnitBlock):
    """Hybrid Pixel-Unshuffled Block (HPUN Fig. 4c): a PUB whose first SR-DSC is a standard k1 x k1 conv.

    (B, dim, H, W) -> (B, dim, H, W), any H, W::

        x = x + PUD_k2(act(conv_k1(x)))           # unit1 = [conv, act, pud]
        x = x + SRDSC_k4(act(PUD_k3(x)))          # unit2 = [pud, act, sr_dsc]

    ``kernel_sizes`` = (k1, k2, k3, k4) with k1 the standard conv's kernel (paper: 3) and the rest as in PUB
    (3-3-5). ``bias``: one bool or 4 bools (standard conv, PUD 1, PUD 2, SR-DSC). Other arguments as :class:`PUB`.

    Params with dim = 64, 3-3-3-5 and no bias: 55,360 (+64 per biased conv, 7 convs). MACs per pixel (even H, W):
    dim^2 k1^2 + 3 dim^2 + dim (k2^2 + k3^2 + k4^2) = 51,904 for dim = 64.
    """

    def __init__(
        self,
        dim: PositiveInt,
        kernel_sizes: Kernels4 = (3, 3, 3, 5),
        bias: bool | Bias4 = True,
        act: ActKind = "relu",
        pool: Literal["max", "avg", "none"] = "max",
        pool_size: PositiveInt = 3,
        upsample: Literal["bilinear", "nearest"] = "bilinear",
        align_corners: bool = False,
        pad_mode: Literal["replicate", "reflect"] = "replicate",
    ) -> None:
        kernel_sizes = _kernels(kernel_sizes)
        flags = _bias_flags(bias)
        pud_args: dict[str, object] = dict(
            pool=pool, pool_size=pool_size, upsample=upsample, align_corners=align_corners, pad_mode=pad_mode
        )
        super().__init__(dim, Conv(dim, dim, kernel_sizes[0], bias=flags[0]), kernel_sizes, flags, act, pud_args)
