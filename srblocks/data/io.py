"""Image reading and writing with clear errors and documented conversions (Pillow backend).

:func:`read_image` always returns a uint8 (H, W, 3) RGB numpy array. Conversions, by Pillow mode:

=====================  ===================================================================================
``RGB``                unchanged.
``L`` (grayscale)      replicated to 3 identical channels (what OpenCV ``IMREAD_COLOR`` and the SR evaluation
                       scripts do; Set14 ``bridge`` is such a file).
``1`` (bilevel)        0 -> 0, 1 -> 255, then as ``L``.
``P`` (palette)        expanded through the palette (``RGBA`` when the palette has transparency).
``RGBA``, ``LA``,      the alpha channel is **dropped** (colour values are kept as stored, not composited on
``PA``, ``RGBa``       a background); pass ``alpha="error"`` to refuse such images instead.
16-bit (``I;16*``,     reduced to 8 bit by keeping the high byte (``v >> 8``). Pillow itself decodes 16-bit
``I`` within 0..65535) *colour* PNGs to 8-bit RGB the same way, so 16-bit gray and colour images agree.
``CMYK``, ``YCbCr``,   converted to RGB by Pillow.
``LAB``, ``HSV``
``F``, ``I`` outside   refused (:class:`ImageReadError`): no defined value range.
0..65535
=====================  ===================================================================================

Multi-frame files (GIF, TIFF) yield their first frame. EXIF orientation is ignored by default (the stored pixel
grid is what SR benchmarks compare); pass ``exif_transpose=True`` for camera photos.
Missing, empty, corrupt and truncated files raise :class:`ImageReadError` naming the file and the reason
(truncated data is always an error, whatever Pillow's global ``LOAD_TRUNCATED_IMAGES`` setting).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageReadError",
    "IMAGE_EXTENSIONS",
    "read_image",
    "read_image_size",
    "write_image",
    "image_to_tensor",
    "tensor_to_image",
    "is_image_file",
]

#: file extensions treated as images when scanning folders (lower case)
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif")

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_PIL_CONVERTIBLE = {"CMYK", "YCbCr", "LAB", "HSV"}


class ImageReadError(ValueError):
    """An image file could not be read or converted to 8-bit RGB.

    Attributes:
        path: the file that failed.
        reason: a human-readable explanation.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {str(self.path)!r}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:  # picklable across DataLoader workers
        return (type(self), (self.path, self.reason))


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True for a regular file with one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()


def _open_checked(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image (corrupt file or unsupported format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"corrupt image header ({exc})") from None
    return im


def read_image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) of an image file from its header (no pixel decoding)."""
    p = Path(path)
    with _open_checked(p) as im:
        return im.size[1], im.size[0]


def read_image(
    path: str | os.PathLike[str],
    *,
    alpha: Literal["drop", "error"] = "drop",
    exif_transpose: bool = False,
) -> np.ndarray:
    """Read an image file as a uint8 (H, W, 3) RGB array, applying the conversions in the module docstring.

    Args:
        path: the image file.
        alpha: ``"drop"`` (default) discards an alpha channel; ``"error"`` raises :class:`ImageReadError`.
        exif_transpose: rotate/flip according to the EXIF orientation tag.

    Raises:
        ImageReadError: missing, empty, corrupt, truncated or unsupported image.
    """
    p = Path(path)
    with _open_checked(p) as im:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            msg = str(exc)
            kind = "truncated image data" if "truncated" in msg.lower() else "corrupt image data"
            raise ImageReadError(p, f"{kind} ({msg})") from None
        except Image.DecompressionBombError as exc:
            raise ImageReadError(p, f"image too large ({exc})") from None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
        if exif_transpose:
            im = ImageOps.exif_transpose(im)
        return _to_rgb_uint8(im, p, alpha)


def _to_rgb_uint8(im: Image.Image, path: Path, alpha: Literal["drop", "error"]) -> np.ndarray:
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in _ALPHA_MODES:
        if alpha == "error":
            raise ImageReadError(path, f"image has an alpha channel (mode {mode}); alpha='error' refuses it")
        if alpha != "drop":
            raise ValueError(f"alpha must be 'drop' or 'error', got {alpha!r}")
        if mode in ("RGBa", "La"):  # premultiplied: un-premultiply first
            im = im.convert("RGBA" if mode == "RGBa" else "LA")
        im = im.convert("RGB") if im.mode == "RGBA" else im.getchannel(0)
        mode = im.mode
    if mode == "1":
        im = im.convert("L")
        mode = "L"
    if mode in _PIL_CONVERTIBLE:
        im = im.convert("RGB")
        mode = "RGB"
    if mode in ("RGB", "L"):
        arr = np.array(im, dtype=np.uint8)  # a writable copy
    elif mode.startswith("I;16") or mode == "I":
        raw = np.asarray(im)
        if raw.size and (raw.min() < 0 or raw.max() > 65535):
            raise ImageReadError(path, f"integer image (mode {mode}) has values outside 0..65535; convert it to 8 bit")
        arr = (raw.astype(np.uint32) >> 8).astype(np.uint8)
    elif mode == "F":
        raise ImageReadError(path, "32-bit float images are not supported (no defined value range); convert to 8 bit")
    else:
        raise ImageReadError(path, f"unsupported image mode {mode!r}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageReadError(path, f"unexpected decoded shape {arr.shape} (mode {mode})")
    return np.ascontiguousarray(arr)


def write_image(path: str | os.PathLike[str], image: np.ndarray | torch.Tensor, *, value_range: float = 1.0) -> Path:
    """Write an image (uint8 (H, W, 3)/(H, W) array, or a float tensor/array in [0, value_range]) with Pillow.

    The format follows the extension (PNG recommended: lossless). Parent folders are created. Returns the path.
    """
    from ..metrics import to_uint8_image

    p = Path(path)
    arr = to_uint8_image(image, value_range=value_range)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(p)
    return p


def image_to_tensor(image: np.ndarray, *, value_range: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (H, W, 3) array -> (3, H, W) float tensor with values in [0, value_range].

    ``value_range=1`` computes ``x / 255`` (a true division, bit-identical to the official pipelines' ``img / 255.``;
    multiplying by ``1/255`` differs in the last bit for half of the values); ``value_range=255`` keeps the integer
    values (EDSR-style ``rgb_range=255`` models).
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got dtype {image.dtype} shape {image.shape}")
    t = torch.from_numpy(np.array(image, copy=True, order="C")).permute(2, 0, 1).to(dtype)
    if value_range == 255.0:
        return t
    if value_range == 1.0:
        return t / 255.0
    return t * (value_range / 255.0)


def tensor_to_image(tensor: torch.Tensor, *, value_range: float = 1.0) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) float tensor in [0, value_range] -> uint8 (H, W, 3): clamp, scale, round."""
    from ..metrics import to_uint8_image

    return to_uint8_image(tensor, value_range=value_range)
