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
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch
from torch import nn

from .data import PairedImageDataset, SRSample, image_to_tensor, read_image, tensor_to_image
from .errors import NonFiniteError
from .metrics import YRounding, psnr, ssim

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
    Tiling and self-ensemble as in :func:`upscale_tensor`.

    Raises:
        TypeError / ValueError: an array that is not 8-bit RGB or grayscale.
        NonFiniteError: the model output has NaN or infinite values (named ``name``, default the file name).
    """
    if isinstance(image, (str, os.PathLike)):
        name = name or str(image)
        image = read_image(image)
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
    vr = float(input_range) if input_range is not None else inference_settings(model).input_range
    x = image_to_tensor(image, value_range=vr)[None].contiguous().to(_model_device(model))
    y = upscale_tensor(model, x, tile=tile, tile_overlap=tile_overlap, self_ensemble=self_ensemble)
    check_finite_output(y, name or f"the {image.shape[0]}x{image.shape[1]} image")
    return tensor_to_image(y.float().cpu(), value_range=vr)


# ---------------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------------


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
    device = _model_device(model)
    from tqdm.auto import tqdm

    indices = range(len(samples))
    bar = tqdm(indices, desc=f"eval {result.dataset}", unit="img", disable=None if progress else True, leave=False)
    with bar:
        for i in bar:
            sample = samples[i]
            x = image_to_tensor(sample.lr, value_range=vr)[None].contiguous().to(device)
            t0 = time.perf_counter()
            y = upscale_tensor(model, x, tile=tile, tile_overlap=tile_overlap, self_ensemble=self_ensemble)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            expected = (x.shape[-2] * s, x.shape[-1] * s)
            if tuple(y.shape[-2:]) != expected or y.shape[1] != 3:
                raise ValueError(f"{sample.name}: the model turned a {x.shape[-2]}x{x.shape[-1]} LR image into "
                                 f"{tuple(y.shape)}, expected (1, 3, {expected[0]}, {expected[1]}) at x{s}")
            check_finite_output(y, f"{result.dataset}/{sample.name}")
            sr = tensor_to_image(y.float().cpu(), value_range=vr)
            kw = dict(scale=s, y_channel=y_channel, y_rounding=rounding, crop_border=border)
            p = psnr(sr, sample.hr, **kw)
            q = ssim(sr, sample.hr, **kw) if compute_ssim else None
            result.images.append(ImageResult(sample.name, p, q, (int(x.shape[-2]), int(x.shape[-1])), seconds,
                                             bool(sample.lr_generated)))
            bar.set_postfix(psnr=f"{result.mean_psnr:.2f}")
    return result

