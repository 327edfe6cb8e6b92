"""PSNR and SSIM exactly as the super-resolution papers compute them.

Pipeline (``conventions.md`` section 1), shared by :func:`psnr` and :func:`ssim`:

1. The SR image is clamped to its value range, scaled to [0, 255] and **rounded to uint8** (ties to even, as the
   Python pipelines EDSR/BasicSR/HPINet do; uint8 inputs pass through unchanged).
2. The HR image is cropped top-left to the SR size (= LR size x scale, the "mod-crop"); an HR more than
   ``scale - 1`` pixels larger than the SR in either dimension is rejected as a mismatched pair.
   Grayscale images are expanded to 3 identical channels.
3. Y of YCbCr (ITU-R BT.601, MATLAB ``rgb2ycbcr``): ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` with
   R, G, B in [0, 255]. ``y_rounding="float"`` keeps Y in float64 (RCAN/EDSR MATLAB scripts on double images,
   BasicSR; the default); ``y_rounding="uint8"`` rounds and clips Y to uint8 (MATLAB ``rgb2ycbcr`` on uint8 input,
   HPINet's official ``test.py`` via scikit-image). ``y_channel=False`` measures on RGB instead (NTIRE, MMagic).
4. ``crop_border`` pixels (default: ``scale``) are shaved from every border.
5. PSNR = 10 log10(255^2 / MSE) in dB (``inf`` for identical images). SSIM (Wang et al. 2004): 11x11 Gaussian
   window with sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, averaged over the valid interior of the SSIM map (5 pixels
   inside the shaved image); on RGB the mean of the per-channel SSIMs (BasicSR).

Average per-image dB values over a set (not MSEs) to obtain the published means.

Accepted image inputs (each argument independently):

* numpy ``uint8`` (H, W, 3), (H, W, 1) or (H, W): pixel values 0..255.
* numpy floating (H, W, 3) / (H, W): values in [0, ``value_range``] (clamped, then scaled to 0..255 and rounded).
* torch floating (3, H, W), (1, 3, H, W), (1, H, W) or (1, 1, H, W): values in [0, ``value_range``] -- a model
  output in the model's own range (1.0 for most models, 255.0 for EDSR-style ``rgb_range=255`` models).
* torch ``uint8`` in the same layouts: 0..255.

All arithmetic after the uint8 quantisation is float64 numpy (vectorised; single-threaded, deterministic). The
quantisation and the Y conversion run in row bands of about 8 MB, so they need no full-size float64 copy of the
image (same values as a whole-image conversion, element by element).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

__all__ = ["psnr", "ssim", "rgb_to_y", "to_uint8_image", "prepare_pair", "gaussian_window", "YRounding"]

YRounding = Literal["float", "uint8"]

_Y_COEFFS = np.array([65.481, 128.553, 24.966], dtype=np.float64)
# full BT.601 matrix (rows Y, Cb, Cr) as scikit-image's ``ycbcr_from_rgb``; used for the uint8-Y convention
_YCBCR_FROM_RGB = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=np.float64
)
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_SSIM_WIN = 11
_SSIM_SIGMA = 1.5



#: float64 elements processed at a time by the band-wise conversions (8 MB)
_BAND_ELEMENTS = 1 << 20


def _row_bands(rows: int, row_elements: int) -> list[tuple[int, int]]:
    """(start, stop) row ranges of about :data:`_BAND_ELEMENTS` elements each (at least one row)."""
    step = max(1, _BAND_ELEMENTS // max(1, row_elements))
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


def to_uint8_image(img: np.ndarray | torch.Tensor, *, value_range: float = 1.0) -> np.ndarray:
    """Convert an image (see module docstring for layouts) to a uint8 (H, W, 3) numpy array.

    Float inputs are clamped to [0, value_range], scaled to [0, 255] and rounded (ties to even); uint8 inputs are
    returned as (H, W, 3) unchanged. Single-channel images are expanded to 3 identical channels.

    Raises:
        ValueError: unsupported shape, a batch of more than one image, or a non-positive ``value_range``.
        TypeError: unsupported container or dtype.
    """
    if not value_range > 0:
        raise ValueError(f"value_range must be > 0, got {value_range}")
    if isinstance(img, torch.Tensor):
        t = img.detach()
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError(f"expected a single image, got a batch of shape {tuple(t.shape)}")
            t = t[0]
        if t.dim() == 2:
            t = t.unsqueeze(0)
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"tensor image must be (3, H, W), (1, 3, H, W) or single-channel; got {tuple(img.shape)}")
        arr = t.cpu().permute(1, 2, 0).numpy()
    elif isinstance(img, np.ndarray):
        arr = img
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3):
            raise ValueError(f"numpy image must be (H, W, 3), (H, W, 1) or (H, W); got shape {img.shape}")
    else:
        raise TypeError(f"expected a numpy array or torch tensor, got {type(img).__name__}")

    if arr.dtype == np.uint8:
        out = arr
    elif np.issubdtype(arr.dtype, np.floating):
        # float64 arithmetic row band by row band: the result is the same, element by element, as converting
        # the whole image at once, without a full-size float64 copy (a 16000x12000 SR image would need 4.6 GB)
        vr = float(value_range)
        out = np.empty(arr.shape, dtype=np.uint8)
        for r0, r1 in _row_bands(arr.shape[0], arr.shape[1] * arr.shape[2]):
            scaled = np.clip(arr[r0:r1].astype(np.float64), 0.0, vr)
            scaled *= 255.0 / vr
            out[r0:r1] = np.round(scaled, out=scaled)
    else:
        raise TypeError(f"unsupported image dtype {arr.dtype}: use uint8 (0..255) or float (0..value_range)")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def rgb_to_y(rgb: np.ndarray | torch.Tensor, *, rounding: YRounding = "float") -> np.ndarray:
    """BT.601 luma of an RGB image, MATLAB ``rgb2ycbcr`` convention: ``16 + (65.481 R + 128.553 G + 24.966 B)/255``.

    Args:
        rgb: (H, W, 3) numpy array with values in [0, 255] (uint8 or float), or anything :func:`to_uint8_image`
            accepts as a tensor (converted with ``value_range=1``).
        rounding: ``"float"`` returns float64 Y in [16, 235]; ``"uint8"`` rounds (ties to even, as numpy/HPINet)
            and clips Y to [0, 255] (returned as float64 holding integers). Exact ties (k + 0.5) occur for 194 of
            the 2^24 RGB colours; MATLAB (ties away from zero) may round those one level differently.

    Returns:
        float64 (H, W) array in the 0..255 scale.
    """
    if isinstance(rgb, torch.Tensor):
        rgb = to_uint8_image(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an (H, W, 3) image, got shape {rgb.shape}")
    if rounding == "uint8":
        # HPINet's test.py: quantize(skimage.color.rgb2ycbcr(img)[..., 0]). Mimic scikit-image's arithmetic
        # (x * (1/255), then the 3x3 matrix product) so that the 194 RGB colours whose exact Y is k + 0.5 round
        # the same way; np.round rounds ties to even like HPINet's ``quantize``.
        # Computed in row bands (no full-size (H, W, 3) float64 intermediate); each pixel's arithmetic is the same.
        y = np.empty(rgb.shape[:2], dtype=np.float64)
        for r0, r1 in _row_bands(rgb.shape[0], rgb.shape[1] * 3):
            ycc = np.multiply(rgb[r0:r1], 1.0 / 255.0, dtype=np.float64) @ _YCBCR_FROM_RGB.T
            y[r0:r1] = np.clip(np.round(ycc[..., 0] + 16.0), 0.0, 255.0)
        return y
    if rounding != "float":
        raise ValueError(f"y_rounding must be 'float' or 'uint8', got {rounding!r}")
    y = np.empty(rgb.shape[:2], dtype=np.float64)
    for r0, r1 in _row_bands(rgb.shape[0], rgb.shape[1] * 3):
        y[r0:r1] = (rgb[r0:r1].astype(np.float64) / 255.0) @ _Y_COEFFS + 16.0
    return y


def prepare_pair(
    sr: np.ndarray | torch.Tensor,
    hr: np.ndarray | torch.Tensor,
    *,
    scale: int,
    y_channel: bool = True,
    y_rounding: YRounding = "float",
    crop_border: int | None = None,
    value_range: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-4 of the protocol: the two float64 arrays (H', W') or (H', W', 3), 0..255 scale, that are compared."""
    if not (isinstance(scale, (int, np.integer)) and scale >= 1):
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    border = int(scale) if crop_border is None else int(crop_border)
    if border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    sr_u8 = to_uint8_image(sr, value_range=value_range)
    hr_u8 = to_uint8_image(hr, value_range=value_range)
    (sh, sw), (hh, hw) = sr_u8.shape[:2], hr_u8.shape[:2]
    if not (sh <= hh < sh + scale and sw <= hw < sw + scale):
        raise ValueError(
            f"HR size {hh}x{hw} does not match SR size {sh}x{sw} at scale {scale}: the HR must be the SR size "
            f"(= LR size x scale) plus at most {scale - 1} pixels of mod-crop remainder per dimension"
        )
    hr_u8 = hr_u8[:sh, :sw]
    if 2 * border >= sh or 2 * border >= sw:
        raise ValueError(f"image {sh}x{sw} is too small to shave {border} pixels per border")
    if y_channel:
        a, b = rgb_to_y(sr_u8, rounding=y_rounding), rgb_to_y(hr_u8, rounding=y_rounding)
    else:
        if y_rounding not in ("float", "uint8"):
            raise ValueError(f"y_rounding must be 'float' or 'uint8', got {y_rounding!r}")
        a, b = sr_u8.astype(np.float64), hr_u8.astype(np.float64)
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    return a, b


