"""Budgets: limits on params, MACs, peak memory and latency, parsed from ``params=250K,memory=60MB,latency=40ms``.

Units: counts take K/M/G (10^3, 10^6, 10^9); memory takes KB/MB/GB meaning KiB/MiB/GiB (2^10, 2^20, 2^30 bytes,
the "M" of ``torch.cuda.max_memory_allocated() / 1024**2`` that papers report); latency takes ms or s (stored in ms).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

__all__ = ["Budgets", "parse_budgets", "METRIC_UNITS", "METRIC_LABELS", "format_metric", "describe_check"]

METRIC_UNITS = {"params": "count", "macs": "count", "memory": "bytes", "latency": "ms"}
_COUNT = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_BYTES = {"": 1, "B": 1, "KB": 2**10, "KIB": 2**10, "MB": 2**20, "MIB": 2**20, "GB": 2**30, "GIB": 2**30}
_TIME = {"MS": 1.0, "S": 1000.0, "": 1.0}
#: Axis/table labels in the unit :func:`format_metric` and the plots use.
METRIC_LABELS = {"params": "params", "macs": "MACs (G)", "memory": "peak memory (MiB)", "latency": "latency (ms)"}
_VALUE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([A-Za-z]*)\s*$")


@dataclass(frozen=True)
class Budgets:
    """Upper limits (None = unconstrained): params and MACs as counts, memory in bytes, latency in milliseconds."""

    params: float | None = None
    macs: float | None = None
    memory: float | None = None
    latency: float | None = None

    def items(self) -> list[tuple[str, float]]:
        return [(k, v) for k, v in (("params", self.params), ("macs", self.macs), ("memory", self.memory),
                                    ("latency", self.latency)) if v is not None]

    def as_dict(self) -> dict[str, float]:
        """The set limits in stored units (counts, bytes, ms), e.g. for a trial's ``budgets`` user attribute."""
        return dict(self.items())

    def describe(self) -> str:
        """``"params <= 250,000, memory <= 60 MiB"`` (``"none"`` when unconstrained)."""
        return ", ".join(f"{k} <= {format_metric(k, v)}" for k, v in self.items()) or "none"

    def merged(self, other: "Budgets") -> "Budgets":
        """``other``'s limits where set, else ours."""
        return Budgets(**{k: getattr(other, k) if getattr(other, k) is not None else getattr(self, k)
                          for k in METRIC_UNITS})


def _parse_value(metric: str, text: str | float | int) -> float:
    if isinstance(text, (int, float)):
        return float(text)
    match = _VALUE.match(text)
    if not match:
        raise ValueError(f"cannot read budget {metric}={text!r}")
    number, unit = float(match.group(1)), match.group(2).upper()
    table = {"count": _COUNT, "bytes": _BYTES, "ms": _TIME}[METRIC_UNITS[metric]]
    if unit not in table:
        raise ValueError(f"unknown unit {match.group(2)!r} for {metric} (use {', '.join(u for u in table if u)})")
    return number * table[unit]


def parse_budgets(spec: str | Mapping[str, str | float | int] | None) -> Budgets:
    """``"params=250K,memory=60MB,latency=40ms"`` or a mapping -> :class:`Budgets` (unknown metrics are errors)."""
    if spec is None:
        return Budgets()
    if isinstance(spec, str):
        pairs = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"budget {part!r} must look like NAME=VALUE")
            pairs[key.strip()] = value.strip()
        spec = pairs
    unknown = set(spec) - set(METRIC_UNITS)
    if unknown:
        raise ValueError(f"unknown budget(s) {sorted(unknown)}; known: {', '.join(METRIC_UNITS)}")
    values = {k: _parse_value(k, v) for k, v in spec.items()}
    for k, v in values.items():
        if v <= 0:
            raise ValueError(f"budget {k} must be positive, got {v}")
    return Budgets(**values)


def _trim(text: str) -> str:
    return text[:-2] if text.endswith(".0") else text


def format_metric(metric: str, value: float, digits: int | None = None) -> str:
    """A measured or budgeted value in its unit: params ``341,066``; MACs ``13.55 G``; memory (bytes) ``65.1 MiB``;
    latency (ms) ``41.3 ms``. ``digits`` overrides the decimals of MACs/memory/latency. Unknown metrics: 4
    significant digits."""
    if metric == "params":
        return f"{value:,.0f}"
    if metric == "macs":
        return f"{_trim(f'{value / 1e9:.{2 if digits is None else digits}f}')} G"
    if metric == "memory":
        return f"{_trim(f'{value / 2**20:.{1 if digits is None else digits}f}')} MiB"
    if metric == "latency":
        return f"{_trim(f'{value:.{1 if digits is None else digits}f}')} ms"
    return f"{value:.4g}"


def describe_check(metric: str, measured: float, limit: float) -> str:
    """``"memory 65.1 MiB > 60 MiB"`` (over budget) or ``"params 239,520 <= 250,000"`` (within); more decimals when
    the rounded values would look equal (``"memory 60.01 MiB > 60 MiB"``)."""
    shown, bound = format_metric(metric, measured), format_metric(metric, limit)
    digits = 2
    while shown == bound and measured != limit and digits <= 6 and metric in ("macs", "memory", "latency"):
        shown, bound = format_metric(metric, measured, digits), format_metric(metric, limit, digits)
        digits += 1
    return f"{metric} {shown} {'>' if measured > limit else '<='} {bound}"
