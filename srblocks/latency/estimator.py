"""Latency for budgets and objectives: the table's prediction, and a real measurement only near the boundary.

For a budget ``L`` and a prediction ``p`` trusted to ``band`` (relative):

* ``p x (1 + band) < L``: within budget by the prediction (nothing is run as a whole);
* ``p x (1 - band) > L``: over budget by the prediction;
* otherwise (inside the band around the boundary), or while the table's overhead fit for this memory format has
  fewer than :data:`~.table.MIN_POINTS` calibration points: the model is measured for real, that measurement
  decides, and it becomes a new calibration point (the fit improves as the search runs).

Block calls missing from the table are measured on the spot and cached; the table is saved (merged with what other
workers wrote) after every evaluation that changed it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .calibration import measure_models
from .calls import model_memory_format
from .measure import MeasureSettings, Timer
from .predict import predict_latency
from .runners import Runner
from .table import ModelPoint, open_table

__all__ = ["BudgetLatency", "LatencyResult"]


@dataclass(frozen=True)
class LatencyResult:
    """One model's latency for a budget check (ms): the value used (``value_ms``: the measurement when there is
    one, else the prediction), the prediction, the measurement (None when not measured), the prediction's relative
    band, and ``source`` (``predicted`` or ``measured``)."""

    value_ms: float
    predicted_ms: float
    measured_ms: float | None
    band: float
    source: str


class BudgetLatency:
    """Predict-then-measure-near-the-boundary latency on one runner's device, with the table at ``table_path``
    (default: the device's default path; created when missing)."""

    def __init__(self, runner: Runner, table_path: str | Path | None = None, *,
                 settings: MeasureSettings = MeasureSettings(), timer: Timer = time.perf_counter,
                 save: bool = True) -> None:
        from .table import MIN_POINTS

        self.runner, self.settings, self.timer, self.save = runner, settings, timer, save
        self.table, self.path = open_table(table_path, runner.key())
        self.min_points = MIN_POINTS
        self.measured = 0  # whole-model measurements made by this object

    def evaluate(self, model: nn.Module, input_shape: Sequence[int], limit_ms: float | None, *,
                 name: str = "candidate", dtype: torch.dtype = torch.float32) -> LatencyResult:
        """Latency of ``model`` (eval mode; the form that is deployed) on a contiguous ``input_shape`` input,
        against ``limit_ms`` (None: no budget, only an objective)."""
        prediction = predict_latency(model, self.table, input_shape, dtype=dtype, runner=self.runner,
                                     settings=self.settings, timer=self.timer)
        changed = prediction.measured_now > 0
        low, high = prediction.interval()
        calibrated = self.table.overhead(model_memory_format(model)).points >= self.min_points
        near = limit_ms is not None and low <= limit_ms <= high
        result = LatencyResult(prediction.ms, prediction.ms, None, prediction.band, "predicted")
        if near or not calibrated:
            measured = measure_models([(name, model)], input_shape, self.runner, self.settings, dtype=dtype,
                                      timer=self.timer)[name]
            self.measured += 1
            self.table.add_point(ModelPoint(name, prediction.memory_format, prediction.blocks_ms, measured))
            changed = True
            result = LatencyResult(measured, prediction.ms, measured, prediction.band, "measured")
        if changed and self.save:
            self.table.save(self.path)
        return result
