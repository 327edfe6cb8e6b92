"""An append-only results store: one JSON line per finished unit of work, so long experiments resume in pieces.

Each record carries a ``key`` (a flat mapping of strings and numbers, e.g. ``{"kind": "protocol", "spec_hash": ...,
"protocol_hash": ..., "seed": 0}``); :meth:`ResultsStore.has` answers whether a unit with that key is done, so a
rerun skips it. Appends take an exclusive ``fcntl`` lock on the file, are written as one ``write`` of a complete
line and flushed with ``fsync``, so several processes (or hosts on a shared file system with working locks) can
append to one store. A torn last line (power loss mid-append) is ignored with a warning on reading and never
rewritten: the record it would have been is simply redone.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: appends are still single writes, just not locked
    fcntl = None  # type: ignore[assignment]

__all__ = ["ResultsStore", "key_string"]


def key_string(key: Mapping[str, Any]) -> str:
    """Canonical text of a key (sorted JSON), the identity of a unit of work."""
    return json.dumps(dict(key), sort_keys=True, separators=(",", ":"))


def _finite(value: Any) -> Any:
    """JSON cannot hold NaN/inf: they are stored as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class ResultsStore:
    """A JSON-lines file of finished units of work (see the module docstring).

    Args:
        path: the ``.jsonl`` file (created with its folder on the first append).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def records(self, **match: Any) -> list[dict[str, Any]]:
        """Every complete record, in file order; ``match`` keeps those whose ``key`` has these values."""
        out = []
        for record in self._read():
            key = record.get("key", {})
            if all(key.get(k) == v for k, v in match.items()):
                out.append(record)
        return out

    def _read(self) -> Iterator[dict[str, Any]]:
        if not self.path.is_file():
            return
        with self.path.open("r", encoding="utf-8") as f:
            lines = f.read().split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                last = number == len(lines) or (number == len(lines) - 1 and not lines[-1])
                where = "torn last line (an interrupted append)" if last else "unreadable line"
                warnings.warn(f"{self.path}:{number}: {where} ignored; its unit of work will be redone",
                              stacklevel=3)
                continue
            if isinstance(record, dict) and isinstance(record.get("key"), dict):
                yield record

    def done_keys(self) -> set[str]:
        """:func:`key_string` of every finished unit."""
        return {key_string(r["key"]) for r in self._read()}

    def has(self, key: Mapping[str, Any]) -> bool:
        """Whether a unit with exactly this key is recorded."""
        return key_string(key) in self.done_keys()

    def get(self, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first record with exactly this key, or None."""
        wanted = key_string(key)
        return next((r for r in self._read() if key_string(r["key"]) == wanted), None)

    def append(self, key: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
        """Append ``{"key": key, **record}`` as one line (locked, fsynced) and return it. A line left torn by an
        earlier interrupted append is terminated first, so it cannot swallow this record."""
        full = _finite({"key": dict(key), **{k: v for k, v in record.items() if k != "key"}})
        line = json.dumps(full, sort_keys=False, separators=(",", ":"), allow_nan=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                f.seek(0, os.SEEK_END)
                if f.tell() > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        f.write(b"\n")
                f.write(line.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            finally:
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return full
