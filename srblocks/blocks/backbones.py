"""Blocks of the backbone networks that MGA accelerates: RFDN, PAN, SRResNet, RCAN and FSRCNN parts.

Each block mirrors its official implementation, with the official submodule attribute names so that official
state_dict keys map one to one:

* RFDN (Liu et al., ECCV-W 2020; ``njulj/RFDN`` ``block.py``): :class:`ESA` (``esa``), :class:`RFDB` (``rfdb``).
  ESA comes in two variants: ``variant="rfdn"`` (original, max-pool 7/3 after the strided conv) and
  ``variant="mga"`` (the MGA code's ``exps/rfdn/block.py``: no max-pool). Parameters are identical, the function
  differs (see ``docs/reference/mga.md`` note 4).
* PAN (Zhao et al., ECCV-W 2020; ``zhaohengyuan1/PAN``): :class:`PA` (``pa``), :class:`PAConv` (``pa_conv``),
  :class:`SCPA` (``scpa``).
* SRResNet (Ledig et al., CVPR 2017) as in BasicSR/mmsr ``MSRResNet``: :class:`SRResNetBlock` (``srresnet_block``).
* RCAN (Zhang et al., ECCV 2018; EDSR-PyTorch ``rcan.py``): :class:`ChannelAttention` (``channel_attention``),
  :class:`RCAB` (``rcab``), :class:`ResidualGroup` (``residual_group``).
* FSRCNN (Dong et al., ECCV 2016): everything is plain ``conv`` + ``act`` (PReLU) except the last layer,
  :class:`ConvTranspose` (``conv_transpose``); the MGA code replaces every non-transposed conv by an AdderNet layer,
  :class:`AdderConv` (``adder_conv``), offered for code parity.

Shapes: B (batch), C (channels), H, W (input height, width). All blocks are resolution-preserving unless stated.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import NonNegativeInt, PositiveInt
from torch import nn

from ..registry import register_block
from .common import make_activation

__all__ = [
    "ESA",
    "RFDB",
    "PA",
    "PAConv",
    "SCPA",
    "SRResNetBlock",
    "ChannelAttention",
    "RCAB",
    "ResidualGroup",
    "ConvTranspose",
    "AdderConv",
    "adder_conv2d",
]


def _conv(cin: int, cout: int, k: int, stride: int = 1, padding: int | None = None, bias: bool = True) -> nn.Conv2d:
    """``nn.Conv2d`` with "same" padding for odd kernels by default (RFDN ``conv_layer``)."""
    return nn.Conv2d(cin, cout, k, stride, (k - 1) // 2 if padding is None else padding, bias=bias)


# ----------------------------------------------------------------------------------------------------------- RFDN


@register_block("esa", in_channels="dim", renamed={"n_feats": "dim"})
class ESA(nn.Module):
    """Enhanced Spatial Attention (RFDN), (B, dim, H, W) -> (B, dim, H, W): ``x * sigmoid(mask(x))``.

    ``c1 = conv1(x)`` (1x1, dim -> f); ``v = conv2(c1)`` (3x3, stride 2, padding 0); ``variant="rfdn"`` then
    max-pools (kernel ``pool_kernel``, stride ``pool_stride``), ``variant="mga"`` does not; ``v = conv3_(relu(conv3(
    relu(conv_max(v)))))``; bilinear resize back to (H, W) (align_corners False); ``m = sigmoid(conv4(v +
    conv_f(c1)))``. ``f = esa_channels`` (default ``dim // 4``).

    Minimum input size: H, W >= 3 for ``mga``; for ``rfdn`` the strided map ((H - 3) // 2 + 1) must be >= the pool
    kernel (H, W >= 15 with the defaults), so the original variant cannot run on MGA's 6x6 patches.
    """

    def __init__(
        self,
        dim: PositiveInt,
        esa_channels: PositiveInt | None = None,
        variant: Literal["rfdn", "mga"] = "rfdn",
        pool_kernel: PositiveInt = 7,
        pool_stride: PositiveInt = 3,
    ) -> None:
        super().__init__()
        f = dim // 4 if esa_channels is None else esa_channels
        if f < 1:
            raise ValueError(f"esa_channels must be >= 1 (default dim // 4; got dim={dim})")
        if variant not in ("rfdn", "mga"):
            raise ValueError(f"variant must be 'rfdn' or 'mga', got {variant!r}")
        self.out_channels = dim
        self.variant, self.pool_kernel, self.pool_stride = variant, pool_kernel, pool_stride
        self.conv1 = _conv(dim, f, 1)
        self.conv_f = _conv(f, f, 1)
        self.conv_max = _conv(f, f, 3, padding=1)
        self.conv2 = _conv(f, f, 3, stride=2, padding=0)
        self.conv3 = _conv(f, f, 3, padding=1)
        self.conv3_ = _conv(f, f, 3, padding=1)
        self.conv4 = _conv(f, dim, 1)
        self.sigmoid = nn.Sigmoid()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        v = self.conv2(c1_)
        if self.variant == "rfdn":
            v = F.max_pool2d(v, kernel_size=self.pool_kernel, stride=self.pool_stride)
        v = self.relu(self.conv_max(v))
        c3 = self.relu(self.conv3(v))
        c3 = self.conv3_(c3)
        c3 = F.interpolate(c3, (x.size(2), x.size(3)), mode="bilinear", align_corners=False)
        cf = self.conv_f(c1_)
        return x * self.sigmoid(self.conv4(c3 + cf))


@register_block("rfdb", in_channels="dim", renamed={"in_channels": "dim"})
class RFDB(nn.Module):
    """Residual Feature Distillation Block (RFDN), (B, C, H, W) -> (B, C, H, W).

    With dc = ``distilled_channels`` (default C // 2) and act = LeakyReLU(``negative_slope`` = 0.05)::

        d_i = act(c{i}_d(r_{i-1}))        1x1 C -> dc,   i = 1..3, r_0 = x
        r_i = act(c{i}_r(r_{i-1}) + r_{i-1})  3x3 C -> C
        r_4 = act(c4(r_3))                3x3 C -> dc
        out = esa(c5(cat(d_1, d_2, d_3, r_4)))   c5: 1x1 4dc -> C

    ``esa`` selects the ESA variant (``"rfdn"`` original with max-pool, ``"mga"`` as in the MGA code). 94,450
    parameters at C = 50. Keys: ``c1_d, c1_r, c2_d, c2_r, c3_d, c3_r, c4, c5, esa.*`` (official).
    """

    def __init__(
        self,
        dim: PositiveInt,
        distilled_channels: PositiveInt | None = None,
        esa: Literal["rfdn", "mga"] = "rfdn",
        esa_channels: PositiveInt | None = None,
        negative_slope: float = 0.05,
    ) -> None:
        super().__init__()
        dc = dim // 2 if distilled_channels is None else distilled_channels
        if dc < 1:
            raise ValueError(
                f"distilled_channels must be >= 1 (default dim // 2; got dim={dim})"
            )
        rc = dim
        self.out_channels = dim
        self.dc = self.distilled_channels = dc
        self.rc = self.remaining_channels = rc
        self.c1_d = _conv(dim, dc, 1)
        self.c1_r = _conv(dim, rc, 3)
        self.c2_d = _conv(rc, dc, 1)
        self.c2_r = _conv(rc, rc, 3)
        self.c3_d = _conv(rc, dc, 1)
        self.c3_r = _conv(rc, rc, 3)
        self.c4 = _conv(rc, dc, 3)
        self.act = nn.LeakyReLU(negative_slope)
        self.c5 = _conv(dc * 4, dim, 1)
        self.esa = ESA(dim, esa_channels=esa_channels, variant=esa)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.act(self.c1_d(x))
        r1 = self.act(self.c1_r(x) + x)
        d2 = self.act(self.c2_d(r1))
        r2 = self.act(self.c2_r(r1) + r1)
        d3 = self.act(self.c3_d(r2))
        r3 = self.act(self.c3_r(r2) + r2)
        r4 = self.act(self.c4(r3))
        return self.esa(self.c5(torch.cat([d1, d2, d3, r4], dim=1)))


# ------------------------------------------------------------------------------------------------------------ PAN


@register_block("pa", in_channels="dim", renamed={"nf": "dim"})
class PA(nn.Module):
    """Pixel attention (PAN), (B, dim, H, W) -> (B, dim, H, W): ``x * sigmoid(conv(x))`` with a 1x1 biased conv."""

    def __init__(self, dim: PositiveInt) -> None:
        super().__init__()
        self.out_channels = dim
        self.conv = nn.Conv2d(dim, dim, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.conv(x))


@register_block("pa_conv", in_channels="dim", renamed={"nf": "dim"})
class PAConv(nn.Module):
    """PA convolution (PAN), (B, dim, H, W) -> (B, dim, H, W): ``k4(k3(x) * sigmoid(k2(x)))``.

    ``k2``: 1x1 with bias; ``k3``, ``k4``: ``k_size`` x ``k_size`` without bias ("same" padding).
    """

    def __init__(self, dim: PositiveInt, k_size: PositiveInt = 3) -> None:
        super().__init__()
        if k_size % 2 == 0:
            raise ValueError(f"k_size must be odd, got {k_size}")
        self.out_channels = dim
        self.k2 = nn.Conv2d(dim, dim, 1)
        self.sigmoid = nn.Sigmoid()
        self.k3 = nn.Conv2d(dim, dim, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.k4 = nn.Conv2d(dim, dim, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k4(self.k3(x) * self.sigmoid(self.k2(x)))


@register_block("scpa", in_channels="dim", renamed={"nf": "dim"})
class SCPA(nn.Module):
    """Self-calibrated block with pixel attention (PAN), (B, dim, H, W) -> (B, dim, H', W') (H' = H at stride 1).

    With g = dim // reduction and act = LeakyReLU(0.2)::

        a = act(k1(act(conv1_a(x))))         conv1_a: 1x1 dim -> g (no bias); k1: 3x3 (stride, dilation, no bias)
        b = act(PAConv(act(conv1_b(x))))     conv1_b: 1x1 dim -> g (no bias)
        out = conv3(cat(a, b)) + x           conv3: 1x1 g*reduction -> dim (no bias)

    Keys ``conv1_a, conv1_b, k1.0, PAConv.{k2,k3,k4}, conv3`` (official). The residual needs stride 1.
    """

    def __init__(
        self, dim: PositiveInt, reduction: PositiveInt = 2, stride: PositiveInt = 1, dilation: PositiveInt = 1
    ) -> None:
        super().__init__()
        if dim % reduction:
            raise ValueError(f"dim ({dim}) must be divisible by reduction ({reduction})")
        if stride != 1:
            raise ValueError(f"stride must be 1 (the residual connection needs equal shapes), got {stride}")
        group_width = dim // reduction
        self.out_channels = dim
        self.conv1_a = nn.Conv2d(dim, group_width, kernel_size=1, bias=False)
        self.conv1_b = nn.Conv2d(dim, group_width, kernel_size=1, bias=False)
        self.k1 = nn.Sequential(
            nn.Conv2d(
                group_width, group_width, kernel_size=3, stride=stride, padding=dilation, dilation=dilation, bias=False
            )
        )
        self.PAConv = PAConv(group_width)
        self.conv3 = nn.Conv2d(group_width * reduction, dim, kernel_size=1, bias=False)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.lrelu(self.k1(self.lrelu(self.conv1_a(x))))
        b = self.lrelu(self.PAConv(self.lrelu(self.conv1_b(x))))
        return self.conv3(torch.cat([a, b], dim=1)) + x


# ------------------------------------------------------------------------------------------------------- SRResNet


@register_block("srresnet_block", in_channels="dim", renamed={"num_feat": "dim"})
class SRResNetBlock(nn.Module):
    """SRResNet residual block, (B, C, H, W) -> (B, C, H, W): ``x + res_scale * conv2(act(conv1(x)))``.

    Default = BasicSR/mmsr ``ResidualBlockNoBN`` (3x3 biased convs, ReLU, no BN; keys ``conv1``, ``conv2``) with its
    default init (Kaiming-normal x 0.1, zero bias) unless ``pytorch_init``. ``batch_norm=True`` gives Ledig et al.'s
    original block (conv-BN-act-conv-BN; BN keys ``bn1``, ``bn2``), usually with ``act="prelu"``.
    """

    def __init__(
        self,
        dim: PositiveInt = 64,
        res_scale: float = 1.0,
        act: Literal["relu", "prelu", "lrelu"] = "relu",
        batch_norm: bool = False,
        pytorch_init: bool = False,
    ) -> None:
        super().__init__()
        self.out_channels = dim
        self.res_scale = res_scale
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 1, bias=True)
        self.bn1 = nn.BatchNorm2d(dim) if batch_norm else nn.Identity()
        self.act = make_activation(act, negative_slope=0.2)
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 1, bias=True)
        self.bn2 = nn.BatchNorm2d(dim) if batch_norm else nn.Identity()
        if not pytorch_init:
            for conv in (self.conv1, self.conv2):
                nn.init.kaiming_normal_(conv.weight)
                conv.weight.data.mul_(0.1)
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


# ----------------------------------------------------------------------------------------------------------- RCAN


@register_block("channel_attention", in_channels="dim", renamed={"channel": "dim"})
class ChannelAttention(nn.Module):
    """RCAN channel attention (``CALayer``), (B, C, H, W) -> (B, C, H, W): ``x * sigmoid(W2 relu(W1 mean_hw(x)))``.

    ``conv_du``: 1x1 C -> C // reduction (bias), ReLU, 1x1 -> C (bias), Sigmoid (keys ``conv_du.0``, ``conv_du.2``).
    """

    def __init__(self, dim: PositiveInt, reduction: PositiveInt = 16) -> None:
        super().__init__()
        if dim // reduction < 1:
            raise ValueError(f"dim ({dim}) // reduction ({reduction}) must be >= 1")
        self.out_channels = dim
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(dim, dim // reduction, 1, padding=0, bias=True),
            nn.ReLU(),
            nn.Conv2d(dim // reduction, dim, 1, padding=0, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


@register_block("rcab", in_channels="dim", renamed={"n_feat": "dim"})
class RCAB(nn.Module):
    """Residual channel attention block (RCAN), (B, C, H, W) -> (B, C, H, W).

    ``body`` = conv, [BN], ReLU, conv, [BN], ChannelAttention; ``out = x + res_scale * body(x)``. Keys
    ``body.0``, ``body.2``, ``body.3.conv_du.{0,2}`` without BN (official). Note the official RCAN stores
    ``res_scale`` but never applies it; the default 1.0 reproduces it.
    """

    def __init__(
        self,
        dim: PositiveInt,
        kernel_size: PositiveInt = 3,
        reduction: PositiveInt = 16,
        bias: bool = True,
        bn: bool = False,
        res_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.out_channels = dim
        self.res_scale = res_scale
        layers: list[nn.Module] = []
        for i in range(2):
            layers.append(nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, bias=bias))
            if bn:
                layers.append(nn.BatchNorm2d(dim))
            if i == 0:
                layers.append(nn.ReLU())
        layers.append(ChannelAttention(dim, reduction))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        return x + res if self.res_scale == 1.0 else x + self.res_scale * res


@register_block("residual_group", in_channels="dim", renamed={"n_feat": "dim"})
class ResidualGroup(nn.Module):
    """RCAN residual group, (B, C, H, W) -> (B, C, H, W): ``x + conv(RCAB_n(...RCAB_1(x)))``.

    ``body`` = ``n_resblocks`` RCABs then a ``kernel_size`` conv (keys ``body.{0..n-1}.*``, ``body.{n}``; official).
    RCAN: 10 groups x 20 RCABs, C = 64, reduction 16.
    """

    def __init__(
        self,
        dim: PositiveInt,
        n_resblocks: PositiveInt = 20,
        kernel_size: PositiveInt = 3,
        reduction: PositiveInt = 16,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.out_channels = dim
        layers: list[nn.Module] = [RCAB(dim, kernel_size, reduction) for _ in range(n_resblocks)]
        layers.append(nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, bias=True))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


# --------------------------------------------------------------------------------------------------------- FSRCNN


@register_block("conv_transpose", in_channels="in_channels")
class ConvTranspose(nn.ConvTranspose2d):
    """Transposed convolution (FSRCNN's last layer), (B, in_channels, H, W) -> (B, out_channels, H*s, W*s).

    ``stride`` = s. Defaults give exactly s-times upsampling for odd kernels: ``padding = kernel_size // 2`` and
    ``output_padding = stride - 1`` (FSRCNN: 9x9, padding 4, output_padding s - 1). Keys ``weight``
    (in_channels, out_channels, k, k) and ``bias``, as ``nn.ConvTranspose2d``.
    """

    def __init__(
        self,
        in_channels: PositiveInt,
        out_channels: PositiveInt,
        kernel_size: PositiveInt = 9,
        stride: PositiveInt = 2,
        padding: NonNegativeInt | None = None,
        output_padding: NonNegativeInt | None = None,
        bias: bool = True,
    ) -> None:
        padding = kernel_size // 2 if padding is None else padding
        output_padding = stride - 1 if output_padding is None else output_padding
        if output_padding >= stride:
            raise ValueError(f"output_padding ({output_padding}) must be smaller than stride ({stride})")
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding=padding, output_padding=output_padding, bias=bias
        )
        self.out_channels = out_channels


class _AdderFunction(torch.autograd.Function):
    """AdderNet's product: out[o, l] = -sum_i |W[o, i] - X[i, l]| with the AdderNet gradients (Chen et al. 2020).

    Backward (as the AdderNet code): dW = sum_l (X - W) * g, rescaled to norm sqrt(numel(W)) / 5 ("adaptive
    learning rate"); dX = sum_o HardTanh(W - X) * g (full-precision gradient clipped to [-1, 1]).
    """

    @staticmethod
    def forward(ctx: Any, w_col: torch.Tensor, x_col: torch.Tensor) -> torch.Tensor:  # (O, I), (I, L) -> (O, L)
        ctx.save_for_backward(w_col, x_col)
        return -torch.cdist(w_col.unsqueeze(0), x_col.t().unsqueeze(0), p=1).squeeze(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w_col, x_col = ctx.saved_tensors
        diff = x_col.unsqueeze(0) - w_col.unsqueeze(2)  # (O, I, L)
        grad_w = (diff * grad.unsqueeze(1)).sum(2)
        grad_w = grad_w / grad_w.norm(p=2).clamp(min=1e-12) * math.sqrt(w_col.numel()) / 5
        grad_x = (-diff.clamp(-1, 1) * grad.unsqueeze(1)).sum(0)
        return grad_w, grad_x


def adder_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """AdderNet "convolution": out[b, o, y, x] = -sum_{i, u, v} |weight[o, i, u, v] - x_pad[b, i, y*s + u, x*s + v]|."""
    b, _, h, w = x.shape
    o, _, kh, kw = weight.shape
    h_out = (h + 2 * padding - kh) // stride + 1
    w_out = (w + 2 * padding - kw) // stride + 1
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (B, I, L)
    x_col = cols.permute(1, 0, 2).reshape(cols.shape[1], -1)  # (I, B*L)
    out = _AdderFunction.apply(weight.reshape(o, -1), x_col)  # (O, B*L)
    return out.reshape(o, b, h_out, w_out).permute(1, 0, 2, 3).contiguous()


@register_block("adder_conv", in_channels="in_channels")
class AdderConv(nn.Module):
    """AdderNet layer (``adder2d``; MGA's FSRCNN code), (B, in_channels, H, W) -> (B, out_channels, H', W').

    ``out = -sum |W - X|`` over each kernel window (L1 distance instead of a product), optional bias. Parameter keys
    as the AdderNet code: ``adder`` (out, in, k, k) and, with bias, ``b`` (out,). ``padding=None`` means "same" for
    odd kernels. Memory is O(out * in * k^2 * H' * W') in backward: meant for small (FSRCNN-sized) layers.
    """

    def __init__(
        self,
        in_channels: PositiveInt,
        out_channels: PositiveInt,
        kernel_size: PositiveInt = 3,
        stride: PositiveInt = 1,
        padding: NonNegativeInt | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        self.adder = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.b = nn.Parameter(torch.rand(out_channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = adder_conv2d(x, self.adder, self.stride, self.padding)
        return out if self.b is None else out + self.b.view(1, -1, 1, 1)
