"""srblocks: composable building blocks for efficient image super-resolution.

Front door::

    import srblocks
    model = srblocks.build_model("arch_specs/safmn.yaml", scale=4)      # or build_model("safmn", scale=4)
    srblocks.load_weights(model, "SAFMN_DF2K_x4.pth", official=True)
    print(srblocks.profile(model, lr_size=(180, 320)))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name is imported on first use
    from .build import ModelInfo, build_model, model_info
    from .deploy import deploy
    from .errors import SpecError
    from .evaluate import EvalResult, ImageResult, evaluate, upscale_image, upscale_tensor
    from .profile import Profile, profile
    from .registry import block_names, get_block, list_blocks, register_block
    from .spec import load_spec, shipped_spec_names
    from .train import StopTraining, TrainConfig, TrainingDiverged, TrainResult, ValidationReport, train
    from .weights import WeightsError, load_weights, read_state_dict, save_weights

_EXPORTS = {
    "ModelInfo": ".build",
    "build_model": ".build",
    "model_info": ".build",
    "deploy": ".deploy",
    "SpecError": ".errors",
    "EvalResult": ".evaluate",
    "ImageResult": ".evaluate",
    "evaluate": ".evaluate",
    "upscale_image": ".evaluate",
    "upscale_tensor": ".evaluate",
    "Profile": ".profile",
    "profile": ".profile",
    "block_names": ".registry",
    "get_block": ".registry",
    "list_blocks": ".registry",
    "register_block": ".registry",
    "load_spec": ".spec",
    "shipped_spec_names": ".spec",
    "StopTraining": ".train",
    "TrainConfig": ".train",
    "TrainingDiverged": ".train",
    "TrainResult": ".train",
    "ValidationReport": ".train",
    "train": ".train",
    "WeightsError": ".weights",
    "load_weights": ".weights",
    "read_state_dict": ".weights",
    "save_weights": ".weights",
    "save_pretrained": ".pretrained",
    "from_pretrained": ".pretrained",
}
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)

__all__ = [
    "EvalResult",
    "ImageResult",
    "StopTraining",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "ValidationReport",
    "evaluate",
    "from_pretrained",
    "save_pretrained",
    "train",
    "upscale_image",
    "upscale_tensor",
    "ModelInfo",
    "Profile",
    "SpecError",
    "WeightsError",
    "block_names",
    "build_model",
    "deploy",
    "get_block",
    "list_blocks",
    "load_spec",
    "load_weights",
    "model_info",
    "profile",
    "read_state_dict",
    "register_block",
    "save_weights",
    "shipped_spec_names",
]
__version__ = "0.1.0"
