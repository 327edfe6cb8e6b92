"""The ``torchrun`` environment of this process, read without importing torch.

``torchrun`` (``python -m torch.distributed.run``) starts one process per rank with ``RANK`` (global rank),
``WORLD_SIZE`` (number of processes over all nodes), ``LOCAL_RANK`` (rank on this node, which picks the GPU),
``MASTER_ADDR`` and ``MASTER_PORT`` set. A process without ``RANK`` and ``WORLD_SIZE`` is a plain run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from ..errors import SrblocksError

__all__ = ["DistributedError", "World", "world_from_env", "is_main_process"]


class DistributedError(SrblocksError, ValueError):
    """A distributed run that cannot work as configured (bad ``torchrun`` variables, a batch that does not split
    evenly over the ranks, ranks that disagree about the checkpoint they resume from)."""


@dataclass(frozen=True)
class World:
    """Where this process sits in a distributed run.

    Attributes:
        rank: global rank, 0 .. size - 1 (rank 0 validates, logs and writes files).
        size: number of processes (``WORLD_SIZE``).
        local_rank: rank on this node (``LOCAL_RANK``), the CUDA device index a GPU run uses.
    """

    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int_var(env: Mapping[str, str], name: str) -> int:
    text = env[name]
    try:
        return int(text)
    except ValueError:
        raise DistributedError(f"environment variable {name}={text[:40]!r} is not an integer (set by torchrun)") \
            from None


def world_from_env(env: Mapping[str, str] | None = None) -> World | None:
    """The :class:`World` described by ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` in ``env`` (default
    ``os.environ``), or None when ``RANK`` and ``WORLD_SIZE`` are not both set (a plain, single-process run).

    Raises:
        DistributedError: a variable is not an integer, or the ranks are out of range.
    """
    env = os.environ if env is None else env
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    rank, size = _int_var(env, "RANK"), _int_var(env, "WORLD_SIZE")
    local_rank = _int_var(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
    if size < 1 or not 0 <= rank < size:
        raise DistributedError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={size})")
    if local_rank < 0:
        raise DistributedError(f"LOCAL_RANK={local_rank} must be >= 0")
    return World(rank=rank, size=size, local_rank=local_rank)


def is_main_process(env: Mapping[str, str] | None = None) -> bool:
    """True in a plain run and on rank 0 of a distributed one: the process that writes files and prints."""
    world = world_from_env(env)
    return world is None or world.is_main
