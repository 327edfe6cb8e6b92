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
:func:`write_image` and :func:`write_png_rows` (PNG streamed in row bands, for images larger than memory) write
atomically: an interrupted write never leaves a truncated file.

Missing, empty, corrupt and truncated files raise :class:`ImageReadError` naming the file and the reason
(truncated data is always an error, whatever Pillow's global ``LOAD_TRUNCATED_IMAGES`` setting).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Literal

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageReadError",
    "IMAGE_EXTENSIONS",
    "read_image",
    "read_image_size",
    "write_image",
    "write_png_rows",
    "PngRowWriter",
    "image_format",
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


def image_format(path: str | os.PathLike[str]) -> str:
    """Pillow's format name for a file name's extension (``"PNG"``, ``"JPEG"``, ...).

    Raises:
        ValueError: an extension Pillow cannot write, naming the file.
    """
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"cannot write {str(path)!r}: {suffix or 'no extension'} is not an image format Pillow "
                         f"can write (use e.g. .png)")
    return fmt


def write_image(
    path: str | os.PathLike[str],
    image: np.ndarray | torch.Tensor,
    *,
    value_range: float = 1.0,
    **options: Any,
) -> Path:
    """Write an image (uint8 (H, W, 3)/(H, W) array, or a float tensor/array in [0, value_range]) with Pillow.

    The format follows the extension (PNG recommended: lossless); ``options`` go to Pillow's ``save`` (e.g.
    ``quality=95``). Parent folders are created. The file is written atomically
    (:func:`srblocks.fileio.atomic_write`): an interrupted write leaves the previous file or none, never a
    truncated image. Pillow holds a 4-bytes-per-pixel copy while encoding; :func:`write_png_rows` streams large
    PNGs instead. Returns the path.
    """
    from ..fileio import atomic_write
    from ..metrics import to_uint8_image

    p = Path(path)
    fmt = image_format(p)
    arr = to_uint8_image(image, value_range=value_range)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(p) as f:
        Image.fromarray(arr).save(f, format=fmt, **options)
    return p


# -- streamed PNG ---------------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: bytes of raw scanlines filtered and deflated at a time
_PNG_BLOCK_BYTES = 2 << 20
#: compressed bytes per IDAT chunk
_PNG_IDAT_BYTES = 1 << 20


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def _png_filter(rows: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """PNG-filter scanlines (n, L) uint8 of 3-byte pixels given the row above the first (L,): (n, 1 + L) uint8.

    Each row gets the filter type (None, Sub, Up, Average, Paeth) with the smallest sum of absolute values of its
    bytes read as signed, the adaptive heuristic of libpng and Pillow.
    """
    n, length = rows.shape
    x = rows.astype(np.int16)
    b = np.empty_like(x)
    b[0] = prev
    b[1:] = x[:-1]
    a = np.zeros_like(x)
    a[:, 3:] = x[:, :-3]
    c = np.zeros_like(x)
    c[:, 3:] = b[:, :-3]
    cands = np.empty((5, n, length), dtype=np.uint8)
    cands[0] = rows
    cands[1] = (x - a) & 0xFF
    cands[2] = (x - b) & 0xFF
    cands[3] = (x - ((a + b) >> 1)) & 0xFF
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)  # |p - a|, |p - b|, |p - c| for p = a + b - c
    cands[4] = (x - np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))) & 0xFF
    cost = np.abs(cands.view(np.int8), dtype=np.int16).sum(axis=2, dtype=np.int64)  # (5, n)
    choice = cost.argmin(axis=0)
    out = np.empty((n, 1 + length), dtype=np.uint8)
    out[:, 0] = choice
    out[:, 1:] = cands[choice, np.arange(n)]
    return out


class PngRowWriter:
    """Write an 8-bit RGB PNG to an open binary file one band of rows at a time (memory: about one band).

    Usage: ``w = PngRowWriter(f, height, width)``, then :meth:`write` bands of uint8 (rows, width, 3) from top to
    bottom, then :meth:`close` (which checks that exactly ``height`` rows were written). Scanlines are filtered
    with the adaptive heuristic of libpng/Pillow and deflated with zlib (level ``compress_level``; Pillow's
    default is 6). The file decodes to exactly the pixels written (lossless); its bytes differ from Pillow's.
    """

    def __init__(self, f: BinaryIO, height: int, width: int, *, compress_level: int = 6) -> None:
        if not (0 < height < 2**31 and 0 < width < 2**31):
            raise ValueError(f"a PNG is 1 to 2^31-1 pixels high and wide, got {height}x{width}")
        self._f, self.height, self.width = f, int(height), int(width)
        self._rows = 0
        self._prev = np.zeros(self.width * 3, dtype=np.int16)
        self._z = zlib.compressobj(compress_level)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        # IHDR: width, height, bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace
        f.write(_PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)))

    def write(self, band: np.ndarray) -> None:
        """Append uint8 (rows, width, 3) pixel rows below those already written."""
        if not (isinstance(band, np.ndarray) and band.dtype == np.uint8 and band.ndim == 3
                and band.shape[1:] == (self.width, 3)):
            raise ValueError(f"expected uint8 rows of shape (n, {self.width}, 3), got "
                             f"{getattr(band, 'dtype', type(band).__name__)} {getattr(band, 'shape', '')}")
        if self._rows + band.shape[0] > self.height:
            raise ValueError(f"{self._rows + band.shape[0]} rows written to a PNG {self.height} rows high")
        flat = band.reshape(band.shape[0], self.width * 3)
        step = max(1, _PNG_BLOCK_BYTES // flat.shape[1])
        for r in range(0, flat.shape[0], step):
            rows = flat[r : r + step]
            self._emit(self._z.compress(_png_filter(rows, self._prev).tobytes()))
            self._prev = rows[-1].astype(np.int16)
        self._rows += band.shape[0]

    def _emit(self, data: bytes, final: bool = False) -> None:
        if data:
            self._pending.append(data)
            self._pending_bytes += len(data)
        if self._pending_bytes >= _PNG_IDAT_BYTES or (final and self._pending_bytes):
            self._f.write(_png_chunk(b"IDAT", b"".join(self._pending)))
            self._pending, self._pending_bytes = [], 0

    def close(self) -> None:
        """Finish the image (the file object stays open). Raises ValueError if rows are missing."""
        if self._rows != self.height:
            raise ValueError(f"only {self._rows} of the PNG's {self.height} rows were written")
        self._emit(self._z.flush(), final=True)
        self._f.write(_png_chunk(b"IEND", b""))


def write_png_rows(
    path: str | os.PathLike[str],
    height: int,
    width: int,
    bands: Iterable[np.ndarray],
    *,
    compress_level: int = 6,
) -> Path:
    """Write an RGB PNG from uint8 (rows, width, 3) bands (top to bottom) without holding the whole image.

    Atomic (:func:`srblocks.fileio.atomic_write`): if ``bands`` raises or ends early, the target is left as it
    was and no temporary file remains. Parent folders are created. Returns the path.
    """
    from ..fileio import atomic_write

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(p) as f:
        writer = PngRowWriter(f, height, width, compress_level=compress_level)
        for band in bands:
            writer.write(band)
        writer.close()
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
