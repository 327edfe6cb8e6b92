"""One folder, one complete model (Hugging Face style): ``save_pretrained(model, DIR)`` / ``from_pretrained(DIR)``.

A model folder holds three files::

    DIR/spec.yaml          the model's spec (``extends`` resolved), readable by ``srblocks.build_model``
    DIR/model.safetensors  its weights, keys as ``model.state_dict()``, with the export metadata (``__metadata__``)
    DIR/card.json          what it is: spec name and content hash, variables, scale, input range, parameters,
                           train or deploy form, srblocks and torch versions, SHA-256 of the two other files

``from_pretrained`` checks both hashes, rebuilds the network from ``spec.yaml`` with the card's variables (and
:func:`srblocks.deploy` for a deploy-form model), loads the weights strictly and returns it in eval mode. See
:mod:`~.folder` and docs/deploy.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:  # at run time each name is imported on first use (import srblocks must not import torch)
    from .folder import CARD_FILE, FORMAT, FORMAT_VERSION, SPEC_FILE, WEIGHTS_FILE, PretrainedError, from_pretrained, \
        save_pretrained

_EXPORTS = dict.fromkeys(("CARD_FILE", "FORMAT", "FORMAT_VERSION", "SPEC_FILE", "WEIGHTS_FILE", "PretrainedError",
                          "from_pretrained", "save_pretrained"), ".folder")
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)

__all__ = ["CARD_FILE", "FORMAT", "FORMAT_VERSION", "SPEC_FILE", "WEIGHTS_FILE", "PretrainedError", "from_pretrained",
           "save_pretrained"]
