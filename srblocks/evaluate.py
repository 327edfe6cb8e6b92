"""Measure a model the way the SR papers do, and upscale images with it (tiled and/or self-ensembled).

:func:`evaluate` runs a model on every LR image of a benchmark set (full images, batch 1, ``eval()``, no autograd)
and scores the output with :func:`srblocks.metrics.psnr` / :func:`~srblocks.metrics.ssim` (Y of YCbCr, SR rounded to
uint8, HR cropped to LR size x scale, ``scale`` pixels shaved; ``conventions.md`` section 1). What the protocol
takes from the model's spec, so that a spec reproduces its paper's table without flags:

* ``input_range``: the LR is fed as RGB in [0, input_range] (255 for FMEN's checkpoint, 1 otherwise) and the output
  is read in the same range;
* ``y_convention``: float Y (default) or Y rounded to uint8 (HPINet's evaluation);
* the ``scale`` variable.

:func:`upscale_image` / :func:`upscale_tensor` are the inference path shared by :func:`evaluate` and
``srblocks upscale``:

* **Tiling** (``tile=N``): the LR image is cut into a grid of cores of at most N x N pixels; each core is run with
  ``tile_overlap`` pixels of real image context on every side (less at the image border, where the full image has
  none either) and only the core's part of the output is kept. When ``tile_overlap`` is at least the model's
  receptive-field radius in LR pixels the result equals untiled inference up to float rounding (measured max
  difference about 1e-4 on the 0..255 scale for FMEN-S, well below 1/255 of the range). FMEN-S (deploy form) has a
  radius of 31 LR pixels (measured by perturbing one input pixel), hence the default overlap of 32. Models whose
  pooling depends on the image size or grid (SAFMN's adaptive max-pooling to H/2^k x W/2^k, MGA's per-patch
  pooling) see different pooling grids per tile, so their tiled output is close to, not equal to, the untiled one.
  HPINet is further from it: GPA matches each patch with any patch of the whole map (a global receptive field) and
  the CPD windows follow the map size, so a tile sees other partners (HPINet-S x4 on Set5 bird with ``tile=16``: a
  quarter of the output pixels differ, by up to 11 levels of 255). Tile HPINet only when memory forces it.
* **Self-ensemble x8** (``self_ensemble=True``, the "+" rows of EDSR/RCAN/HPUN): the model runs on the 8 images
  obtained with {identity, horizontal flip} x {identity, vertical flip} x {identity, transpose}; each output is
  transformed back and the 8 float outputs are averaged (EDSR ``forward_x8``) before rounding.
* **Memory** (:class:`TiledUpscale`, used by :func:`upscale_image`, :func:`evaluate` and ``srblocks upscale``):
  each tile's output is rounded to uint8 straight into a row band of the result, so no full-size float SR tensor
  (12 bytes per output pixel) is ever made; ``srblocks upscale`` streams the bands to the PNG encoder
  (:func:`srblocks.data.io.write_png_rows`), so a tiled PNG output needs memory for one band, whatever the image
  size. Whole-image results that do not fit in memory raise :class:`ImageTooLargeError` (naming the image and the
  limit) before allocating.
* **Minimum input size**: an image or tile the model cannot process raises :class:`InputTooSmallError` stating
  the model's smallest input, found on the meta device (:func:`minimum_input_size`: SAFMN 8x8, RFDN 15x15).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch
from torch import nn

from .data import PairedImageDataset, SRSample, image_to_tensor, read_image
from .errors import NonFiniteError, SrblocksError
from .metrics import YRounding, psnr, ssim, to_uint8_image

__all__ = [
    "DEFAULT_TILE_OVERLAP",
    "AUTO_TILE",
    "ImageResult",
    "EvalResult",
    "evaluate",
    "upscale_image",
    "upscale_tensor",
    "inference_settings",
    "InferenceSettings",
    "check_finite_output",
    "TiledUpscale",
    "InputTooSmallError",
    "ImageTooLargeError",
    "minimum_input_size",
    "available_memory",
    "check_fits",
    "ImageFailure",
]

#: LR pixels of context around each tile (FMEN-S needs 31; see the module docstring)
DEFAULT_TILE_OVERLAP = 32
#: ``tile="auto"``: images with more LR pixels than AUTO_TILE**2 are cut into tiles of AUTO_TILE x AUTO_TILE
AUTO_TILE = 512

TileArg = int | Literal["auto"] | None


# ---------------------------------------------------------------------------------------------------------------
# settings taken from the spec
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InferenceSettings:
    """What inference and scoring need to know about a model: scale, input range and Y convention."""

    scale: int | None
    input_range: float
    y_convention: YRounding


def inference_settings(model: nn.Module) -> InferenceSettings:
    """Scale, input range and Y convention from the spec of a :func:`srblocks.build_model` model.

    Modules not built from a spec get ``scale=None`` (must then be given), input range 1.0 and float Y.
    """
    from .build import model_info

    try:
        info = model_info(model)
    except TypeError:
        return InferenceSettings(None, 1.0, "float")
    scale = info.variables.get("scale")
    return InferenceSettings(int(scale) if scale is not None else None, float(info.spec.input_range),
                             info.spec.y_convention)


def _resolve_scale(model_scale: int | None, scale: int | None) -> int:
    if scale is not None:
        if not (isinstance(scale, (int, np.integer)) and not isinstance(scale, bool) and scale >= 1):
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if model_scale is not None and int(scale) != model_scale:
            raise ValueError(f"scale={scale} but the model was built for x{model_scale}; rebuild it with "
                             f"build_model(spec, scale={scale}) or leave scale out")
        return int(scale)
    if model_scale is None:
        raise ValueError("the model has no `scale` variable (not built from a spec): pass scale=")
    return model_scale


def _model_device(model: nn.Module) -> torch.device:
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` + ``torch.inference_mode()``; the previous train/eval mode is restored afterwards."""
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was)


