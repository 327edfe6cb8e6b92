"""Plain parts every SR network needs: convolutions, activations, norms, upsamplers and tensor ops.

Every block takes its input channel count as a keyword argument (filled by the assembler from the graph) and
exposes ``out_channels``. Shapes use B (batch), C (channels), H, W (height, width of the input).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import NonNegativeInt, PositiveInt
from torch import nn

from ..registry import register_block

__all__ = [
    "Conv",
    "Act",
    "LayerNorm2d",
    "PixelShuffle",
    "PixelUnshuffle",
    "Resize",
    "Add",
    "Mul",
    "Concat",
    "Identity",
    "Projection",
    "ChannelSlice",
    "make_activation",
]

ActKind = Literal["relu", "lrelu", "prelu", "gelu", "sigmoid", "silu", "tanh", "identity"]


def make_activation(kind: ActKind, *, negative_slope: float = 0.1, num_parameters: int = 1) -> nn.Module:
    """Activation module by name (``lrelu`` uses ``negative_slope``; ``prelu`` has ``num_parameters`` slopes)."""
    if kind == "relu":
        return nn.ReLU(inplace=False)
    if kind == "lrelu":
        return nn.LeakyReLU(negative_slope)
    if kind == "prelu":
        return nn.PReLU(num_parameters, init=0.25)
    if kind == "gelu":
        return nn.GELU()
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "silu":
        return nn.SiLU()
    if kind == "tanh":
        return nn.Tanh()
    if kind == "identity":
        return nn.Identity()
    raise ValueError(f"unknown activation {kind!r}")


@register_block("conv", in_channels="in_channels")
class Conv(nn.Conv2d):
    """2-D convolution, (B, in_channels, H, W) -> (B, out_channels, H', W').

    ``out_channels=None`` keeps the input's channel count. ``padding=None`` means "same" for odd kernels at stride 1
    (``kernel_size // 2 * dilation``). Parameter names are
    those of ``nn.Conv2d`` (``weight``, ``bias``), so official checkpoints map one to one.
    """

    def __init__(
        self,
        in_channels: PositiveInt,
        out_channels: PositiveInt | None = None,
        kernel_size: PositiveInt = 3,
        stride: PositiveInt = 1,
        padding: NonNegativeInt | None = None,
        dilation: PositiveInt = 1,
        groups: PositiveInt = 1,
        bias: bool = True,
    ) -> None:
        out_channels = in_channels if out_channels is None else out_channels
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})"
            )
        if padding is None:
            padding = (kernel_size // 2) * dilation
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)


@register_block("act", in_channels="in_channels")
class Act(nn.Module):
    """Element-wise activation, (B, C, H, W) -> (B, C, H, W). ``prelu`` learns one slope (or C with per_channel)."""

    def __init__(
        self, in_channels: PositiveInt, kind: ActKind = "relu", negative_slope: float = 0.1, per_channel: bool = False
    ) -> None:
        super().__init__()
        self.out_channels = in_channels
        self.act = make_activation(kind, negative_slope=negative_slope, num_parameters=in_channels if per_channel else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)


@register_block("layernorm2d", in_channels="dim", renamed={"num_channels": "dim"})
class LayerNorm2d(nn.Module):
    """Channels-first LayerNorm: per pixel, normalise over C with the biased variance, then affine.

    (B, C, H, W) -> (B, C, H, W); ``eps`` defaults to 1e-6 (SAFMN). Parameters ``weight`` (ones) and ``bias`` (zeros)
    of shape (C,). The arithmetic is that of the official SAFMN/NAFNet-style ``LayerNorm`` (mean, centred second
    moment, ``(x - u) / sqrt(v + eps)``), so outputs are bit-identical to those implementations for NCHW inputs.
    A channels_last input takes ``F.layer_norm`` on the permuted view instead (as timm's ``LayerNorm2d``): one
    fused pass over contiguous memory, equal to float rounding (about 1e-6 relative after a SAFMN body).
    """

    def __init__(self, dim: PositiveInt, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.out_channels = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # NHWC memory: C is the innermost dimension, so the permuted view is contiguous and one fused
            # F.layer_norm replaces seven element-wise passes (SAFMN x4 channels_last ~0.9x the time); equal to the
            # formula below to float rounding (6e-7 of the range after a SAFMN body), like the layout itself
            out = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
            return out.permute(0, 3, 1, 2)
        mean = x.mean(1, keepdim=True)
        centred = x - mean
        x = centred / torch.sqrt(centred.pow(2).mean(1, keepdim=True) + self.eps)
        if self.weight is None:
            return x
        return self.weight[:, None, None] * x + self.bias[:, None, None]


@register_block("pixel_shuffle", in_channels="in_channels")
class PixelShuffle(nn.PixelShuffle):
    """Depth-to-space, (B, C*r^2, H, W) -> (B, C, H*r, W*r)."""

    def __init__(self, in_channels: PositiveInt, scale: PositiveInt) -> None:
        if in_channels % (scale * scale):
            raise ValueError(f"in_channels ({in_channels}) must be divisible by scale**2 ({scale * scale})")
        super().__init__(scale)
        self.out_channels = in_channels // (scale * scale)


@register_block("pixel_unshuffle", in_channels="in_channels")
class PixelUnshuffle(nn.PixelUnshuffle):
    """Space-to-depth, (B, C, H, W) -> (B, C*r^2, H/r, W/r); H and W must be multiples of r."""

    def __init__(self, in_channels: PositiveInt, scale: PositiveInt) -> None:
        super().__init__(scale)
        self.out_channels = in_channels * scale * scale


@register_block("resize", in_channels="in_channels")
class Resize(nn.Module):
    """Interpolation by a scale factor, (B, C, H, W) -> (B, C, H*s, W*s) (``torch.nn.functional.interpolate``)."""

    def __init__(
        self,
        in_channels: PositiveInt,
        scale: float,
        mode: Literal["nearest", "bilinear", "bicubic", "nearest-exact"] = "bilinear",
        align_corners: bool | None = None,
    ) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if mode in ("nearest", "nearest-exact") and align_corners is not None:
            raise ValueError(f"align_corners must be left unset for mode {mode!r}")
        if mode in ("bilinear", "bicubic") and align_corners is None:
            align_corners = False
        self.out_channels = in_channels
        self.scale, self.mode, self.align_corners = scale, mode, align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode=self.mode, align_corners=self.align_corners)


def _require_equal(in_channels: Sequence[int], what: str) -> int:
    if len(set(in_channels)) != 1:
        raise ValueError(f"{what} needs inputs with equal channels, got {list(in_channels)}")
    return in_channels[0]


@register_block("add", in_channels="in_channels", arity=None)
class Add(nn.Module):
    """Element-wise sum of N >= 1 tensors of equal shape (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, in_channels: list[PositiveInt]) -> None:
        super().__init__()
        self.out_channels = _require_equal(in_channels, "add")

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


@register_block("mul", in_channels="in_channels", arity=2)
class Mul(nn.Module):
    """Element-wise product of two tensors; the second may have 1 channel (a mask broadcast over C)."""

    def __init__(self, in_channels: list[PositiveInt]) -> None:
        super().__init__()
        a, b = in_channels
        if b not in (a, 1):
            raise ValueError(f"mul needs equal channels or a 1-channel second input, got {list(in_channels)}")
        self.out_channels = a

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b


@register_block("concat", in_channels="in_channels", arity=None)
class Concat(nn.Module):
    """Channel concatenation of N tensors (B, C_i, H, W) -> (B, sum C_i, H, W)."""

    def __init__(self, in_channels: list[PositiveInt]) -> None:
        super().__init__()
        self.out_channels = sum(in_channels)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


@register_block("identity", in_channels="in_channels")
class Identity(nn.Module):
    """Pass-through, (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, in_channels: PositiveInt) -> None:
        super().__init__()
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@register_block("project", in_channels="in_channels")
class Projection(nn.Module):
    """Channel projection joining parts of different widths, (B, C_in, H, W) -> (B, out_channels, H, W).

    The identity (no parameters) when ``out_channels`` equals the input channels, else a 1x1 conv (submodule
    ``conv``): a stage of its own width in a search space costs nothing when its width equals its neighbours'.
    """

    def __init__(self, in_channels: PositiveInt, out_channels: PositiveInt, bias: bool = True) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv = Conv(in_channels, out_channels, kernel_size=1, bias=bias) if out_channels != in_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.conv is None else self.conv(x)


@register_block("channel_slice", in_channels="in_channels")
class ChannelSlice(nn.Module):
    """Channels [start, stop) of the input, (B, C, H, W) -> (B, stop - start, H, W) (a view)."""

    def __init__(self, in_channels: PositiveInt, start: NonNegativeInt, stop: PositiveInt) -> None:
        super().__init__()
        if not 0 <= start < stop <= in_channels:
            raise ValueError(f"need 0 <= start < stop <= in_channels ({in_channels}), got start={start}, stop={stop}")
        self.out_channels = stop - start
        self.start, self.stop = start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.start : self.stop]