def psnr(
    sr: np.ndarray | torch.Tensor,
    hr: np.ndarray | torch.Tensor,
    *,
    scale: int,
    y_channel: bool = True,
    y_rounding: YRounding = "float",
    crop_border: int | None = None,
    value_range: float = 1.0,
) -> float:
    """Peak signal-to-noise ratio in dB of an SR image against its (uncropped or cropped) HR image.

    Args:
        sr: the super-resolved image (see the module docstring for accepted layouts and ranges).
        hr: the ground-truth HR image, uncropped (mod-cropped here) or already cropped to the SR size.
        scale: the SR scale factor (sets the mod-crop tolerance and the default border).
        y_channel: measure on BT.601 Y (default) instead of RGB.
        y_rounding: ``"float"`` (default) or ``"uint8"`` Y convention; ignored when ``y_channel`` is False.
        crop_border: pixels shaved per border; default ``scale``.
        value_range: the maximum value of float inputs (1.0 or 255.0); uint8 inputs ignore it.

    Returns:
        PSNR in dB (``math.inf`` when the compared regions are identical).
    """
    a, b = prepare_pair(sr, hr, scale=scale, y_channel=y_channel, y_rounding=y_rounding,
                        crop_border=crop_border, value_range=value_range)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0 ** 2 / mse)


