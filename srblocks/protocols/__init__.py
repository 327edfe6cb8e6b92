"""Training protocols: named, versioned recipes (``search/protocols/*.yaml``) that train any spec the same way,
their data split, and a resumable results store. ``srblocks train SPEC --protocol ref_x4`` runs one."""

from .protocol import Protocol, load_protocol, shipped_protocol_names
from .runner import deploy_cost, machine_info, protocol_key, run_protocol
from .splits import DataNotFound, RunData, resolve_data, split_images
from .store import ResultsStore, key_string

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
