"""Image I/O and SR datasets: benchmark pairs, HR-only folders with MATLAB-bicubic LR, training patches, and an
embedded default image set (see :mod:`srblocks.data.io` and :mod:`srblocks.data.datasets`)."""

from .datasets import (
    ImagePair,
    NamedImage,
    PairedImageDataset,
    SRSample,
    TrainPatchDataset,
    detect_layout,
    discover_pairs,
    embedded_default,
    embedded_default_options,
    lr_crop_from_hr,
)
from .io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    image_to_tensor,
    is_image_file,
    read_image,
    read_image_size,
    tensor_to_image,
    write_image,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImagePair",
    "ImageReadError",
    "NamedImage",
    "PairedImageDataset",
    "SRSample",
    "TrainPatchDataset",
    "detect_layout",
    "discover_pairs",
    "embedded_default",
    "embedded_default_options",
    "image_to_tensor",
    "is_image_file",
    "lr_crop_from_hr",
    "read_image",
    "read_image_size",
    "tensor_to_image",
    "write_image",
]