def gaussian_window(size: int = _SSIM_WIN, sigma: float = _SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian (as OpenCV ``getGaussianKernel``); the 2-D SSIM window is its outer product."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D float64 image with the window ``outer(g, g)``."""
    k = g.shape[0]
    h, w = img.shape
    rows = g[0] * img[0 : h - k + 1]
    for i in range(1, k):
        rows = rows + g[i] * img[i : h - k + 1 + i]
    out = g[0] * rows[:, 0 : w - k + 1]
    for j in range(1, k):
        out = out + g[j] * rows[:, j : w - k + 1 + j]
    return out


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over the valid interior of two single-channel float64 images on the 0..255 scale."""
    if a.shape[0] < _SSIM_WIN or a.shape[1] < _SSIM_WIN:
        raise ValueError(f"SSIM needs at least {_SSIM_WIN}x{_SSIM_WIN} pixels after shaving, got {a.shape[0]}x{a.shape[1]}")
    c1 = (_SSIM_K1 * 255.0) ** 2
    c2 = (_SSIM_K2 * 255.0) ** 2
    g = gaussian_window()
    mu1 = _filter_valid(a, g)
    mu2 = _filter_valid(b, g)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = _filter_valid(a * a, g) - mu1_sq
    sigma2_sq = _filter_valid(b * b, g) - mu2_sq
    sigma12 = _filter_valid(a * b, g) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean())


def ssim(
    sr: np.ndarray | torch.Tensor,
    hr: np.ndarray | torch.Tensor,
    *,
    scale: int,
    y_channel: bool = True,
    y_rounding: YRounding = "float",
    crop_border: int | None = None,
    value_range: float = 1.0,
) -> float:
    """Structural similarity (Wang et al. 2004) of an SR image against its HR image; arguments as :func:`psnr`.

    11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, mean over the valid region of the SSIM map;
    equals BasicSR ``calculate_ssim`` and scikit-image ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255)``. On RGB, the mean of the three per-channel values.
    """
    a, b = prepare_pair(sr, hr, scale=scale, y_channel=y_channel, y_rounding=y_rounding,
                        crop_border=crop_border, value_range=value_range)
    if a.ndim == 2:
        return _ssim_2d(a, b)
    return float(np.mean([_ssim_2d(a[:, :, c], b[:, :, c]) for c in range(a.shape[2])]))
