"""The per-device latency table: one small JSON file per device key, written atomically.

Contents (times in milliseconds):

* ``device``: the :class:`~.device.DeviceKey` the measurements belong to;
* ``blocks``: {entry key: median ms, IQR ms, samples, and a readable label} for every distinct block call measured
  (keys: :mod:`.calls`);
* ``points``: calibration points, whole models measured for real: (memory format, sum of their block entries,
  measured ms);
* ``overhead``: per memory format, the fit ``measured = a_ms + b x blocks_ms`` over those points (the per-model
  overhead is ``a_ms + (b - 1) x blocks_ms``; a ratio alone, a = 0, with fewer than 8 points) and ``band``, the
  relative error a prediction is trusted to (the 90th percentile of the fit's relative residuals, at least 3 %; at
  least 10 % with fewer than 5 points).

Location: ``-o``/an explicit path, else ``$SRBLOCKS_LATENCY_DIR/<device slug>.json``, else
``~/.cache/srblocks/latency/<device slug>.json``. Copy the file to a machine with the same key (same CPU model,
threads and torch version) and it predicts there too; a table is refused on a machine with another key.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SrblocksError
from ..fileio import write_text_atomic
from .device import DeviceKey

__all__ = ["LatencyTable", "LatencyTableError", "BlockEntry", "ModelPoint", "Overhead", "default_table_path",
           "load_table", "DEFAULT_BAND", "MIN_POINTS"]

FORMAT = "srblocks-latency-table"
VERSION = 1
#: relative error band of a table without calibration points
DEFAULT_BAND = 0.25
#: calibration points (per memory format) before a fit is trusted
MIN_POINTS = 3
#: calibration points (per memory format) from which the overhead has a constant and a slope
LINEAR_POINTS = 8
_MIN_BAND = 0.03
_FEW_POINTS_BAND = 0.10


class LatencyTableError(SrblocksError):
    """A latency table that cannot be read, or that belongs to another device."""


@dataclass(frozen=True)
class BlockEntry:
    """A measured block call: median and IQR (ms per call), samples taken, and a readable label."""

    block: str
    label: str
    ms: float
    iqr_ms: float
    samples: int


@dataclass(frozen=True)
class ModelPoint:
    """A whole model measured for real: its name, memory format, sum of its block entries (ms) and measured ms."""

    name: str
    memory_format: str
    blocks_ms: float
    measured_ms: float


@dataclass(frozen=True)
class Overhead:
    """``measured = a_ms + b x blocks_ms`` (ms), trusted to ``band`` (relative), fitted on ``points`` models."""

    a_ms: float = 0.0
    b: float = 1.0
    band: float = DEFAULT_BAND
    points: int = 0

    def apply(self, blocks_ms: float) -> float:
        """Predicted ms of a model whose block entries sum to ``blocks_ms`` (never below half of that sum)."""
        return max(0.5 * blocks_ms, self.a_ms + self.b * blocks_ms)


def fit_overhead(points: list[ModelPoint]) -> Overhead:
    """The overhead fit and its error band (from the relative residuals).

    With at least :data:`LINEAR_POINTS` points spread over different sizes: least squares ``measured = a + b x
    blocks`` (b kept in [0.5, 2]); with fewer, one ratio ``measured = b x blocks`` (b the median ratio, a = 0),
    which a few noisy points cannot tilt."""
    if not points:
        return Overhead()
    xs = [p.blocks_ms for p in points]
    ys = [p.measured_ms for p in points]
    if len(points) < LINEAR_POINTS and all(x > 0 for x in xs):
        b = min(2.0, max(0.5, statistics.median(y / x for x, y in zip(xs, ys))))
        a = 0.0
    elif len(points) >= LINEAR_POINTS and max(xs) > min(xs):
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        b = min(2.0, max(0.5, b))
        a = my - b * mx
    else:
        b, a = 1.0, statistics.median(y - x for x, y in zip(xs, ys))
    fitted = Overhead(a, b, DEFAULT_BAND, len(points))
    errors = sorted(abs(fitted.apply(x) - y) / y for x, y in zip(xs, ys) if y > 0)
    p90 = errors[min(len(errors) - 1, math.ceil(0.9 * len(errors)) - 1)] if errors else DEFAULT_BAND
    band = max(_MIN_BAND, p90, _FEW_POINTS_BAND if len(points) < 5 else 0.0)
    return Overhead(a, b, band, len(points))


def default_table_path(key: DeviceKey) -> Path:
    """Where the table of ``key`` lives by default (see the module doc)."""
    root = os.environ.get("SRBLOCKS_LATENCY_DIR")
    folder = Path(root) if root else Path.home() / ".cache" / "srblocks" / "latency"
    return folder / f"{key.slug()}.json"


@dataclass
class LatencyTable:
    """Block entries, calibration points and overhead fits of one device (see the module doc)."""

    device: DeviceKey
    blocks: dict[str, BlockEntry] = field(default_factory=dict)
    points: list[ModelPoint] = field(default_factory=list)

    def overhead(self, memory_format: str) -> Overhead:
        """The overhead fit of one memory format (uncalibrated: a = 0, b = 1, band 25 %)."""
        return fit_overhead([p for p in self.points if p.memory_format == memory_format])

    def add_point(self, point: ModelPoint, *, keep: int = 200) -> None:
        """Add a calibration point (the newest ``keep`` per memory format are kept)."""
        self.points.append(point)
        same = [p for p in self.points if p.memory_format == point.memory_format]
        if len(same) > keep:
            drop = same[0]
            self.points.remove(drop)

    def to_json(self) -> str:
        formats = sorted({p.memory_format for p in self.points})
        return json.dumps({
            "format": FORMAT, "version": VERSION, "device": self.device.as_dict(),
            "blocks": {k: asdict(v) for k, v in sorted(self.blocks.items())},
            "points": [asdict(p) for p in self.points],
            "overhead": {f: asdict(self.overhead(f)) for f in formats},
        }, indent=1)

    def save(self, path: str | os.PathLike[str], *, merge: bool = True) -> Path:
        """Write the table atomically (creating its folder). With ``merge``, entries another process wrote to the
        same file since it was read are kept (ours win on equal keys)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if merge and target.is_file():
            try:
                other = load_table(target, expect=self.device)
            except LatencyTableError:
                other = None
            if other is not None:
                self.blocks = {**other.blocks, **self.blocks}
                ours = {(p.name, p.memory_format, p.blocks_ms, p.measured_ms) for p in self.points}
                self.points = [p for p in other.points if (p.name, p.memory_format, p.blocks_ms,
                                                           p.measured_ms) not in ours] + self.points
        return write_text_atomic(target, self.to_json() + "\n")