# ---------------------------------------------------------------------------------------------------------------
# tiled / self-ensembled inference
# ---------------------------------------------------------------------------------------------------------------


def _splits(n: int, tile: int) -> list[tuple[int, int]]:
    """``n`` pixels cut into ceil(n / tile) near-equal cores (no tiny remainder tile)."""
    k = max(1, math.ceil(n / tile))
    edges = [round(i * n / k) for i in range(k + 1)]
    return [(edges[i], edges[i + 1]) for i in range(k)]


def _resolve_tile(tile: TileArg, h: int, w: int) -> int | None:
    if tile is None:
        return None
    if tile == "auto":
        return AUTO_TILE if h * w > AUTO_TILE * AUTO_TILE else None
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"tile must be a positive integer, 'auto' or None, got {tile!r}")
    return int(tile)


def _forward(model: nn.Module, x: torch.Tensor, tile: int | None, overlap: int) -> torch.Tensor:
    """One forward pass over (B, C, h, w), tiled when ``tile`` is smaller than the image."""
    h, w = x.shape[-2:]
    if tile is None or (h <= tile and w <= tile):
        return model(x)
    out: torch.Tensor | None = None
    scale = 0
    for y0, y1 in _splits(h, tile):
        for x0, x1 in _splits(w, tile):
            py0, py1 = max(0, y0 - overlap), min(h, y1 + overlap)
            px0, px1 = max(0, x0 - overlap), min(w, x1 + overlap)
            o = model(x[..., py0:py1, px0:px1])
            if out is None:
                scale = o.shape[-1] // (px1 - px0)
                out = o.new_empty(*o.shape[:-2], h * scale, w * scale)
            if o.shape[-2:] != (scale * (py1 - py0), scale * (px1 - px0)):
                raise ValueError(f"tiling needs an integer scale: a {py1 - py0}x{px1 - px0} tile gave "
                                 f"{o.shape[-2]}x{o.shape[-1]}")
            out[..., y0 * scale : y1 * scale, x0 * scale : x1 * scale] = o[
                ..., (y0 - py0) * scale : (y1 - py0) * scale, (x0 - px0) * scale : (x1 - px0) * scale
            ]
    assert out is not None
    return out


#: the 8 dihedral transforms as (horizontal flip, vertical flip, transpose), applied in that order
_DIHEDRAL = list(itertools.product((False, True), repeat=3))


