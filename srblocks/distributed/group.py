"""The process group of a distributed training run and the few collectives the trainer needs.

Backend: NCCL when the run's device is CUDA (each rank on ``cuda:LOCAL_RANK``), gloo on CPU. The group is created
from the ``torchrun`` environment (``env://``) unless the caller already created one, once per process: later
:func:`srblocks.train.train` calls in the same process reuse it, and it is destroyed when the process exits
(destroying and re-creating a group in one ``torchrun`` process can race with the other ranks on the rendezvous
store and fail to connect).

Collectives are blocking and every rank must call them in the same order: the trainer calls :meth:`mean` once per
iteration (the logged loss, so that a NaN on one rank stops every rank), :meth:`from_main` after each validation,
:meth:`from_main_value` once per iteration with a time budget (rank 0's clock sets the schedule and the stop), and
:meth:`check_same` once at start-up.
"""

from __future__ import annotations

import atexit
import datetime
import os
from typing import TYPE_CHECKING

from .env import DistributedError, World

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["ProcessGroup", "DEFAULT_TIMEOUT_S"]

#: seconds a rank waits in a collective before the run fails (rank 0 may validate for a while meanwhile);
#: ``SRBLOCKS_DIST_TIMEOUT`` overrides it
DEFAULT_TIMEOUT_S = 1800.0


def _timeout_s() -> float:
    text = os.environ.get("SRBLOCKS_DIST_TIMEOUT")
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DistributedError(f"SRBLOCKS_DIST_TIMEOUT={text[:40]!r} must be a positive number of seconds")
    return value


def _rank_device(world: World, requested: str | None) -> "torch.device":
    import torch

    kind = torch.device(requested).type if requested else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind != "cuda":
        raise DistributedError(f"distributed training runs on cuda or cpu, not on device {requested!r}")
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise DistributedError(f"LOCAL_RANK={world.local_rank} but this node has {count} CUDA device(s): start at "
                               f"most {count} processes per node (torchrun --nproc-per-node)")
    return torch.device("cuda", world.local_rank)


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


class ProcessGroup:
    """A started process group: ``world`` (rank, size), ``device`` (this rank's device) and ``backend``."""

    def __init__(self, world: World, device: "torch.device", backend: str) -> None:
        self.world, self.device, self.backend = world, device, backend

    @classmethod
    def start(cls, world: World, device: str | None = None) -> "ProcessGroup":
        """Join (or create) the process group of ``world``; ``device`` is the trainer's request (None: CUDA when
        available), mapped to ``cuda:LOCAL_RANK`` on GPUs.

        Raises:
            DistributedError: an existing group of another size, too few GPUs on the node, an unsupported device.
        """
        import torch
        import torch.distributed as dist

        rank_device = _rank_device(world, device)
        backend = "nccl" if rank_device.type == "cuda" else "gloo"
        if rank_device.type == "cuda":
            torch.cuda.set_device(rank_device)
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=_timeout_s()))
            atexit.register(_destroy)
        elif dist.get_world_size() != world.size or dist.get_rank() != world.rank:
            raise DistributedError(f"the existing process group (rank {dist.get_rank()} of {dist.get_world_size()}) "
                                   f"does not match RANK={world.rank}, WORLD_SIZE={world.size}")
        else:
            backend = str(dist.get_backend())
            if (backend == "nccl") != (rank_device.type == "cuda"):
                raise DistributedError(f"this process's group uses {backend}, which cannot train on {rank_device} "
                                       "(NCCL is for CUDA, gloo for CPU)")
        return cls(world, rank_device, backend)

    def wrap(self, model: "nn.Module") -> "nn.Module":
        """``model`` (already on :attr:`device`) in DistributedDataParallel: gradients are averaged over the ranks
        during ``backward``. Parameters and buffers are broadcast from rank 0 when wrapping."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, output_device=self.device.index if ids else None)

    def _tensor(self, values: list[float]) -> "torch.Tensor":
        import torch

        return torch.tensor(values, dtype=torch.float64, device=self.device)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (float64 sum / size); NaN anywhere gives NaN everywhere."""
        import torch.distributed as dist

        t = self._tensor([value])
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item()) / self.world.size

    def from_main(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (a decision only rank 0 can take: its validation, its clock)."""
        import torch.distributed as dist

        t = self._tensor([1.0 if flag else 0.0])
        dist.broadcast(t, src=0)
        return bool(t.item())

    def from_main_value(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (float64), e.g. its elapsed seconds for a time-budgeted schedule."""
        import torch.distributed as dist

        t = self._tensor([value])
        dist.broadcast(t, src=0)
        return float(t.item())

    def check_same(self, value: int, what: str) -> None:
        """Raise on every rank when the ranks hold different integers ``value`` (``what`` names it)."""
        import torch.distributed as dist

        t = self._tensor([float(value)])
        values = [self._tensor([0.0]) for _ in range(self.world.size)]
        dist.all_gather(values, t)
        seen = [int(v.item()) for v in values]
        if len(set(seen)) > 1:
            raise DistributedError(f"the ranks disagree about {what}: " + ", ".join(
                f"rank {r}: {v}" for r, v in enumerate(seen)))
