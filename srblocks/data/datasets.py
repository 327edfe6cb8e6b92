"""SR datasets: paired benchmark folders, HR-only folders with on-the-fly LR, random training patches, and an
embedded default image set that needs no download.

Folder layouts recognised by :func:`discover_pairs` (``s`` = scale):

* **EDSR benchmark**: ``<root>/HR/<name>.<ext>`` with ``<root>/LR_bicubic/X{s}/<name>x{s}.<ext>``.
* **BasicSR**: ``<root>/GTmod12/<name>.<ext>`` with ``<root>/LRbicx{s}/<name>.<ext>``.
* **HR only**: ``<root>/HR/`` or ``<root>/GTmod12/`` without the LR folder for ``s``, or images directly in
  ``<root>``. The LR is generated with the MATLAB-bicubic uint8 degradation (:func:`srblocks.imresize.bicubic_degrade`),
  which reproduces the EDSR benchmark LR files bit-exactly.

Pointing at ``<set>/HR`` or ``<set>/GTmod12`` itself resolves to the set folder, so the LR files next to it are used.
HR images are stored uncropped; every sample's HR is cropped to ``LR size x scale`` (top-left). An LR/HR pair whose
sizes are inconsistent (HR smaller than ``LR x s`` or more than ``s - 1`` pixels larger) is rejected.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..imresize import bicubic_degrade
from .io import image_to_tensor, is_image_file, read_image, read_image_size

__all__ = [
    "ImagePair",
    "SRSample",
    "NamedImage",
    "discover_pairs",
    "detect_layout",
    "PairedImageDataset",
    "TrainPatchDataset",
    "embedded_default",
    "embedded_default_options",
    "lr_crop_from_hr",
]

ImageSource = Union[Path, np.ndarray]


class NamedImage(NamedTuple):
    """An in-memory image with a name (uint8 (H, W, 3))."""

    name: str
    image: np.ndarray


@dataclass(frozen=True, eq=False)
class ImagePair:
    """One HR image and its LR counterpart (a file or an in-memory array), or ``lr=None`` to generate the LR.

    Attributes:
        name: image name (the HR file stem).
        hr: HR file path or uint8 (H, W, 3) array.
        lr: LR file path, uint8 array, or None (LR = MATLAB-bicubic degradation of the mod-cropped HR).
    """

    name: str
    hr: ImageSource
    lr: ImageSource | None = None

    @property
    def lr_generated(self) -> bool:
        """True when the LR is computed from the HR rather than read."""
        return self.lr is None

    def load_hr(self) -> np.ndarray:
        """The uncropped HR image, uint8 (H, W, 3)."""
        return _load(self.hr)

    def load_lr(self, scale: int, hr: np.ndarray | None = None) -> np.ndarray:
        """The LR image, uint8 (h, w, 3): read, or generated from ``hr`` (loaded if not given)."""
        if self.lr is not None:
            return _load(self.lr)
        return bicubic_degrade(self.load_hr() if hr is None else hr, scale)

    def hr_size(self) -> tuple[int, int]:
        """(H, W) of the HR image without decoding pixels when it is a file."""
        if isinstance(self.hr, np.ndarray):
            return int(self.hr.shape[0]), int(self.hr.shape[1])
        return read_image_size(self.hr)

    def lr_size(self, scale: int) -> tuple[int, int]:
        """(h, w) of the LR image (read from the header, or HR size // scale when generated)."""
        if self.lr is None:
            h, w = self.hr_size()
            return h // scale, w // scale
        if isinstance(self.lr, np.ndarray):
            return int(self.lr.shape[0]), int(self.lr.shape[1])
        return read_image_size(self.lr)


@dataclass(frozen=True, eq=False)
class SRSample:
    """An evaluation sample: LR and HR (cropped to LR size x scale), both uint8 (H, W, 3)."""

    name: str
    lr: np.ndarray
    hr: np.ndarray
    lr_generated: bool = field(default=False)


def _load(src: ImageSource) -> np.ndarray:
    if isinstance(src, np.ndarray):
        return _as_rgb_uint8(src, "in-memory image")
    return read_image(src)


def _as_rgb_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(f"{what}: expected an (H, W, 3) or (H, W) image, got shape {arr.shape}")
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr


def _images_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def _find_with_stem(folder: Path, stem: str) -> Path | None:
    for ext in (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif"):
        for cand in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


def _resolve_root(root: Path) -> Path:
    """``<set>/HR`` or ``<set>/GTmod12`` given directly -> ``<set>`` when the set has an LR folder beside it."""
    parent = root.parent
    if root.name == "HR" and (parent / "LR_bicubic").is_dir():
        return parent
    if root.name == "GTmod12" and any(p.name.startswith("LRbicx") for p in parent.iterdir() if p.is_dir()):
        return parent
    return root


def detect_layout(root: str | os.PathLike[str], scale: int) -> str:
    """Which layout :func:`discover_pairs` uses for ``root`` at ``scale``.

    Returns one of ``"edsr"``, ``"basicsr"`` (paired files), ``"edsr-hr-only"``, ``"basicsr-hr-only"``,
    ``"hr-only"`` (LR generated).

    Raises:
        FileNotFoundError: ``root`` does not exist or holds no images in any known layout.
    """
    r = Path(root)
    if not r.is_dir():
        raise FileNotFoundError(f"dataset folder {str(r)!r} does not exist")
    r = _resolve_root(r)
    if (r / "HR").is_dir():
        return "edsr" if _edsr_lr_dir(r, scale) is not None else "edsr-hr-only"
    if (r / "GTmod12").is_dir():
        return "basicsr" if (r / f"LRbicx{scale}").is_dir() else "basicsr-hr-only"
    if _images_in(r):
        return "hr-only"
    raise FileNotFoundError(
        f"no images found in {str(r)!r}: expected <root>/HR + <root>/LR_bicubic/X{scale} (EDSR), "
        f"<root>/GTmod12 + <root>/LRbicx{scale} (BasicSR), or image files directly in the folder (HR only)"
    )


def _edsr_lr_dir(root: Path, scale: int) -> Path | None:
    for name in (f"X{scale}", f"x{scale}"):
        d = root / "LR_bicubic" / name
        if d.is_dir():
            return d
    return None


def discover_pairs(root: str | os.PathLike[str], scale: int, *, require_lr: bool = False) -> list[ImagePair]:
    """Find the (HR, LR) pairs of a dataset folder (layouts in the module docstring), sorted by name.

    Args:
        root: the set folder (e.g. ``.../Set5``), its ``HR``/``GTmod12`` subfolder, or a folder of HR images.
        scale: the SR scale factor.
        require_lr: refuse HR-only folders instead of generating the LR.

    Raises:
        FileNotFoundError: no images, or an LR folder exists but some HR image has no LR file.
        ValueError: bad scale.
    """
    if not (isinstance(scale, (int, np.integer)) and scale >= 1):
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    layout = detect_layout(root, scale)
    r = _resolve_root(Path(root))
    if require_lr and layout.endswith("hr-only"):
        raise FileNotFoundError(f"{str(r)!r} has no LR images for scale {scale} (layout {layout}) and require_lr=True")
    if layout.startswith("edsr"):
        hr_dir, lr_dir = r / "HR", _edsr_lr_dir(r, scale)
        lr_name = lambda stem: f"{stem}x{scale}"  # noqa: E731
    elif layout.startswith("basicsr"):
        hr_dir, lr_dir = r / "GTmod12", (r / f"LRbicx{scale}") if layout == "basicsr" else None
        lr_name = lambda stem: stem  # noqa: E731
    else:
        hr_dir, lr_dir, lr_name = r, None, (lambda stem: stem)
    hr_files = _images_in(hr_dir)
    if not hr_files:
        raise FileNotFoundError(f"no HR images in {str(hr_dir)!r}")
    pairs: list[ImagePair] = []
    missing: list[str] = []
    for hr in hr_files:
        lr: Path | None = None
        if lr_dir is not None:
            lr = _find_with_stem(lr_dir, lr_name(hr.stem))
            if lr is None:
                missing.append(lr_name(hr.stem))
        pairs.append(ImagePair(hr.stem, hr, lr))
    if missing:
        raise FileNotFoundError(f"{len(missing)} LR file(s) missing in {str(lr_dir)!r}: {', '.join(missing[:5])}"
                                + (" ..." if len(missing) > 5 else ""))
    return pairs


def _check_sizes(name: str, lr_hw: tuple[int, int], hr_hw: tuple[int, int], scale: int) -> None:
    for lr_len, hr_len in zip(lr_hw, hr_hw):
        if not (lr_len * scale <= hr_len < (lr_len + 1) * scale):
            raise ValueError(
                f"{name}: LR {lr_hw[0]}x{lr_hw[1]} does not match HR {hr_hw[0]}x{hr_hw[1]} at scale {scale} "
                f"(expected HR between LR x {scale} and LR x {scale} + {scale - 1}); wrong scale or mismatched files?"
            )


def _to_pairs(source: object, scale: int) -> list[ImagePair]:
    """Normalise a dataset source: folder path(s), ImagePairs, NamedImages / (name, array) tuples or arrays."""
    if isinstance(source, (str, os.PathLike)):
        return discover_pairs(source, scale)
    if isinstance(source, np.ndarray):
        return [ImagePair("image", source)]
    if not isinstance(source, Sequence) or isinstance(source, bytes):
        raise TypeError(f"unsupported dataset source {type(source).__name__}: give a folder, a list of folders, "
                        "ImagePairs, (name, image) tuples or uint8 arrays")
    pairs: list[ImagePair] = []
    for i, item in enumerate(source):
        if isinstance(item, ImagePair):
            pairs.append(item)
        elif isinstance(item, (str, os.PathLike)):
            pairs.extend(discover_pairs(item, scale))
        elif isinstance(item, np.ndarray):
            pairs.append(ImagePair(f"image{i:04d}", item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], np.ndarray):
            pairs.append(ImagePair(str(item[0]), item[1]))
        else:
            raise TypeError(f"unsupported dataset item {i} of type {type(item).__name__}")
    if not pairs:
        raise ValueError("the dataset source holds no images")
    return pairs


class PairedImageDataset(Dataset):
    """Evaluation pairs: ``dataset[i]`` is an :class:`SRSample` (uint8 LR and HR cropped to LR size x scale).

    Args:
        source: a dataset folder (any layout of :func:`discover_pairs`), a list of folders, a list of
            :class:`ImagePair`, or in-memory HR images (``(name, array)`` tuples such as :func:`embedded_default`,
            or arrays) whose LR is generated.
        scale: SR scale factor.
    """

    def __init__(self, source: object, scale: int) -> None:
        if not (isinstance(scale, (int, np.integer)) and scale >= 1):
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        self.scale = int(scale)
        self.pairs = _to_pairs(source, self.scale)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> SRSample:
        pair = self.pairs[index]
        hr = pair.load_hr()
        lr = pair.load_lr(self.scale, hr)
        _check_sizes(pair.name, lr.shape[:2], hr.shape[:2], self.scale)
        s = self.scale
        return SRSample(pair.name, lr, np.ascontiguousarray(hr[: lr.shape[0] * s, : lr.shape[1] * s]), pair.lr_generated)

    def __iter__(self) -> Iterator[SRSample]:
        for i in range(len(self)):
            yield self[i]

    @property
    def names(self) -> list[str]:
        """Image names in order."""
        return [p.name for p in self.pairs]


#: LR pixels of context kept around a training crop when its LR is generated from the HR (the cubic kernel of a
#: 1/s downscale reaches 2 LR pixels from an output pixel centre), so that the crop equals the same region of the
#: full-image LR exactly.
_LR_MARGIN = 2


def lr_crop_from_hr(hr: np.ndarray, scale: int, top: int, left: int, height: int, width: int) -> np.ndarray:
    """LR crop ``[top:top+height, left:left+width]`` of ``bicubic_degrade(hr, scale)`` without degrading the
    whole image: the HR region plus a 2-LR-pixel margin is degraded, then the margin removed. Bit-identical to
    cropping the full-image LR (the MATLAB kernel is local and the margin covers its support).
    """
    lr_h, lr_w = hr.shape[0] // scale, hr.shape[1] // scale
    if not (0 <= top and top + height <= lr_h and 0 <= left and left + width <= lr_w):
        raise ValueError(f"LR crop {top},{left},{height}x{width} outside the LR image {lr_h}x{lr_w}")
    t0, l0 = max(0, top - _LR_MARGIN), max(0, left - _LR_MARGIN)
    t1, l1 = min(lr_h, top + height + _LR_MARGIN), min(lr_w, left + width + _LR_MARGIN)
    region = hr[t0 * scale : t1 * scale, l0 * scale : l1 * scale]
    lr_region = bicubic_degrade(region, scale)
    return np.ascontiguousarray(lr_region[top - t0 : top - t0 + height, left - l0 : left - l0 + width])


class TrainPatchDataset(Dataset):
    """Random aligned LR/HR training patches with flips and rotations, deterministic given a seed.

    ``dataset[i]`` returns ``(lr, hr)`` float32 tensors of shape (3, p, p) and (3, p*s, p*s) with values in
    [0, ``value_range``]. Sample ``i`` uses image ``i % n_images`` and a crop position and augmentation drawn from
    ``numpy.random.default_rng((seed, epoch, i))`` -- the same for any number of DataLoader workers or order of
    access. Call :meth:`set_epoch` to draw new crops for a new pass.

    Augmentation (BasicSR ``augment``): horizontal flip, vertical flip and transpose (rot90), each with
    probability 0.5, applied identically to LR and HR: all 8 dihedral transforms equally likely.

    LR patches come from the LR files when the source has them; otherwise they are generated from the HR crop
    with :func:`lr_crop_from_hr` (identical to degrading the whole image). Images smaller than one patch are
    skipped with a warning.

    Args:
        source: anything :class:`PairedImageDataset` accepts (folders, pairs, in-memory images).
        scale: SR scale factor.
        lr_patch_size: LR patch side p in pixels (the HR patch is p * scale).
        length: samples per epoch (default: the number of images); typically ``iterations * batch_size``.
        augment: apply the random flips/transposes.
        seed: base seed.
        value_range: maximum of the returned tensors (1.0, or 255.0 for EDSR-style models).
        cache: keep decoded images in memory (per process) after first use.
    """

    def __init__(
        self,
        source: object,
        scale: int,
        lr_patch_size: int,
        *,
        length: int | None = None,
        augment: bool = True,
        seed: int = 0,
        value_range: float = 1.0,
        cache: bool = True,
    ) -> None:
        if not (isinstance(scale, (int, np.integer)) and scale >= 1):
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if not (isinstance(lr_patch_size, (int, np.integer)) and lr_patch_size >= 1):
            raise ValueError(f"lr_patch_size must be a positive integer, got {lr_patch_size!r}")
        if length is not None and length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if not value_range > 0:
            raise ValueError(f"value_range must be > 0, got {value_range}")
        self.scale = int(scale)
        self.lr_patch_size = int(lr_patch_size)
        self.augment = augment
        self.seed = int(seed)
        self.value_range = float(value_range)
        self.cache = cache
        self.epoch = 0
        pairs = _to_pairs(source, self.scale)
        kept, skipped = [], []
        for pair in pairs:
            h, w = pair.lr_size(self.scale)
            (kept if min(h, w) >= self.lr_patch_size else skipped).append(pair)
        if skipped:
            warnings.warn(f"{len(skipped)} image(s) smaller than one {self.lr_patch_size}px LR patch at x{self.scale} "
                          f"skipped: {', '.join(p.name for p in skipped[:5])}", stacklevel=2)
        if not kept:
            raise ValueError(f"no image is large enough for an LR patch of {self.lr_patch_size}px at x{self.scale}")
        self.pairs = kept
        self.length = len(kept) if length is None else int(length)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of pass ``epoch`` (crops differ between epochs, reproducibly)."""
        self.epoch = int(epoch)

    def _images(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(HR cropped to LR x s, LR or None when generated) of image k."""
        if k in self._cache:
            return self._cache[k]
        pair = self.pairs[k]
        hr = pair.load_hr()
        s = self.scale
        if pair.lr is None:
            lr = None
            hr = hr[: (hr.shape[0] // s) * s, : (hr.shape[1] // s) * s]
        else:
            lr = pair.load_lr(s)
            _check_sizes(pair.name, lr.shape[:2], hr.shape[:2], s)
            hr = hr[: lr.shape[0] * s, : lr.shape[1] * s]
        if self.cache:
            self._cache[k] = (hr, lr)
        return hr, lr

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        k = index % len(self.pairs)
        hr, lr = self._images(k)
        s, p = self.scale, self.lr_patch_size
        lr_h, lr_w = hr.shape[0] // s, hr.shape[1] // s
        rng = np.random.default_rng((self.seed, self.epoch, index))
        top = int(rng.integers(0, lr_h - p + 1))
        left = int(rng.integers(0, lr_w - p + 1))
        hr_patch = hr[top * s : (top + p) * s, left * s : (left + p) * s]
        lr_patch = lr[top : top + p, left : left + p] if lr is not None else lr_crop_from_hr(hr, s, top, left, p, p)
        if self.augment:
            hflip, vflip, transpose = (bool(b) for b in rng.random(3) < 0.5)
            lr_patch, hr_patch = (_dihedral(a, hflip, vflip, transpose) for a in (lr_patch, hr_patch))
        return (image_to_tensor(np.ascontiguousarray(lr_patch), value_range=self.value_range),
                image_to_tensor(np.ascontiguousarray(hr_patch), value_range=self.value_range))


def _dihedral(a: np.ndarray, hflip: bool, vflip: bool, transpose: bool) -> np.ndarray:
    if hflip:
        a = a[:, ::-1]
    if vflip:
        a = a[::-1]
    if transpose:
        a = a.transpose(1, 0, 2)
    return a


# ---------------------------------------------------------------------------------------------------------------
# embedded default images
# ---------------------------------------------------------------------------------------------------------------

#: natural colour photographs bundled inside scikit-image wheels (skimage/data/, read directly, no download)
_SKIMAGE_FILES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def _skimage_dir() -> Path | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("skimage")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "data"
    return d if all((d / f).is_file() for f in _SKIMAGE_FILES) else None


def _matplotlib_file() -> Path | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("matplotlib")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    f = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    return f if f.is_file() else None


def embedded_default_options() -> dict[str, list[Path]]:
    """The embedded image sources available in this environment: ``{"skimage": [...], "matplotlib": [...]}``."""
    out: dict[str, list[Path]] = {}
    d = _skimage_dir()
    if d is not None:
        out["skimage"] = [d / f for f in _SKIMAGE_FILES]
    f = _matplotlib_file()
    if f is not None:
        out["matplotlib"] = [f]
    return out


def embedded_default(source: str = "auto") -> list[NamedImage]:
    """HR images bundled inside an installed package, for demos and smoke tests without any download.

    Sources (files shipped inside the packages' wheels, read directly from disk):

    * ``"skimage"`` (scikit-image, if installed; sizes H x W): astronaut 512x512, chelsea 300x451, coffee 400x600
      (PNG) and rocket 427x640 (JPEG).
    * ``"matplotlib"``: ``mpl-data/sample_data/grace_hopper.jpg``, a 600x512 (H x W) RGB JPEG photograph (61 KB).
      JPEG artefacts make it a demo image, not a benchmark.
    * ``"auto"`` (default): scikit-image when installed, else matplotlib.

    Returns:
        ``[NamedImage(name, uint8 (H, W, 3)), ...]``; usable as the ``source`` of the datasets above.

    Raises:
        RuntimeError: the requested source is not installed.
    """
    options = embedded_default_options()
    if source == "auto":
        source = "skimage" if "skimage" in options else "matplotlib"
    if source not in ("skimage", "matplotlib"):
        raise ValueError(f"source must be 'auto', 'skimage' or 'matplotlib', got {source!r}")
    if source not in options:
        raise RuntimeError(
            f"no embedded images: {source} is not installed (matplotlib ships grace_hopper.jpg; scikit-image "
            "ships astronaut/chelsea/coffee/rocket)"
        )
    return [NamedImage(p.stem, read_image(p)) for p in options[source]]