def _apply(x: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    if hflip:
        x = x.flip(-1)
    if vflip:
        x = x.flip(-2)
    if transpose:
        x = x.transpose(-2, -1)
    return x


def _invert(x: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    if transpose:
        x = x.transpose(-2, -1)
    if vflip:
        x = x.flip(-2)
    if hflip:
        x = x.flip(-1)
    return x


def check_finite_output(y: torch.Tensor, name: str) -> None:
    """Refuse a model output with NaN or infinite values (:class:`~srblocks.errors.NonFiniteError`, naming the
    image): rounded to uint8 they would silently become black pixels and a meaningless PSNR."""
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        nan, inf = int(torch.isnan(y).sum()), int(torch.isinf(y).sum())
        raise NonFiniteError(f"{name}: the model output has {nan:,} NaN and {inf:,} infinite value(s) of "
                             f"{y.numel():,} (non-finite weights, or activations that overflow)")


def upscale_tensor(
    model: nn.Module,
    x: torch.Tensor,
    *,
    tile: TileArg = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    self_ensemble: bool = False,
) -> torch.Tensor:
    """Run ``model`` on a float batch in its input range, optionally tiled and/or self-ensembled.

    Args:
        model: any SR module (B, 3, h, w) -> (B, 3, h*s, w*s); run in ``eval()`` mode under ``inference_mode`` (its
            train/eval mode is restored afterwards).
        x: (B, 3, h, w) float tensor with values in [0, input range], on the model's device.
        tile: core size in LR pixels, ``"auto"`` (tiles of :data:`AUTO_TILE` only when the image has more than
            AUTO_TILE^2 pixels) or None (whole image).
        tile_overlap: LR pixels of context on each side of a tile.
        self_ensemble: average the 8 flip/transpose variants (EDSR ``forward_x8``).

    Returns:
        (B, 3, h*s, w*s) float tensor in the model's output range, not clamped (clamp/round when converting).
    """
    if x.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if isinstance(tile_overlap, bool) or not isinstance(tile_overlap, (int, np.integer)) or tile_overlap < 0:
        raise ValueError(f"tile_overlap must be a non-negative integer, got {tile_overlap!r}")
    core = _resolve_tile(tile, x.shape[-2], x.shape[-1])
    with _inference(model):
        if not self_ensemble:
            return _forward(model, x, core, int(tile_overlap))
        total: torch.Tensor | None = None
        for t in _DIHEDRAL:
            y = _invert(_forward(model, _apply(x, *t), core, int(tile_overlap)), *t)
            total = y.clone() if total is None else total.add_(y)
        assert total is not None
        return total / len(_DIHEDRAL)


# ---------------------------------------------------------------------------------------------------------------
# bounded-memory inference: uint8 row bands, minimum input size, memory limits
# ---------------------------------------------------------------------------------------------------------------


class InputTooSmallError(SrblocksError, ValueError):
    """An image (or a tile of it) is smaller than the smallest input the model can process."""


class ImageTooLargeError(SrblocksError, MemoryError):
    """An image needs more memory than is available; raised before anything large is allocated."""


#: model -> (min height, min width) in LR pixels, or None where unknown (see :func:`minimum_input_size`)
_MIN_SIZES: "weakref.WeakKeyDictionary[nn.Module, tuple[int, int] | None]" = weakref.WeakKeyDictionary()
#: largest side tried by :func:`minimum_input_size`
_MIN_SIZE_LIMIT = 4096
#: untiled images with more LR pixels than this are checked against the available memory before inference
_CHECKED_PIXELS = 1024 * 1024


def _model_name(model: nn.Module) -> str:
    from .build import model_info

    try:
        return repr(model_info(model).spec.name)
    except TypeError:
        return type(model).__name__


def minimum_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The smallest LR input (height, width) in pixels that ``model`` can process, or None where unknown.

    Found by forward passes on the ``meta`` device (shapes only, no arithmetic: milliseconds per pass): the
    smallest square side in powers of two from 64 that works gives the reference side R; the minimum height is
    the smallest h <= R (binary search) for which an (h, R) input works, the minimum width likewise. Cached per
    model object. None when no input up to 4096 x 4096 works on the meta device (e.g. an operation without a meta
    kernel): callers then skip the check. Examples (x4): SAFMN 8 x 8 (adaptive max-pooling to H/8), RFDN 15 x 15
    (ESA's strided convolution and 7x7 pooling), FSRCNN and FMEN-S 1 x 1.
    """
    if model in _MIN_SIZES:
        return _MIN_SIZES[model]
    state = {name: torch.empty_like(t, device="meta")
             for name, t in itertools.chain(model.named_parameters(), model.named_buffers())}

    def works(h: int, w: int) -> bool:
        try:
            torch.func.functional_call(model, state, (torch.empty(1, 3, h, w, device="meta"),), strict=False)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not at this size"
            return False

    def smallest(ok: Any, hi: int) -> int:  # smallest n in [1, hi] with ok(n), given ok(hi)
        lo = 0  # ok(lo) is False (or lo == 0)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if ok(mid) else (mid, hi)
        return hi

    result: tuple[int, int] | None = None
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            side = 64
            while side <= _MIN_SIZE_LIMIT and not works(side, side):
                side *= 2
            if side <= _MIN_SIZE_LIMIT:
                result = (smallest(lambda h: works(h, side), side), smallest(lambda w: works(side, w), side))
    finally:
        model.train(was)
    _MIN_SIZES[model] = result
    return result


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            return max(0, int(limit) - usage)
        return None
    return None


def available_memory(device: torch.device | str | None = None) -> int | None:
    """Bytes this process can still allocate, or None where unknown.

    Host (default): ``MemAvailable`` from ``/proc/meminfo``, lowered to the cgroup limit minus its usage when the
    process runs in a memory-limited container. CUDA device: the free memory ``torch.cuda.mem_get_info`` reports.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except (RuntimeError, AssertionError):
            return None
    if dev.type != "cpu":
        return None
    known = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(known) if known else None


def _gib(n: float) -> str:
    """A byte count for messages: GiB with one decimal, or MiB below 1 GiB."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_fits(nbytes: int, what: str, device: torch.device | str | None = None, *, hint: str = "") -> None:
    """Raise :class:`ImageTooLargeError` ("``what`` needs X GiB, more than the Y GiB of memory available: ``hint``")
    if ``nbytes`` bytes do not fit in :func:`available_memory` of ``device`` (host by default)."""
    free = available_memory(device)
    if free is not None and nbytes > free:
        where = "" if device is None or torch.device(device).type == "cpu" else f" on {device}"
        raise ImageTooLargeError(f"{what} needs {_gib(nbytes)}, more than the {_gib(free)} of memory available"
                                 f"{where}" + (f": {hint}" if hint else ""))


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a uint8 numpy image or an image path, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels (0..255), got {image.dtype}: convert the image to 8 bit "
                        "(files are converted by srblocks.data.read_image)")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grayscale image, got shape {image.shape}; "
                         "drop an alpha channel first (read_image does)")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


class TiledUpscale:
    """One image super-resolved tile by tile into uint8 row bands: memory bounded by one band, not the image.

    The LR image is cut into the grid of cores of :func:`upscale_tensor` (``tile``, ``tile_overlap``; no tiling:
    one core, the whole image). A band is one row of cores: each core is converted to float in the model's input
    range, run with its context (and self-ensembled: the 8 flips/transposes of the same tile, averaged), cropped,
    checked for non-finite values and rounded to uint8 into the band (``srblocks.metrics.to_uint8_image``), so no
    full-size float SR tensor exists. The pixels equal ``tensor_to_image(upscale_tensor(...))`` exactly without
    self-ensemble (tiled or not) and with self-ensemble untiled; tiled with self-ensemble, the tiles are cut in
    the original image for all 8 variants (``upscale_tensor`` cuts each transformed image anew), which gives the
    same pixels when the grid is mirror-symmetric and otherwise differs only where ``tile_overlap`` does not cover
    the receptive field.

    Memory (host): the uint8 LR image, one band of uint8 output (band rows x ``width`` x 3 bytes; for a 4000x3000
    LR image at x4 with ``tile=512``: 2000 x 16000 x 3 = 96 MB) and one tile's activations. Without tiling the
    model's own activations for the whole image: an image of more than 1024 x 1024 LR pixels is first checked
    against the available memory with a meta-device estimate (:func:`srblocks.profile`), raising
    :class:`ImageTooLargeError` instead of allocating.

    Args:
        model, tile, tile_overlap, self_ensemble: as :func:`upscale_tensor`.
        image: uint8 (H, W, 3) RGB or (H, W) grayscale array (expanded to RGB).
        input_range: the model's input range (default: its spec's).
        scale: the scale factor (default: the model's ``scale`` variable; otherwise measured on the first tile).
        name: the image's name in error messages (a file name).

    Attributes:
        shape: (H * scale, W * scale, 3) of the output.
        scale, lr_size ((H, W) in LR pixels), tile (core side in LR pixels or None).

    Raises (from the constructor or while iterating :meth:`bands`; messages start with ``name``):
        InputTooSmallError: the image, or a tile of it, is smaller than :func:`minimum_input_size`.
        ImageTooLargeError: whole-image inference that does not fit in memory.
        NonFiniteError: NaN or infinite outputs.
        ValueError: a model that does not upscale (B, 3, h, w) to (B, 3, h*s, w*s).
    """

    def __init__(
        self,
        model: nn.Module,
        image: np.ndarray,
        *,
        tile: TileArg = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        self_ensemble: bool = False,
        input_range: float | None = None,
        scale: int | None = None,
        name: str | None = None,
    ) -> None:
        image = _as_rgb_uint8(image)
        if isinstance(tile_overlap, bool) or not isinstance(tile_overlap, (int, np.integer)) or tile_overlap < 0:
            raise ValueError(f"tile_overlap must be a non-negative integer, got {tile_overlap!r}")
        h, w = image.shape[:2]
        self.model, self.image, self.self_ensemble = model, image, bool(self_ensemble)
        self.lr_size = (int(h), int(w))
        self.name = name or f"the {h}x{w} image"
        if h < 1 or w < 1:
            raise InputTooSmallError(f"{self.name}: the image is empty ({h}x{w} pixels)")
        settings = inference_settings(model)
        self.value_range = float(input_range) if input_range is not None else settings.input_range
        self.device = _model_device(model)
        self.tile = _resolve_tile(tile, h, w)
        tiled = self.tile is not None and (h > self.tile or w > self.tile)
        self.overlap = int(tile_overlap) if tiled else 0
        rows = _splits(h, self.tile) if tiled else [(0, h)]
        cols = _splits(w, self.tile) if tiled else [(0, w)]
        self._grid = [((y0, y1), cols) for y0, y1 in rows]
        self._tiled = tiled
        self._first: np.ndarray | None = None
        if not tiled and h * w > _CHECKED_PIXELS:
            self._check_whole_image_memory()
        self.scale = _resolve_scale(settings.scale, scale) if (scale is not None or settings.scale is not None) \
            else None
        if self.scale is None:  # not built from a spec: measure the scale on the first tile (kept for bands())
            (y0, y1), cols = self._grid[0]
            self._first = self._tile(y0, y1, *cols[0])
        assert self.scale is not None
        self.shape = (h * self.scale, w * self.scale, 3)

    @property
    def nbytes(self) -> int:
        """Bytes of the whole uint8 output image."""
        return self.shape[0] * self.shape[1] * 3

    def _check_whole_image_memory(self) -> None:
        from .profile import profile

        h, w = self.lr_size
        try:
            need = profile(self.model, (h, w)).peak_memory_bytes
        except Exception:  # noqa: BLE001 - no estimate (no meta kernel, ...): inference itself will tell
            return
        check_fits(need, f"{self.name}: running the model on the whole {h}x{w} image (no tiling) by a meta-device "
                         f"estimate", self.device, hint="tile it (tile='auto' or a tile size; srblocks upscale --tile)")

    def _too_small(self, th: int, tw: int) -> str | None:
        """The message for a th x tw LR input below the model's minimum, or None."""
        least = minimum_input_size(self.model)
        if least is None or (th >= least[0] and tw >= least[1]):
            return None
        h, w = self.lr_size
        need = f"{least[0]}x{least[1]} LR pixels (height x width)"
        model = _model_name(self.model)
        if h < least[0] or w < least[1]:
            return (f"{self.name}: the image is {h}x{w} pixels, smaller than the {need} the model {model} needs "
                    f"at least (its smallest input, found by forward passes on the meta device)")
        return (f"{self.name}: a {th}x{tw} tile is smaller than the {need} the model {model} needs at least: "
                f"use a larger tile (at least {max(least)}) or tile overlap")

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.model
        if not self.self_ensemble:
            return model(x)
        total: torch.Tensor | None = None
        for t in _DIHEDRAL:
            y = _invert(model(_apply(x, *t)), *t)
            total = y.clone() if total is None else total.add_(y)
        assert total is not None
        return total / len(_DIHEDRAL)

    def _tile(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """uint8 (rows, cols, 3) output of the LR core [y0:y1, x0:x1]."""
        h, w = self.lr_size
        ov = self.overlap
        py0, py1, px0, px1 = max(0, y0 - ov), min(h, y1 + ov), max(0, x0 - ov), min(w, x1 + ov)
        th, tw = py1 - py0, px1 - px0
        x = image_to_tensor(self.image[py0:py1, px0:px1], value_range=self.value_range)[None].contiguous()
        x = x.to(self.device)
        with _inference(self.model):
            try:
                o = self._forward(x)
            except Exception as exc:
                message = None if isinstance(exc, SrblocksError) else self._too_small(th, tw)
                if message is None:
                    raise
                raise InputTooSmallError(message) from exc
        del x
        what = f"{th}x{tw} LR tile" if self._tiled else f"{th}x{tw} LR image"
        if self.scale is None:
            self.scale = o.shape[-1] // tw if o.dim() == 4 else 0
        s = self.scale
        if o.dim() != 4 or tuple(o.shape[1:]) != (3, th * s, tw * s) or s < 1:
            raise ValueError(f"{self.name}: the model turned a {what} into {tuple(o.shape)}, expected "
                             f"(1, 3, {th * s}, {tw * s}) at x{s}" if s >= 1 else
                             f"{self.name}: the model turned a {what} into {tuple(o.shape)}, not an upscaling")
        core = o[..., (y0 - py0) * s : (y1 - py0) * s, (x0 - px0) * s : (x1 - px0) * s]
        where = "" if not self._tiled else f" (tile of LR rows {y0}-{y1}, columns {x0}-{x1})"
        check_finite_output(core, self.name + where)
        return to_uint8_image(core.float().cpu(), value_range=self.value_range)

    def bands(self) -> Iterator[np.ndarray]:
        """uint8 (rows, W * scale, 3) bands of the output, top to bottom (each band is a new array)."""
        s = self.scale
        assert s is not None
        width = self.shape[1]
        for (y0, y1), cols in self._grid:
            band = np.empty(((y1 - y0) * s, width, 3), dtype=np.uint8)
            for x0, x1 in cols:
                if self._first is not None:
                    part, self._first = self._first, None
                else:
                    part = self._tile(y0, y1, x0, x1)
                band[:, x0 * s : x1 * s] = part
            yield band

    def to_array(self) -> np.ndarray:
        """The whole uint8 (H * scale, W * scale, 3) output; its size is checked against the available memory
        first (:class:`ImageTooLargeError`, naming the image and the limit)."""
        h, w = self.shape[:2]
        check_fits(self.nbytes + self.nbytes // max(1, len(self._grid)), f"{self.name}: the {h}x{w} uint8 SR image",
                   hint="write it in row bands (TiledUpscale.bands(); srblocks upscale streams PNG outputs)")
        out = np.empty(self.shape, dtype=np.uint8)
        row = 0
        for band in self.bands():
            out[row : row + band.shape[0]] = band
            row += band.shape[0]
        return out


def upscale_image(
    model: nn.Module,
    image: np.ndarray | str | os.PathLike[str],
    *,
    tile: TileArg = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    self_ensemble: bool = False,
    input_range: float | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Super-resolve one image: uint8 (H, W, 3) RGB (or an image file) -> uint8 (H*s, W*s, 3).

    The image is fed in the model's input range (from its spec, or ``input_range``), the output clamped, scaled
    and rounded to uint8. Files are read with :func:`srblocks.data.read_image` (grayscale expanded to RGB, alpha
    dropped, 16-bit reduced to 8-bit; corrupt or truncated files raise :class:`~srblocks.data.ImageReadError`).
    Tiling and self-ensemble as in :func:`upscale_tensor`; computed tile by tile into the uint8 result
    (:class:`TiledUpscale`): with tiling, memory is the uint8 output plus one tile's work, not a float SR tensor.

    Raises:
        TypeError / ValueError: an array that is not 8-bit RGB or grayscale.
        InputTooSmallError: an image (or tile) below the model's :func:`minimum_input_size`, stating the minimum.
        ImageTooLargeError: the output (or untiled inference) does not fit in the available memory.
        NonFiniteError: the model output has NaN or infinite values (named ``name``, default the file name).
    """
    if isinstance(image, (str, os.PathLike)):
        name = name or str(image)
        image = read_image(image)
    job = TiledUpscale(model, image, tile=tile, tile_overlap=tile_overlap, self_ensemble=self_ensemble,
                       input_range=input_range, name=name)
    return job.to_array()


# ---------------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFailure:
    """An image that could not be scored (``evaluate(..., errors="skip")``): its name, the reason in one line and
    the exception (for callers that format it themselves)."""

    name: str
    reason: str
    error: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ImageResult:
    """Scores of one image. ``ssim`` is None when SSIM was not computed; ``seconds`` is the inference time."""

    name: str
    psnr: float
    ssim: float | None
    lr_size: tuple[int, int]
    seconds: float
    lr_generated: bool = False


@dataclass
class EvalResult:
    """Per-image and mean PSNR/SSIM of one model on one set, with the protocol that produced them."""

    dataset: str
    scale: int
    y_channel: bool
    y_rounding: YRounding
    crop_border: int
    input_range: float
    self_ensemble: bool
    tile: int | str | None
    images: list[ImageResult] = field(default_factory=list)
    #: images that failed (only with ``errors="skip"``); the means are over ``images`` only
    failures: list[ImageFailure] = field(default_factory=list)

    @property
    def mean_psnr(self) -> float:
        """Mean of the per-image PSNR values in dB (the papers' convention; not the PSNR of the mean MSE)."""
        return float(np.mean([r.psnr for r in self.images])) if self.images else math.nan

    @property
    def mean_ssim(self) -> float | None:
        """Mean of the per-image SSIM values (None when SSIM was not computed)."""
        if not self.images or any(r.ssim is None for r in self.images):
            return None
        return float(np.mean([r.ssim for r in self.images]))

    @property
    def per_image(self) -> dict[str, ImageResult]:
        """Results by image name."""
        return {r.name: r for r in self.images}

    @property
    def metric_name(self) -> str:
        """``"Y (float)"``, ``"Y (uint8)"`` or ``"RGB"``."""
        return f"Y ({self.y_rounding})" if self.y_channel else "RGB"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (per-image list, means and protocol)."""
        return {
            "dataset": self.dataset,
            "scale": self.scale,
            "metric": self.metric_name,
            "y_channel": self.y_channel,
            "y_rounding": self.y_rounding,
            "crop_border": self.crop_border,
            "input_range": self.input_range,
            "self_ensemble": self.self_ensemble,
            "tile": self.tile,
            "mean_psnr": self.mean_psnr,
            "mean_ssim": self.mean_ssim,
            "images": [
                {"name": r.name, "psnr": r.psnr, "ssim": r.ssim, "lr_size": list(r.lr_size), "seconds": r.seconds,
                 "lr_generated": r.lr_generated}
                for r in self.images
            ],
            "failures": [{"name": f.name, "reason": f.reason} for f in self.failures],
        }

    def format_table(self) -> str:
        """A plain-text table: one row per image and the mean."""
        head = (f"{self.dataset}  x{self.scale}  {self.metric_name}, shave {self.crop_border}"
                f"{', self-ensemble x8' if self.self_ensemble else ''}{f', tile {self.tile}' if self.tile else ''}")
        width = max([len("image"), len("mean")] + [len(r.name) for r in self.images])
        lines = [head, f"  {'image':<{width}}  {'PSNR (dB)':>9}  {'SSIM':>6}  {'LR size':>9}  {'time':>7}"]
        for r in self.images:
            s = f"{r.ssim:.4f}" if r.ssim is not None else "-"
            lines.append(f"  {r.name:<{width}}  {r.psnr:>9.4f}  {s:>6}  {f'{r.lr_size[0]}x{r.lr_size[1]}':>9}  "
                         f"{r.seconds:>6.2f}s")
        ms = self.mean_ssim
        lines.append(f"  {'mean':<{width}}  {self.mean_psnr:>9.4f}  {(f'{ms:.4f}' if ms is not None else '-'):>6}")
        if self.failures:
            lines.append(f"  ({len(self.failures)} image(s) failed and are not in the mean: "
                         f"{', '.join(f.name for f in self.failures)})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def _dataset_name(data: object) -> str:
    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        return p.parent.name if p.name in ("HR", "GTmod12") else p.name
    return "images"


def _samples(data: object, scale: int) -> tuple[Sequence[SRSample] | PairedImageDataset, str]:
    if isinstance(data, PairedImageDataset):
        if data.scale != scale:
            raise ValueError(f"the dataset was made for x{data.scale}, the model is x{scale}")
        return data, "images"
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)) and data \
            and all(isinstance(s, SRSample) for s in data):
        return data, "images"
    return PairedImageDataset(data, scale), _dataset_name(data)


def evaluate(
    model: nn.Module,
    data: object,
    scale: int | None = None,
    *,
    y_channel: bool = True,
    y_rounding: YRounding | None = None,
    crop_border: int | None = None,
    self_ensemble: bool = False,
    tile: TileArg = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    compute_ssim: bool = True,
    input_range: float | None = None,
    name: str | None = None,
    progress: bool = False,
    errors: Literal["raise", "skip"] = "raise",
) -> EvalResult:
    """PSNR/SSIM of ``model`` on a benchmark set, exactly as the SR papers compute them.

    Args:
        model: a model from :func:`srblocks.build_model` (weights loaded), or any SR module (then pass ``scale``;
            input range 1.0 and float Y unless given). Runs on the device its parameters are on, in ``eval()``
            mode (its mode is restored afterwards).
        data: a set folder in the EDSR (``HR/`` + ``LR_bicubic/X{s}``) or BasicSR (``GTmod12`` + ``LRbicx{s}``)
            layout, an HR-only folder (LR generated with MATLAB bicubic), in-memory HR images (e.g.
            :func:`srblocks.data.embedded_default`), a :class:`~srblocks.data.PairedImageDataset` or a list of
            :class:`~srblocks.data.SRSample`.
        scale: the scale factor; default the model's ``scale`` variable (a different value is an error).
        y_channel: score Y of YCbCr (default) or RGB (``False``; NTIRE convention).
        y_rounding: ``"float"`` or ``"uint8"`` Y; default the spec's ``y_convention`` (float for other modules).
        crop_border: pixels shaved per border (default ``scale``).
        self_ensemble: x8 self-ensemble (see module docstring).
        tile, tile_overlap: tiled inference (see :func:`upscale_tensor`); default whole images, as the papers.
        compute_ssim: also compute SSIM (the slower metric).
        input_range: override the spec's input range (rarely needed).
        name: dataset name for the report (default: the folder name).
        progress: show a tqdm progress bar.
        errors: ``"raise"`` (default): the first image that cannot be read, processed or scored raises;
            ``"skip"``: it is recorded in ``EvalResult.failures`` (name and reason) and the other images are scored.

    Each SR image is computed tile by tile (or as one tile) straight into uint8 (:class:`TiledUpscale`); the
    ``seconds`` of an image are its inference time including that conversion.

    Returns:
        :class:`EvalResult` with ``images`` (per-image :class:`ImageResult`), ``mean_psnr`` and ``mean_ssim``.
    """
    settings = inference_settings(model)
    s = _resolve_scale(settings.scale, scale)
    rounding: YRounding = y_rounding if y_rounding is not None else settings.y_convention
    if rounding not in ("float", "uint8"):
        raise ValueError(f"y_rounding must be 'float' or 'uint8', got {rounding!r}")
    vr = float(input_range) if input_range is not None else settings.input_range
    border = s if crop_border is None else int(crop_border)
    samples, default_name = _samples(data, s)
    result = EvalResult(dataset=name or default_name, scale=s, y_channel=y_channel, y_rounding=rounding,
                        crop_border=border, input_range=vr, self_ensemble=self_ensemble, tile=tile)
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    device = _model_device(model)
    from tqdm.auto import tqdm

    indices = range(len(samples))
    bar = tqdm(indices, desc=f"eval {result.dataset}", unit="img", disable=None if progress else True, leave=False)
    with bar:
        for i in bar:
            try:
                result.images.append(_score(model, samples[i], result, s, tile, tile_overlap, compute_ssim, device))
            except Exception as exc:
                if errors == "raise":
                    raise
                label = _sample_name(samples, i)
                reason = " ".join(str(exc).split()) or type(exc).__name__
                result.failures.append(ImageFailure(label, reason, exc))
                continue
            bar.set_postfix(psnr=f"{result.mean_psnr:.2f}")
    return result


def _sample_name(samples: Sequence[SRSample] | PairedImageDataset, i: int) -> str:
    if isinstance(samples, PairedImageDataset):
        return samples.pairs[i].name
    return getattr(samples[i], "name", str(i))


def _score(model: nn.Module, sample: SRSample, result: EvalResult, s: int, tile: TileArg, tile_overlap: int,
           compute_ssim: bool, device: torch.device) -> ImageResult:
    """PSNR/SSIM of one sample under ``result``'s protocol; the SR image is computed tile by tile to uint8."""
    t0 = time.perf_counter()
    job = TiledUpscale(model, sample.lr, tile=tile, tile_overlap=tile_overlap, self_ensemble=result.self_ensemble,
                       input_range=result.input_range, scale=s, name=f"{result.dataset}/{sample.name}")
    sr = job.to_array()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    kw = dict(scale=s, y_channel=result.y_channel, y_rounding=result.y_rounding, crop_border=result.crop_border)
    p = psnr(sr, sample.hr, **kw)
    q = ssim(sr, sample.hr, **kw) if compute_ssim else None
    return ImageResult(sample.name, p, q, job.lr_size, seconds, bool(sample.lr_generated))

