"""Checking specs against the numbers they claim (their ``expected:`` entries).

A value written as an int must match exactly; a string with an SI suffix, as papers print it (``"13.555G"``,
``"748K"``), must round to the same digits (tolerance: half a unit of its last digit); an explicit
``{value, abs | rel}`` gives its own tolerance. This is what the test suite and ``srblocks table`` run for every
shipped spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

from .build import build_model
from .profile import Profile, profile
from .spec.loader import LoadedSpec, load_spec, shipped_spec_names
from .spec.schema import ArchSpec, ExpectedEntry, ExpectedValue

__all__ = ["Target", "CheckRow", "parse_target", "check_entry", "compare_entry", "matching_entries", "check_spec",
           "check_all", "format_si"]

_SI = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_SI_PATTERN = re.compile(r"^\s*([0-9]+(?:\.([0-9]+))?)\s*([KMGT]?)\s*$")
METRICS = ("params", "macs", "acts", "convs")


@dataclass(frozen=True)
class Target:
    """An expected number with its absolute tolerance and how it was written."""

    value: float
    tolerance: float
    written: str

    def accepts(self, actual: float) -> bool:
        return abs(actual - self.value) <= self.tolerance * (1 + 1e-9)


def parse_target(raw: int | str | ExpectedValue) -> Target:
    """Turn an ``expected:`` value into a :class:`Target` (see module docstring for the three forms)."""
    if isinstance(raw, ExpectedValue):
        if raw.abs is None and raw.rel is None:
            return Target(raw.value, 0.0, f"{raw.value:g}")
        tol = raw.abs if raw.abs is not None else abs(raw.value) * raw.rel  # type: ignore[operator]
        return Target(raw.value, tol, f"{raw.value:g} ±{tol:g}")
    if isinstance(raw, bool):
        raise ValueError(f"expected value must be a number or string, got {raw!r}")
    if isinstance(raw, (int, float)):
        return Target(float(raw), 0.0, str(raw))
    match = _SI_PATTERN.match(raw)
    if not match:
        raise ValueError(f"cannot read expected value {raw!r} (use 123, '13.555G', '748K' or {{value, rel|abs}})")
    number, decimals, suffix = match.groups()
    unit = _SI[suffix]
    places = len(decimals) if decimals else 0
    return Target(float(number) * unit, 0.5 * 10 ** (-places) * unit, raw.strip())


def format_si(value: float) -> str:
    """Human-readable count: 13555000000 -> '13.555G'."""
    for suffix in ("T", "G", "M", "K"):
        if abs(value) >= _SI[suffix]:
            return f"{value / _SI[suffix]:.4g}{suffix}"
    return f"{value:g}"


@dataclass
class CheckRow:
    """One metric of one expected entry: target, measured value, and whether it passes."""

    spec: str
    when: dict[str, Any]
    lr_size: tuple[int, int] | None
    metric: str
    target: Target
    actual: float
    reference: str | None
    paper: Target | None = None

    @property
    def ok(self) -> bool:
        return self.target.accepts(self.actual)

    @property
    def paper_ok(self) -> bool | None:
        """Whether the measured value also meets the paper's figure (``expected.paper``); None without one."""
        return None if self.paper is None else self.paper.accepts(self.actual)

    def as_dict(self) -> dict[str, Any]:
        """JSON form (``srblocks table --json`` and ``srblocks summary --json``)."""
        return {"spec": self.spec, "when": self.when, "lr_size": self.lr_size, "metric": self.metric,
                "expected": self.target.written, "actual": self.actual, "ok": self.ok,
                "paper": self.paper.written if self.paper else None, "matches_paper": self.paper_ok,
                "reference": self.reference}


def check_entry(loaded: LoadedSpec, entry: ExpectedEntry) -> list[CheckRow]:
    """Build the spec with ``entry.when``, profile it at ``entry.lr_size`` and compare every stated metric."""
    model = build_model(loaded, **entry.when)
    needs_profile = any(getattr(entry, m) is not None for m in METRICS if m != "params")
    if needs_profile and entry.lr_size is None:
        raise ValueError(f"{loaded.source}: expected entry {entry.when} states MACs/acts/convs but no lr_size")
    measured = None
    if needs_profile:
        in_ch = next(iter(loaded.spec.inputs.values()))
        measured = profile(model, entry.lr_size, in_channels=in_ch if isinstance(in_ch, int) else 3)
    return compare_entry(loaded.spec, loaded.source, entry, sum(p.numel() for p in model.parameters()), measured)


def compare_entry(
    spec: ArchSpec, source: str, entry: ExpectedEntry, params: int, measured: Profile | None
) -> list[CheckRow]:
    """Compare one expected entry of ``spec`` (read from ``source``) with already measured numbers: ``params`` and
    ``measured``, the profile at ``entry.lr_size`` (None when the entry states params only)."""
    rows = []
    for metric in METRICS:
        raw = getattr(entry, metric)
        if raw is None:
            continue
        if metric == "params":
            actual: float = params
        else:
            if measured is None:
                raise ValueError(f"{source}: expected entry {entry.when}: {metric} needs a profile")
            actual = getattr(measured, metric)
            if metric == "macs":
                unknown = sorted(set(entry.macs_exclude) - set(measured.macs_by_op))
                if unknown:
                    raise ValueError(f"{source}: expected entry {entry.when}: macs_exclude names ops that "
                                     f"the model does not run: {unknown} (ops: {sorted(measured.macs_by_op)})")
                actual -= sum(measured.macs_by_op[op] for op in entry.macs_exclude)
        paper = entry.paper.get(metric)
        rows.append(CheckRow(spec.name, entry.when, entry.lr_size, metric, parse_target(raw), actual,
                             entry.reference, parse_target(paper) if paper is not None else None))
    return rows


def matching_entries(spec: ArchSpec, variables: dict[str, Any], lr_size: tuple[int, int]) -> list[ExpectedEntry]:
    """Expected entries of ``spec`` that describe a model built with ``variables`` and profiled at ``lr_size``."""
    return [e for e in spec.expected
            if all(variables.get(k) == v for k, v in e.when.items()) and e.lr_size in (None, tuple(lr_size))]


def check_spec(source: Any) -> Iterator[CheckRow]:
    """Every metric row of every expected entry of one spec."""
    loaded = source if isinstance(source, LoadedSpec) else load_spec(source)
    for entry in loaded.spec.expected:
        yield from check_entry(loaded, entry)


def check_all() -> Iterator[CheckRow]:
    """Rows for every shipped spec."""
    for name in shipped_spec_names():
        yield from check_spec(name)
