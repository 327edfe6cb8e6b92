"""Building a latency table: measure the distinct block calls of some models, then the models themselves, and fit
the per-model overhead.

Blocks are measured interleaved in chunks of ``chunk`` distinct calls (each chunk's inputs live in memory together);
whole models are measured interleaved in chunks too, on contiguous (NCHW) images as an application feeds them.
Entries already in the table are not measured again, so rerunning a calibration continues it and a calibration for
new specs only measures what is new.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .calls import BlockCall, TensorSpec, block_calls, model_memory_format
from .measure import MeasureSettings, Timer, measure_interleaved
from .runners import Runner
from .table import BlockEntry, LatencyTable, ModelPoint

__all__ = ["calibrate", "cover_blocks", "measure_missing", "measure_models", "CalibrationReport", "Progress"]

#: progress(stage, done, total, text): stage is "blocks", "models" or "candidates"; total 0 when not known
Progress = Callable[[str, int, int, str], None]


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def measure_missing(table: LatencyTable, calls: Sequence[BlockCall], runner: Runner,
                    settings: MeasureSettings = MeasureSettings(), *, timer: Timer = time.perf_counter,
                    progress: Progress | None = None, chunk: int = 8) -> int:
    """Measure every call of ``calls`` whose key is not in ``table`` yet and add it; returns how many were measured."""
    missing: dict[str, BlockCall] = {}
    for call in calls:
        if call.key not in table.blocks:
            missing.setdefault(call.key, call)
    todo = list(missing.values())
    done = 0
    with runner.session():
        for group in _chunks(todo, chunk):
            fns = {c.key: runner.prepare(c.module, c.make_inputs()) for c in group}
            timings = measure_interleaved(fns, settings, timer=timer, seed=done)
            for c in group:
                t = timings[c.key]
                table.blocks[c.key] = BlockEntry(c.block, c.label, t.median_ms, t.iqr_ms, t.samples)
                done += 1
                if progress is not None:
                    progress("blocks", done, len(todo), f"{c.label}: {t.median_ms:.3f} ms")
            del fns
    return done


def measure_models(models: Sequence[tuple[str, nn.Module]], input_shape: Sequence[int], runner: Runner,
                   settings: MeasureSettings = MeasureSettings(), *, dtype: torch.dtype = torch.float32,
                   timer: Timer = time.perf_counter, progress: Progress | None = None,
                   chunk: int = 4) -> dict[str, float]:
    """Median ms of each whole model (name -> ms) on a contiguous ``input_shape`` input, interleaved in chunks."""
    out: dict[str, float] = {}
    x = TensorSpec(tuple(int(v) for v in input_shape), str(dtype).removeprefix("torch."), "contiguous").make()
    with runner.session():
        for group in _chunks(list(models), chunk):
            fns = {name: runner.prepare(model, (x,)) for name, model in group}
            for name, t in measure_interleaved(fns, settings, timer=timer, seed=len(out)).items():
                out[name] = t.median_ms
                if progress is not None:
                    progress("models", len(out), len(models), f"{name}: {t.median_ms:.2f} ms")
            del fns
    return out


@dataclass(frozen=True)
class CalibrationReport:
    """What a calibration did: block entries measured now / in the table, models measured, seconds it took."""

    blocks_measured: int
    blocks_total: int
    models: int
    seconds: float


def calibrate(table: LatencyTable, models: Sequence[tuple[str, nn.Module]], input_shape: Sequence[int],
              runner: Runner, settings: MeasureSettings = MeasureSettings(), *, dtype: torch.dtype = torch.float32,
              timer: Timer = time.perf_counter, progress: Progress | None = None,
              measure_whole: bool = True) -> CalibrationReport:
    """Add the block entries of ``models`` (name, eval-mode module; the deploy form is what gets deployed) to
    ``table`` and, with ``measure_whole``, one calibration point per model; the table is not saved here.

    ``input_shape`` is (B, C, H, W) of the LR input."""
    if table.device != runner.key():
        from .table import LatencyTableError

        raise LatencyTableError(f"the table belongs to {table.device.describe()}, the runner measures on "
                                f"{runner.key().describe()}")
    start = time.perf_counter()
    per_model = {name: block_calls(model, input_shape, dtype) for name, model in models}
    measured = measure_missing(table, [c for calls in per_model.values() for c in calls], runner, settings,
                               timer=timer, progress=progress)
    if measure_whole:
        whole = measure_models(models, input_shape, runner, settings, dtype=dtype, timer=timer, progress=progress)
        for name, model in models:
            blocks_ms = sum(table.blocks[c.key].ms for c in per_model[name])
            table.add_point(ModelPoint(name, model_memory_format(model), blocks_ms, whole[name]))
    return CalibrationReport(measured, len(table.blocks), len(models) if measure_whole else 0,
                             time.perf_counter() - start)


def cover_blocks(table: LatencyTable, models: Iterable[tuple[str, nn.Module]], input_shape: Sequence[int],
                 runner: Runner, settings: MeasureSettings = MeasureSettings(), *, dtype: torch.dtype = torch.float32,
                 timer: Timer = time.perf_counter, progress: Progress | None = None) -> int:
    """Measure the block calls of many models (e.g. hundreds of samples of a search space) that ``table`` lacks,
    without measuring the models themselves; returns how many entries were added. ``models`` is consumed lazily and
    only one module per new key is kept, so memory stays at the distinct blocks."""
    new: dict[str, BlockCall] = {}
    for i, (name, model) in enumerate(models, 1):
        for call in block_calls(model, input_shape, dtype):
            if call.key not in table.blocks:
                new.setdefault(call.key, call)
        if progress is not None and i % 10 == 0:
            progress("candidates", i, 0, f"{name}: {len(new)} new block calls so far")
    return measure_missing(table, list(new.values()), runner, settings, timer=timer, progress=progress)
