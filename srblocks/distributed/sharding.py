"""Which samples each rank trains on.

The single-process trainer's iteration ``t`` uses samples ``t * B .. t * B + B - 1`` of
:class:`srblocks.data.TrainPatchDataset` (``B`` the batch size), and sample ``i`` depends only on ``(seed, i)``.
With ``W`` ranks, rank ``r`` takes the ``r``-th contiguous slice of ``B / W`` of them at every iteration, so the
union over ranks of iteration ``t``'s samples is exactly the single-process batch ``t`` and every rank's data is
still a pure function of ``(seed, i)`` (any number of DataLoader workers, any resume point).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

from .env import DistributedError

__all__ = ["RankShard"]


class RankShard(Sequence[int]):
    """The dataset indices rank ``rank`` of ``world_size`` trains on from iteration ``start`` up to ``iterations``
    (exclusive), ``batch_size / world_size`` per iteration, in order; use as a DataLoader ``sampler`` with
    ``batch_size=shard.local_batch``.

    With ``world_size == 1`` it is ``range(start * batch_size, iterations * batch_size)``.

    Raises:
        DistributedError: ``batch_size`` is not a multiple of ``world_size``.
    """

    def __init__(self, start: int, iterations: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise DistributedError(f"rank {rank} is not in 0..{world_size - 1}")
        if batch_size % world_size:
            raise DistributedError(f"the batch size {batch_size} does not split over {world_size} processes: use a "
                                   f"multiple of {world_size} (each process trains batch_size / WORLD_SIZE samples)")
        self.start, self.iterations, self.batch_size = int(start), int(iterations), int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.local_batch = self.batch_size // self.world_size

    def __len__(self) -> int:
        return max(0, self.iterations - self.start) * self.local_batch

    @overload
    def __getitem__(self, k: int) -> int: ...

    @overload
    def __getitem__(self, k: slice) -> list[int]: ...

    def __getitem__(self, k: int | slice) -> int | list[int]:
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        n = len(self)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"index {k} out of range for a shard of {n} samples")
        iteration, j = divmod(k, self.local_batch)
        return (self.start + iteration) * self.batch_size + self.rank * self.local_batch + j

    def __iter__(self) -> Iterator[int]:
        for t in range(self.start, self.iterations):
            first = t * self.batch_size + self.rank * self.local_batch
            yield from range(first, first + self.local_batch)

    def __repr__(self) -> str:
        return (f"RankShard(start={self.start}, iterations={self.iterations}, batch_size={self.batch_size}, "
                f"rank={self.rank}, world_size={self.world_size})")