def _parse(data: Any, where: str) -> LatencyTable:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LatencyTableError(f"{where}: not a srblocks latency table (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise LatencyTableError(f"{where}: table version {data.get('version')!r} is not supported (expected "
                                f"{VERSION}); calibrate again")
    try:
        device = DeviceKey.from_dict(data["device"])
        blocks = {str(k): BlockEntry(**v) for k, v in data.get("blocks", {}).items()}
        points = [ModelPoint(**p) for p in data.get("points", [])]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LatencyTableError(f"{where}: malformed latency table: {type(exc).__name__}: {exc}") from None
    for k, e in blocks.items():
        if not (isinstance(e.ms, (int, float)) and math.isfinite(e.ms) and e.ms >= 0):
            raise LatencyTableError(f"{where}: blocks.{k}: ms must be a finite number >= 0, got {e.ms!r}")
    for i, p in enumerate(points):
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in (p.blocks_ms, p.measured_ms)):
            raise LatencyTableError(f"{where}: points[{i}]: times must be finite numbers >= 0")
    return LatencyTable(device, blocks, points)


def load_table(path: str | os.PathLike[str], *, expect: DeviceKey | None = None) -> LatencyTable:
    """Read a table; with ``expect``, refuse one measured on another device key (the error says both)."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LatencyTableError(f"latency table {where} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LatencyTableError(f"cannot read latency table {where}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LatencyTableError(f"{where}: not valid JSON: {exc}") from None
    table = _parse(data, where)
    if expect is not None and table.device != expect:
        raise LatencyTableError(f"{where} was measured on {table.device.describe()}, but this is "
                                f"{expect.describe()}; run `srblocks latency calibrate` here")
    return table


def open_table(path: str | os.PathLike[str] | None, key: DeviceKey) -> tuple[LatencyTable, Path]:
    """The table at ``path`` (default: the device's default path), or a new empty one for ``key`` if the file does
    not exist yet: (table, its path)."""
    target = Path(path) if path is not None else default_table_path(key)
    if target.is_file():
        return load_table(target, expect=key), target
    return LatencyTable(key), target
