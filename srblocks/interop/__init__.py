"""Interoperability with other super-resolution tools: key and format conversion of state dicts.

* :mod:`srblocks.interop.spandrel`: weights to and from `spandrel <https://github.com/chaiNNer-org/spandrel>`_, the
  model loader of chaiNNer (SAFMN and RCAN).

Importing this package imports torch (the command line imports it only inside the commands that use it).
"""

from __future__ import annotations

from .spandrel import (
    SUPPORTED_ARCHITECTURES,
    RGBMeanShift,
    SpandrelFormatError,
    SpandrelImport,
    detect_spandrel_architecture,
    from_spandrel,
    to_spandrel_state_dict,
)

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "RGBMeanShift",
    "SpandrelFormatError",
    "SpandrelImport",
    "detect_spandrel_architecture",
    "from_spandrel",
    "to_spandrel_state_dict",
]
