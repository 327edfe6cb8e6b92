"""MATLAB-compatible bicubic ``imresize`` (the degradation every SR benchmark uses), vectorised.

MATLAB's ``imresize(img, scale, 'bicubic')`` algorithm, reproduced exactly:

* Keys cubic kernel with a = -0.5 (support 4).
* Downscaling antialiases: the kernel is stretched to ``h(x) = scale * cubic(scale * x)`` (support ``4 / scale``).
* Output pixel ``x`` (1-based) samples the input at ``u = x / scale + 0.5 * (1 - 1 / scale)``; the taps are
  ``floor(u - width / 2) + 0..ceil(width) + 1`` and their weights are normalised to sum to 1.
* Boundary: symmetric padding (mirror including the edge pixel, ``[c b a | a b c d | d c b]``).
* Separable 1-D passes; the dimension with the smaller scale goes first, so for equal scales **height, then width**.
* ``uint8`` input: the result of **each** pass is rounded half away from zero and clipped to [0, 255] (MATLAB keeps
  the input class between passes). This path reproduces the EDSR benchmark LR files (``LR_bicubic/X{2,3,4}``)
  bit-exactly from the mod-cropped HR.
* Floating-point input (MATLAB ``im2double``, BasicSR ``matlab_functions.imresize``): both passes in float64 with no
  intermediate rounding or clipping; the result is returned in the input's dtype.

The weights are computed in float64 with MATLAB's operation order; each pass is a loop over the few kernel taps
(``4 / scale + 2`` of them), each gathering whole rows at once, so memory stays O(output) and no per-pixel Python
loop runs. numpy arrays and CPU tensors are processed with numpy (single-threaded: torch's intra-op threads are
~10x slower on an oversubscribed CPU); tensors on other devices with the same float64 operations in torch.

Why not a package: ``bicubic-pytorch`` (0.1.2.1, MIT, 2025) computes the same weights and is exact when called
once per dimension with rounding in between, but has no uint8 two-pass mode, casts every input to float32, rounds
half to even, and depends on ``imageio``; ``resize-right`` (0.0.2, 2022) is unmaintained. This implementation is
~150 lines and is tested bit-exactly against the benchmark files.
"""

from __future__ import annotations

import math
from typing import TypeVar, overload

import numpy as np
import torch

__all__ = ["imresize", "mod_crop", "bicubic_degrade", "cubic", "contributions"]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``), elementwise on a float64 tensor."""
    absx = x.abs()
    absx2 = absx * absx
    absx3 = absx2 * absx
    inner = (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1).to(x.dtype)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2)).to(x.dtype)
    return inner + outer


def contributions(in_length: int, out_length: int, scale: float, antialiasing: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB ``contributions``: per-output-pixel tap weights and (0-based, symmetric-padded) input indices.

    Args:
        in_length: input size along the dimension (pixels).
        out_length: output size along the dimension (pixels).
        scale: output/input scale factor (< 1 downsamples).
        antialiasing: stretch the kernel by ``1 / scale`` when downsampling (MATLAB default).

    Returns:
        ``(weights, indices)``, both of shape (out_length, taps); weights float64 summing to 1 per row, indices int64
        in [0, in_length). Taps whose weight is zero for every output pixel are dropped (as MATLAB does).
    """
    kernel_width = 4.0
    stretch = scale < 1 and antialiasing
    if stretch:
        kernel_width = kernel_width / scale
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - indices
    weights = scale * cubic(scale * dist) if stretch else cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # symmetric boundary: aux = [1..in, in..1] in MATLAB's 1-based indexing
    aux = torch.cat([torch.arange(in_length), torch.arange(in_length - 1, -1, -1)])
    idx = aux[torch.remainder(indices.long() - 1, 2 * in_length)]
    keep = (weights != 0).any(dim=0)
    return weights[:, keep], idx[:, keep]


def _pass_rows(a: np.ndarray | torch.Tensor, out_length: int, scale: float, antialiasing: bool) -> np.ndarray | torch.Tensor:
    """One 1-D MATLAB resampling pass along axis 0 of a float64 2-D array (numpy on CPU, torch elsewhere).

    A loop over the few kernel taps, each gathering whole rows for every output pixel at once. Multiplication and
    addition are separate (unfused) operations in MATLAB's tap order, which keeps the uint8 path bit-exact.
    """
    weights, indices = contributions(int(a.shape[0]), out_length, scale, antialiasing)
    if isinstance(a, np.ndarray):
        w, idx = weights.numpy()[:, :, None], indices.numpy()
        out = a[idx[:, 0]] * w[:, 0]
        for p in range(1, w.shape[1]):
            out += a[idx[:, p]] * w[:, p]
        return out
    w_t, idx_t = weights.to(a.device)[:, :, None], indices.to(a.device)
    out_t = a.index_select(0, idx_t[:, 0]) * w_t[:, 0]
    for p in range(1, w_t.shape[1]):
        out_t += a.index_select(0, idx_t[:, p]) * w_t[:, p]
    return out_t


