"""A model's predicted latency: the sum of its block entries plus the calibrated per-model overhead of its memory
format (see :mod:`.table`). Block calls missing from the table are measured on the spot when a runner is given
(and added to the table), else they are an error naming how to calibrate."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from ..errors import SrblocksError
from .calibration import Progress, measure_missing
from .calls import block_calls, model_memory_format
from .measure import MeasureSettings, Timer
from .runners import Runner
from .table import LatencyTable

__all__ = ["Prediction", "predict_latency", "MissingEntriesError"]


class MissingEntriesError(SrblocksError):
    """The table has no entry for some block calls of the model and nothing may measure them."""


@dataclass(frozen=True)
class Prediction:
    """Predicted milliseconds per forward pass, with its parts and trust.

    Attributes:
        ms: the prediction (``blocks_ms`` + ``overhead_ms``).
        blocks_ms: sum of the block entries of every node.
        overhead_ms: the calibrated per-model overhead (may be negative).
        band: relative error the prediction is trusted to (0.1 = +-10 %).
        calibrated: whether the overhead fit has enough calibration points for this memory format.
        memory_format: the model's weight layout.
        nodes: block calls summed; ``measured_now``: how many distinct ones were measured during this call.
        by_block: ms per block name (summed over its nodes).
    """

    ms: float
    blocks_ms: float
    overhead_ms: float
    band: float
    calibrated: bool
    memory_format: str
    nodes: int
    measured_now: int
    by_block: dict[str, float] = field(default_factory=dict)

    def interval(self) -> tuple[float, float]:
        """(low, high) ms of the error band."""
        return self.ms * (1 - self.band), self.ms * (1 + self.band)


def predict_latency(model: nn.Module, table: LatencyTable, input_shape: Sequence[int], *,
                    dtype: torch.dtype = torch.float32, runner: Runner | None = None,
                    settings: MeasureSettings = MeasureSettings(), timer: Timer = time.perf_counter,
                    progress: Progress | None = None) -> Prediction:
    """Predict ``model``'s ms per forward pass on a contiguous ``input_shape`` (B, C, H, W) input on ``table``'s
    device. With ``runner`` (which must measure on that device), missing block entries are measured now."""
    from .table import MIN_POINTS

    was_training = model.training
    model.eval()
    try:
        calls = block_calls(model, input_shape, dtype)
        missing = {c.key for c in calls if c.key not in table.blocks}
        measured = 0
        if missing:
            if runner is None:
                example = next(c.label for c in calls if c.key in missing)
                raise MissingEntriesError(f"the latency table for {table.device.describe()} has no entry for "
                                          f"{len(missing)} block call(s) of this model (e.g. {example}); run "
                                          "`srblocks latency calibrate --spec SPEC` for it")
            if runner.key() != table.device:
                raise SrblocksError(f"the runner measures on {runner.key().describe()}, the table belongs to "
                                    f"{table.device.describe()}")
            measured = measure_missing(table, calls, runner, settings, timer=timer, progress=progress)
    finally:
        model.train(was_training)
    by_block: dict[str, float] = {}
    for c in calls:
        by_block[c.block] = by_block.get(c.block, 0.0) + table.blocks[c.key].ms
    blocks_ms = sum(by_block.values())
    fmt = model_memory_format(model)
    fit = table.overhead(fmt)
    ms = fit.apply(blocks_ms)
    return Prediction(ms, blocks_ms, ms - blocks_ms, fit.band, fit.points >= MIN_POINTS, fmt, len(calls), measured,
                      by_block)
