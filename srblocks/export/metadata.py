"""What an exported artifact records about its model, so that another program can use it without srblocks.

Every value is a string (ONNX ``metadata_props``, safetensors ``__metadata__``, OpenVINO ``rt_info`` and TorchScript
extra files all store strings). Keys:

=================  =======================================================================================
``srblocks_version``  the srblocks version that wrote the file
``spec_name``      the spec's ``name``
``spec_hash``      :meth:`srblocks.build.ModelInfo.content_hash` (16 hex digits; same network -> same hash)
``variables``      JSON of the resolved spec variables
``scale``          upscaling factor s: output (B, 3, s*H, s*W) for input (B, 3, H, W)
``input_range``    the model takes RGB float32 in [0, input_range] and returns the same range (1.0 or 255.0)
``layout``         ``NCHW RGB float32``
``psnr_convention``  how the paper scores it: Y channel (BT.601, 16..235) of the output clipped to the input
                   range, ``scale`` pixels shaved per border, Y rounded to uint8 or kept float
``y_convention``   ``uint8`` or ``float`` (the spec's ``y_convention``)
``form``           ``train`` or ``deploy`` (re-parameterized) form of the weights
``dynamic_hw``     ``true`` if H and W are symbolic, else ``false`` and ``fixed_size`` = ``HxW``
``min_size``       (ONNX, OpenVINO) the smallest ``HxW`` the graph was declared for
=================  =======================================================================================
"""

from __future__ import annotations

import json
from typing import Any

from torch import nn

__all__ = ["artifact_metadata"]


def artifact_metadata(model: nn.Module, *, form: str, fixed_size: tuple[int, int] | None) -> dict[str, str]:
    """The metadata of an export of ``model`` (built by :func:`srblocks.build_model`), as str -> str."""
    from .. import __version__
    from ..build import model_info

    info = model_info(model)
    scale = info.scale
    y = info.spec.y_convention
    meta: dict[str, Any] = {
        "srblocks_version": __version__,
        "spec_name": info.spec.name,
        "spec_hash": info.content_hash(),
        "variables": json.dumps(info.variables, sort_keys=True, default=str),
        "scale": "" if scale is None else str(scale),
        "input_range": repr(float(info.input_range)),
        "layout": "NCHW RGB float32",
        "psnr_convention": (f"Y channel (BT.601: 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on [0,1] RGB) of the "
                            f"output clipped to [0, input_range], {scale} pixel(s) shaved per border, Y "
                            + ("rounded to uint8" if y == "uint8" else "kept as float") + " before the MSE"),
        "y_convention": str(y),
        "form": form,
        "dynamic_hw": "false" if fixed_size else "true",
    }
    if fixed_size:
        meta["fixed_size"] = f"{fixed_size[0]}x{fixed_size[1]}"
    return {k: str(v) for k, v in meta.items()}
