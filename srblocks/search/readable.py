"""Readable companions of a trial's user attributes, for tables that show attributes as they are stored
(optuna-dashboard's trial table, ``study.trials_dataframe()``).

The search stores measurements in base units, as the budgets and the report use them: ``params`` (a float count),
``macs`` (multiply-accumulates), ``memory`` (bytes), ``latency`` / ``latency_predicted`` / ``latency_measured``
(ms, unrounded), and ``spec`` (the candidate's whole spec mapping, which a dashboard cell shows as truncated JSON).
:class:`ReadableAttrsTrial` records, next to each of these, a rounded number in a readable unit (numbers stay
sortable columns) and a one-line summary of the spec:

    params -> params_K     (thousands, 2 decimals)      macs -> macs_G          (10^9, 3 decimals)
    memory -> memory_MiB   (2^20 bytes, 2 decimals)     latency* -> latency*_ms (ms, 2 decimals)
    (at least 4 significant digits: a 0.000628 G MACs toy model is not rounded to 0)
    spec   -> blocks       ("conv, project, 2x hpi_block, ..., pixel_shuffle"; or "safmn (dim=8, n_blocks=1)")

The base attributes are unchanged; the companions are only ever written beside them.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = ["ReadableAttrsTrial", "readable_attrs", "spec_summary", "READABLE_NAMES"]

#: base attribute -> (readable name, divisor, decimals)
READABLE_NAMES: dict[str, tuple[str, float, int]] = {
    "params": ("params_K", 1e3, 2),
    "macs": ("macs_G", 1e9, 3),
    "memory": ("memory_MiB", 2.0**20, 2),
    "latency": ("latency_ms", 1.0, 2),
    "latency_predicted": ("latency_predicted_ms", 1.0, 2),
    "latency_measured": ("latency_measured_ms", 1.0, 2),
}

#: longest ``blocks`` summary (characters)
SUMMARY_LIMIT = 300


def _node_names(nodes: Any) -> list[tuple[int, str]]:
    """(count, block) runs of a spec's ``nodes`` list, repeats multiplied out, consecutive equal blocks merged."""
    runs: list[tuple[int, str]] = []

    def add(count: int, name: str) -> None:
        if runs and runs[-1][1] == name:
            runs[-1] = (runs[-1][0] + count, name)
        else:
            runs.append((count, name))

    for node in nodes if isinstance(nodes, list) else []:
        if not isinstance(node, Mapping):
            continue
        if "repeat" in node and isinstance(node.get("nodes"), list):
            times = node["repeat"] if isinstance(node["repeat"], int) else 1
            for count, name in _node_names(node["nodes"]):
                add(count * times, name)
        elif "block" in node:
            add(1, str(node["block"]))
    return runs


def spec_summary(spec: Any) -> str | None:
    """One line naming a spec's blocks in order (``2x hpi_block``), or ``base (var=value, ...)`` for a spec that
    only ``extends`` another; None when ``spec`` is not a spec mapping."""
    if not isinstance(spec, Mapping):
        return None
    if isinstance(spec.get("nodes"), list):
        text = ", ".join(f"{n}x {name}" if n > 1 else name for n, name in _node_names(spec["nodes"]))
    elif "extends" in spec:
        variables = spec.get("variables") if isinstance(spec.get("variables"), Mapping) else {}
        text = f"{spec['extends']} (" + ", ".join(f"{k}={v}" for k, v in variables.items()) + ")"
    else:
        return None
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 3] + "..."


def _rounded(x: float, decimals: int) -> float:
    """``x`` to ``decimals`` decimals, or to 4 significant digits when that keeps more (0.000628 stays readable)."""
    if x == 0:
        return 0.0
    return round(x, max(decimals, 3 - math.floor(math.log10(abs(x)))))


def readable_attrs(key: str, value: Any) -> dict[str, Any]:
    """The companions of user attribute ``key`` = ``value`` ({} when it has none or the value is not a finite
    number / a spec)."""
    if key in READABLE_NAMES:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return {}
        name, divisor, decimals = READABLE_NAMES[key]
        return {name: _rounded(value / divisor, decimals)}
    if key == "spec":
        summary = spec_summary(value)
        return {"blocks": summary} if summary is not None else {}
    return {}


class ReadableAttrsTrial:
    """An Optuna trial whose ``set_user_attr`` also records the readable companions of the attribute
    (:func:`readable_attrs`); everything else is the wrapped trial's."""

    def __init__(self, trial: Any) -> None:
        self._trial = trial

    def set_user_attr(self, key: str, value: Any) -> None:
        self._trial.set_user_attr(key, value)
        for name, readable in readable_attrs(key, value).items():
            self._trial.set_user_attr(name, readable)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)
