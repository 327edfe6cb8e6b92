"""The data of a protocol: a folder of HR training images split into train and validation by a salted path hash,
and the test sets that are reported (never selected on).

The split depends only on each image's path relative to the data folder (POSIX form) and the protocol's
``split_salt``: the ``val_count`` images with the smallest ``sha256(salt + "/" + relative_path)`` are held out.
It is the same on every machine, whatever the order the file system lists files in, and adding images to the
folder moves an old image between the splits only if a new one displaces it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..data import is_image_file
from ..data.datasets import ImagePair, discover_pairs
from .protocol import Protocol

__all__ = ["RunData", "DataNotFound", "default_data_dir", "default_test_dirs", "split_images", "resolve_data"]

_MAX_IMAGES = 200_000


class DataNotFound(FileNotFoundError):
    """The protocol's training data or a test set is not where it was looked for (the message says where)."""


@dataclass(frozen=True)
class RunData:
    """Resolved data of one protocol run.

    Attributes:
        root: the training folder.
        train: HR images used for training (LR generated with MATLAB bicubic).
        val: held-out HR images for validation PSNR.
        tests: name -> benchmark set folder (EDSR layout), reported only.
    """

    root: Path
    train: list[ImagePair]
    val: list[ImagePair]
    tests: dict[str, Path]

    def fingerprint(self) -> str:
        """First 16 hex digits of a hash of the relative paths and sizes of all train and val images."""
        h = hashlib.sha256()
        for tag, pairs in (("train", self.train), ("val", self.val)):
            for p in pairs:
                h.update(f"{tag}:{p.name}:{Path(p.hr).stat().st_size}\n".encode())
        return h.hexdigest()[:16]


def _shared_root() -> Path | None:
    env = os.environ.get("SRBLOCKS_SHARED")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / ".." / "shared"  # a checkout beside shared/ (development)
    return here.resolve() if here.is_dir() else None


def default_data_dir() -> Path | None:
    """``$SRBLOCKS_SHARED/data/train`` (or ``../shared/data/train`` beside a checkout), when it exists."""
    root = _shared_root()
    path = root / "data" / "train" if root is not None else None
    return path if path is not None and path.is_dir() else None


def default_test_dirs(names: list[str], data_root: Path | None) -> dict[str, Path]:
    """Folders of the named test sets: beside the training folder (``train/../Set5``), else under
    ``$SRBLOCKS_SHARED/data``. Sets that are not found are left out."""
    roots = [r for r in (data_root.parent if data_root else None,
                         (_shared_root() / "data") if _shared_root() else None) if r is not None]
    out: dict[str, Path] = {}
    for name in names:
        for r in roots:
            if (r / name).is_dir():
                out[name] = r / name
                break
    return out


def _relative_images(root: Path) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            if is_image_file(p):
                found.append(p.relative_to(root).as_posix())
                if len(found) > _MAX_IMAGES:
                    raise ValueError(f"{str(root)!r} holds more than {_MAX_IMAGES:,} images; point --data at a "
                                     "smaller folder")
    return found


def split_images(root: str | os.PathLike[str], val_count: int, salt: str,
                 scale: int | None = None) -> tuple[list[ImagePair], list[ImagePair]]:
    """(train, val) images under ``root``, split by the salted path hash.

    A benchmark-layout folder (``HR/`` + ``LR_bicubic/X{scale}``, or ``GTmod12/`` + ``LRbicx{scale}``) is read as
    its pairs (the LR files are used; pass ``scale``); any other folder is searched recursively and every image
    file is an HR image (LR made with MATLAB bicubic).

    Raises:
        DataNotFound: ``root`` is not a folder or holds no images.
        ValueError: fewer than ``val_count + 1`` images.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataNotFound(f"training data folder {str(base)!r} does not exist")
    if scale is not None and ((base / "HR").is_dir() or (base / "GTmod12").is_dir()):
        by_name = {p.name: p for p in discover_pairs(base, scale)}
    else:
        names = _relative_images(base)
        by_name = {n: ImagePair(n.rsplit(".", 1)[0].replace("/", "_"), base / n) for n in names}
    if not by_name:
        raise DataNotFound(f"no images under {str(base)!r}")
    if len(by_name) <= val_count:
        raise ValueError(f"{str(base)!r} holds {len(by_name)} image(s); the protocol holds out {val_count} for "
                         "validation and needs at least one more to train on")
    ranked = sorted(by_name, key=lambda n: hashlib.sha256(f"{salt}/{n}".encode()).hexdigest())
    held = set(ranked[:val_count])
    return [p for n, p in by_name.items() if n not in held], [p for n, p in by_name.items() if n in held]


def resolve_data(protocol: Protocol, data: str | os.PathLike[str] | None = None,
                 tests: dict[str, str | os.PathLike[str]] | None = None) -> RunData:
    """The training/validation split and test sets of ``protocol``.

    Args:
        data: the training folder (default :func:`default_data_dir`).
        tests: name -> folder of the sets to report (default: the protocol's ``test_sets`` found by
            :func:`default_test_dirs`; an explicit empty mapping reports none).

    Raises:
        DataNotFound: no data folder given and no default found, or a given test folder does not exist.
    """
    root = Path(data) if data is not None else default_data_dir()
    if root is None:
        raise DataNotFound(f"protocol {protocol.name!r} needs training images ({protocol.data.description or 'a folder'}): "
                           "pass --data DIR (any folder of HR images, searched recursively) or set SRBLOCKS_SHARED")
    train, val = split_images(root, protocol.data.val_count, protocol.data.split_salt, protocol.scale)
    if tests is None:
        test_dirs = default_test_dirs(protocol.data.test_sets, root)
    else:
        test_dirs = {}
        for name, folder in tests.items():
            if not Path(folder).is_dir():
                raise DataNotFound(f"test set {name!r}: folder {str(folder)!r} does not exist")
            test_dirs[name] = Path(folder)
    return RunData(root, train, val, test_dirs)
