"""Shape-generic forms of ops whose eager kernels need the output size as Python ints.

``torch.export`` (and so the ONNX exporter) records ``F.adaptive_max_pool2d(x, (h // 2, w // 2))`` with the size of
the example input baked in, because the op has no form with a symbolic output size. The functions here compute the
same values from index tensors built with shape arithmetic, so an exported graph keeps H and W symbolic. They are
used only while exporting or tracing (:func:`exporting`); eager code keeps the native kernels, so eager outputs are
unchanged. Both are exact: max pooling only selects values, and the nearest-neighbour indices are computed with the
same float32 formula as PyTorch's CPU kernel, so the results equal the native ops element by element
(``tests/test_export.py`` checks many sizes).
"""

from __future__ import annotations

import torch

__all__ = ["exporting", "adaptive_max_pool2d", "interpolate_nearest"]


def exporting() -> bool:
    """True while ``torch.export`` / the ONNX exporter / ``torch.jit.trace`` records the forward pass."""
    return bool(torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing())


def _adaptive_max_1d(x: torch.Tensor, dim: int, out: int | torch.SymInt, max_window: int) -> torch.Tensor:
    """Adaptive max pooling of ``x`` along ``dim`` to ``out`` positions.

    Window j covers [floor(j*L/out), ceil((j+1)*L/out)) as in PyTorch's kernel. Each window is gathered as
    ``max_window`` indices, those past its end repeating its last element (which leaves the maximum unchanged).
    ``max_window`` must be at least the longest window (checked by the caller's bound).
    """
    length = x.shape[dim]
    j = torch.arange(out, device=x.device)
    start = torch.div(j * length, out, rounding_mode="floor")
    end = torch.div((j + 1) * length + out - 1, out, rounding_mode="floor")
    t = torch.arange(max_window, device=x.device)
    index = torch.minimum(start[:, None] + t[None, :], end[:, None] - 1).reshape(-1)
    gathered = x.index_select(dim, index)
    shape = list(x.shape)
    shape[dim : dim + 1] = [out, max_window]
    return gathered.reshape(shape).amax(dim=dim + 1)


def adaptive_max_pool2d(x: torch.Tensor, size: tuple, divisor: int) -> torch.Tensor:
    """``F.adaptive_max_pool2d(x, size)`` for (B, C, H, W) -> (B, C, *size) where ``size = (H // divisor, W //
    divisor)`` (the case SAFM uses). Then every window is shorter than ``2 * divisor + 2`` pixels: L / (L // d) < 2d
    for L >= d, and a window spans less than L / out + 2 positions. Separable: rows first, then columns (the
    maximum over a rectangle is the maximum of the row maxima)."""
    bound = 2 * divisor + 1
    y = _adaptive_max_1d(x, 2, size[0], bound)
    return _adaptive_max_1d(y, 3, size[1], bound)


def _nearest_index(out: int | torch.SymInt, length: int | torch.SymInt, device: torch.device) -> torch.Tensor:
    """Source index of every output position for legacy ``'nearest'``: min(floor(j * (float32)(L / out)), L - 1),
    the float32 product PyTorch's CPU kernel computes (``nearest_idx`` with ``scale = (float)L / out``)."""
    j = torch.arange(out, device=device)
    one = torch.ones((), dtype=torch.float32, device=device)
    scale = (one * length) / (one * out)
    src = torch.floor(j.to(torch.float32) * scale).to(torch.int64)
    return src.clamp(max=length - 1)


def interpolate_nearest(x: torch.Tensor, size: tuple) -> torch.Tensor:
    """``F.interpolate(x, size=size, mode="nearest")`` for (B, C, h, w) -> (B, C, *size), as two gathers."""
    rows = _nearest_index(size[0], x.shape[2], x.device)
    cols = _nearest_index(size[1], x.shape[3], x.device)
    return x.index_select(2, rows).index_select(3, cols)
