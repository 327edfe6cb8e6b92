"""Training protocols: named, versioned recipes (``search/protocols/*.yaml``) that train any spec the same way,
their data split, and a resumable results store. ``srblocks train SPEC --protocol ref_x4`` runs one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name is imported on first use
    from .protocol import Protocol, load_protocol, shipped_protocol_names
    from .runner import deploy_cost, machine_info, protocol_key, run_protocol
    from .splits import DataNotFound, RunData, resolve_data, split_images
    from .store import ResultsStore, key_string

_EXPORTS = {
    "Protocol": ".protocol",
    "load_protocol": ".protocol",
    "shipped_protocol_names": ".protocol",
    "deploy_cost": ".runner",
    "machine_info": ".runner",
    "protocol_key": ".runner",
    "run_protocol": ".runner",
    "DataNotFound": ".splits",
    "RunData": ".splits",
    "resolve_data": ".splits",
    "split_images": ".splits",
    "ResultsStore": ".store",
    "key_string": ".store",
}
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)

__all__ = [
    "DataNotFound",
    "Protocol",
    "ResultsStore",
    "RunData",
    "deploy_cost",
    "key_string",
    "load_protocol",
    "machine_info",
    "protocol_key",
    "resolve_data",
    "run_protocol",
    "shipped_protocol_names",
    "split_images",
]