def _round_clip_uint8(a: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """MATLAB double -> uint8: round half away from zero, saturate to [0, 255] (values stay float64).

    Exact for every double: ``round`` (ties to even) is corrected only on exact .5 fractions.
    """
    if isinstance(a, np.ndarray):
        trunc = np.trunc(a)
        r = np.where(np.abs(a - trunc) == 0.5, trunc + np.sign(a), np.round(a))
        return np.clip(r, 0, 255)
    trunc_t = torch.trunc(a)
    r_t = torch.where((a - trunc_t).abs() == 0.5, trunc_t + torch.sign(a), torch.round(a))
    return r_t.clamp_(0, 255)


def _resize_stack(x: np.ndarray | torch.Tensor, scales: tuple[float, float], sizes: tuple[int, int],
                  antialiasing: bool) -> np.ndarray | torch.Tensor:
    """Resize a stack (N, H, W); uint8 rounds/clips per pass, floats are computed in float64 and cast back.

    numpy arrays and CPU tensors are processed with numpy (single-threaded, immune to thread oversubscription on
    busy machines); tensors on other devices with torch. Both run the identical sequence of float64 operations.
    Returns the same container type (and device) as ``x``.
    """
    if isinstance(x, np.ndarray):
        is_uint8, is_float = x.dtype == np.uint8, np.issubdtype(x.dtype, np.floating)
    else:
        is_uint8, is_float = x.dtype == torch.uint8, x.dtype.is_floating_point
    if not (is_uint8 or is_float):
        raise TypeError(f"imresize: unsupported dtype {x.dtype}; use uint8 or a floating-point dtype")
    n = int(x.shape[0])
    a: np.ndarray | torch.Tensor
    if isinstance(x, np.ndarray):
        a = x.astype(np.float64)
    elif x.device.type == "cpu":
        a = x.detach().to(torch.float64).numpy()
    else:
        a = x.detach().to(torch.float64)
    # rows = the dimension being resized, columns = everything else
    a = a.transpose(1, 0, 2) if isinstance(a, np.ndarray) else a.permute(1, 0, 2)  # (H, N, W)
    cur = [int(x.shape[1]), int(x.shape[2])]
    # MATLAB: dimension with the smaller scale first (stable sort, so height first for equal scales)
    for d in sorted(range(2), key=lambda k: scales[k]):
        if sizes[d] == cur[d] and scales[d] == 1.0:
            continue
        if d == 0:  # a is (H, N, W)
            rows = a.reshape(cur[0], n * cur[1])
            rows = _pass_rows(rows, sizes[0], scales[0], antialiasing)
            a = rows.reshape(sizes[0], n, cur[1])
        else:  # move W to the front: (W, N, H)
            t = a.transpose(2, 1, 0) if isinstance(a, np.ndarray) else a.permute(2, 1, 0)
            rows = t.reshape(cur[1], n * cur[0])
            rows = _pass_rows(rows, sizes[1], scales[1], antialiasing)
            t = rows.reshape(sizes[1], n, cur[0])
            a = t.transpose(2, 1, 0) if isinstance(t, np.ndarray) else t.permute(2, 1, 0)
        cur[d] = sizes[d]
        if is_uint8:
            a = _round_clip_uint8(a)
    if isinstance(a, np.ndarray):
        out = np.ascontiguousarray(a.transpose(1, 0, 2))  # (N, H, W)
        if isinstance(x, np.ndarray):
            return out.astype(x.dtype)
        return torch.from_numpy(out).to(dtype=x.dtype)
    return a.permute(1, 0, 2).contiguous().to(dtype=x.dtype)


@overload
def imresize(img: np.ndarray, scale: float | None = None, *, output_size: tuple[int, int] | None = None,
             antialiasing: bool = True) -> np.ndarray: ...
@overload
def imresize(img: torch.Tensor, scale: float | None = None, *, output_size: tuple[int, int] | None = None,
             antialiasing: bool = True) -> torch.Tensor: ...


def imresize(img: np.ndarray | torch.Tensor, scale: float | None = None, *,
             output_size: tuple[int, int] | None = None, antialiasing: bool = True) -> np.ndarray | torch.Tensor:
    """MATLAB ``imresize(img, scale, 'bicubic')`` (or ``imresize(img, [h w], 'bicubic')``).

    Args:
        img: a numpy array (H, W) or (H, W, C) -- the usual image layout -- or a torch tensor (..., H, W) such as
            (C, H, W) or (B, C, H, W). ``uint8`` selects the uint8 path (rounded and clipped after each pass,
            returns uint8); a floating dtype selects the double path (no intermediate rounding, any value range,
            returned in the input dtype).
        scale: output/input size ratio, e.g. ``1/4`` to downscale by 4 or ``3`` to upscale by 3. The output size is
            ``ceil(scale * size)`` as in MATLAB. Exactly one of ``scale`` and ``output_size`` is required.
        output_size: (height, width) of the output; the per-dimension scale is then ``out / in``.
        antialiasing: antialias when downscaling (MATLAB default True).

    Returns:
        The resized image, same container type, layout and dtype as ``img``.
    """
    if (scale is None) == (output_size is None):
        raise ValueError("imresize: give exactly one of scale and output_size")
    if isinstance(img, np.ndarray):
        if img.ndim not in (2, 3):
            raise ValueError(f"imresize: numpy input must be (H, W) or (H, W, C), got shape {img.shape}")
        stack = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
    elif isinstance(img, torch.Tensor):
        if img.dim() < 2:
            raise ValueError(f"imresize: tensor input must have at least 2 dims (..., H, W), got shape {tuple(img.shape)}")
        stack = img.reshape(-1, img.shape[-2], img.shape[-1])
    else:
        raise TypeError(f"imresize: expected a numpy array or torch tensor, got {type(img).__name__}")
    in_h, in_w = int(stack.shape[1]), int(stack.shape[2])
    if in_h < 1 or in_w < 1:
        raise ValueError(f"imresize: empty image of size {in_h}x{in_w}")
    if output_size is not None:
        out_h, out_w = (int(v) for v in output_size)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"imresize: output_size must be positive, got {output_size}")
        scales = (out_h / in_h, out_w / in_w)
    else:
        assert scale is not None
        if not scale > 0:
            raise ValueError(f"imresize: scale must be > 0, got {scale}")
        scales = (float(scale), float(scale))
        out_h, out_w = math.ceil(scale * in_h), math.ceil(scale * in_w)
    out = _resize_stack(stack, scales, (out_h, out_w), antialiasing)
    if isinstance(img, np.ndarray):
        assert isinstance(out, np.ndarray)
        return out[0] if img.ndim == 2 else np.ascontiguousarray(out.transpose(1, 2, 0))
    assert isinstance(out, torch.Tensor)
    return out.reshape(*img.shape[:-2], out_h, out_w)


