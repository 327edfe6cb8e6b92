"""Robust interleaved timing: warm-up, then rounds that call every candidate once in a shuffled order, until every
median is stable.

Interleaving (A B C, C A B, ...) spreads slow drifts of a shared machine (another process starting, frequency
changes) over all candidates instead of biasing whichever ran during them; medians ignore the outliers. A sample of
a fast callable repeats it ``number`` times so that one sample lasts at least ``min_sample_s`` (timer resolution and
Python overhead then do not dominate); the reported time is per call.

Stability: the standard error of a median is about 1.2533 x sigma / sqrt(n), with sigma estimated robustly as
IQR / 1.349; a candidate is stable when that is below ``rel_precision`` of its median. Sampling stops when every
candidate is stable (after ``min_samples``) or has ``max_samples``, or once ``min_samples`` are taken and the rounds
have lasted ``time_limit_s`` (default 30 s: a model taking seconds per pass gets ``min_samples``).

The clock is injectable (``timer``, seconds): tests pass a fake clock and get deterministic timings.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping, TypeVar

__all__ = ["MeasureSettings", "Timing", "measure_interleaved", "relative_precision", "Timer"]

K = TypeVar("K", bound=Hashable)
#: a clock in seconds (``time.perf_counter`` by default)
Timer = Callable[[], float]


@dataclass(frozen=True)
class MeasureSettings:
    """How hard to measure. Units: seconds for ``min_sample_s`` and ``time_limit_s``; ``rel_precision`` is a fraction
    of the median (0.02 = 2 %)."""

    warmup: int = 2
    min_samples: int = 5
    max_samples: int = 25
    rel_precision: float = 0.02
    min_sample_s: float = 0.005
    max_number: int = 200
    time_limit_s: float | None = 30.0

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_samples < 1 or self.max_samples < self.min_samples:
            raise ValueError(f"invalid measure settings: warmup {self.warmup}, samples {self.min_samples}.."
                             f"{self.max_samples}")
        if not self.rel_precision > 0:
            raise ValueError(f"rel_precision must be > 0, got {self.rel_precision}")


#: fewer samples, looser precision: for quick calibrations and smoke tests
QUICK = MeasureSettings(warmup=1, min_samples=3, max_samples=8, rel_precision=0.05, min_sample_s=0.002)


@dataclass(frozen=True)
class Timing:
    """One candidate's result: median and interquartile range in milliseconds per call, the number of samples, calls
    per sample, and whether the median reached the requested precision."""

    median_ms: float
    iqr_ms: float
    samples: int
    number: int
    stable: bool


def relative_precision(samples: list[float]) -> float:
    """Estimated standard error of the median of ``samples`` relative to it (inf for fewer than 2 samples)."""
    if len(samples) < 2:
        return math.inf
    median = statistics.median(samples)
    if median <= 0:
        return 0.0 if max(samples) == min(samples) else math.inf
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return 1.2533 * ((q3 - q1) / 1.349) / math.sqrt(len(samples)) / median


def measure_interleaved(
    fns: Mapping[K, Callable[[], Any]],
    settings: MeasureSettings = MeasureSettings(),
    *,
    timer: Timer = time.perf_counter,
    seed: int = 0,
) -> dict[K, Timing]:
    """Time every callable of ``fns`` (each runs one forward pass, synchronised), interleaved; see the module doc.

    Returns {key: Timing} in milliseconds per call. The order within a round is shuffled with ``seed``."""
    if not fns:
        return {}
    keys = list(fns)
    for key in keys:
        for _ in range(settings.warmup):
            fns[key]()
    number: dict[K, int] = {}
    for key in keys:  # calls per sample, from one timed call after warm-up
        start = timer()
        fns[key]()
        once = timer() - start
        number[key] = max(1, min(settings.max_number, math.ceil(settings.min_sample_s / once))) if once > 0 else \
            settings.max_number
    samples: dict[K, list[float]] = {k: [] for k in keys}
    rng = random.Random(seed)
    began = timer()
    while True:
        order = keys[:]
        rng.shuffle(order)
        for key in order:
            fn, n = fns[key], number[key]
            start = timer()
            for _ in range(n):
                fn()
            samples[key].append((timer() - start) / n * 1000.0)
        count = len(samples[keys[0]])
        if count >= settings.max_samples:
            break
        if count >= settings.min_samples and all(relative_precision(s) <= settings.rel_precision
                                                  for s in samples.values()):
            break
        if settings.time_limit_s is not None and count >= settings.min_samples and \
                timer() - began > settings.time_limit_s:
            break
    out = {}
    for key in keys:
        s = samples[key]
        q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive") if len(s) > 1 else (s[0], s[0], s[0])
        out[key] = Timing(statistics.median(s), q3 - q1, len(s), number[key],
                          relative_precision(s) <= settings.rel_precision)
    return out
