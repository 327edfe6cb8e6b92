"""Training on several processes (``torchrun``): which rank this process is, the process group, batch sharding.

One job: let :func:`srblocks.train.train` run under DistributedDataParallel without knowing how.

* :mod:`.env`: the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) as a :class:`World`;
  :func:`is_main_process` (rank 0, or no ``torchrun`` at all). Importing it loads no torch.
* :mod:`.group`: :class:`ProcessGroup`: create/destroy the process group (NCCL for CUDA, gloo for CPU), the
  rank's device, and the few collectives the trainer needs (mean of a loss, rank 0's decision, agreement).
* :mod:`.sharding`: :class:`RankShard`: the sample indices one rank trains on, so that the union over ranks of
  iteration ``t``'s samples is exactly the single-process batch ``t``.

A plain run (no ``torchrun`` variables) never touches any of this beyond :func:`world_from_env` returning None.
"""

from __future__ import annotations

from .env import DistributedError, World, is_main_process, world_from_env
from .sharding import RankShard

__all__ = ["DistributedError", "World", "world_from_env", "is_main_process", "RankShard", "ProcessGroup"]


def __getattr__(name: str):  # ProcessGroup imports torch.distributed: load it on first use only
    if name == "ProcessGroup":
        from .group import ProcessGroup

        return ProcessGroup
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