def mod_crop(img: ArrayT, scale: int, *, channels_last: bool | None = None) -> ArrayT:
    """Crop an image to a multiple of ``scale`` in height and width, anchored top-left (SR ``modcrop``).

    Args:
        img: numpy (H, W) / (H, W, C) or torch (..., H, W).
        scale: the SR scale factor.
        channels_last: layout override; default: numpy is (H, W[, C]), torch is (..., H, W).
    """
    if scale < 1:
        raise ValueError(f"mod_crop: scale must be >= 1, got {scale}")
    last = isinstance(img, np.ndarray) if channels_last is None else channels_last
    if last:
        h, w = img.shape[0], img.shape[1]
        return img[: h - h % scale, : w - w % scale]
    h, w = img.shape[-2], img.shape[-1]
    return img[..., : h - h % scale, : w - w % scale]


def bicubic_degrade(hr: ArrayT, scale: int) -> ArrayT:
    """The standard BI degradation: ``imresize(mod_crop(hr, scale), 1/scale)`` (uint8 in -> EDSR benchmark LR).

    Args:
        hr: HR image, numpy (H, W[, C]) or torch (..., H, W); uint8 uses the per-pass-rounded MATLAB uint8 path.
        scale: integer downscaling factor.

    Returns:
        LR image of size (H // scale, W // scale), same type/dtype/layout as ``hr``.
    """
    cropped = mod_crop(hr, scale)
    if isinstance(cropped, np.ndarray):
        h, w = cropped.shape[0], cropped.shape[1]
    else:
        h, w = cropped.shape[-2], cropped.shape[-1]
    if h == 0 or w == 0:
        raise ValueError(f"bicubic_degrade: image of size {hr.shape[:2] if isinstance(hr, np.ndarray) else tuple(hr.shape[-2:])} is smaller than scale {scale}")
    return imresize(cropped, output_size=(h // scale, w // scale))
