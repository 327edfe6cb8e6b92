"""The device key of a latency table: which machine, backend and settings its measurements are valid for.

A table measured on one machine predicts for another only if both have the same key: the same backend (``torch-cpu``,
``torch-cuda``, later ``onnxruntime-cpu``, ``openvino-cpu``, ...), the same CPU model (from ``/proc/cpuinfo``) or GPU
name, the same number of CPU threads, and the same backend library version. The memory format is *not* part of the
device key: one table holds entries of both layouts, each block entry keyed by its own layout (see :mod:`.calls`).
"""

from __future__ import annotations

import hashlib
import platform
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Mapping

__all__ = ["DeviceKey", "cpu_model"]


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; else what :mod:`platform` reports)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@dataclass(frozen=True)
class DeviceKey:
    """Where latencies were measured.

    Attributes:
        backend: ``torch-cpu``, ``torch-cuda``, or the name another runner gives (``onnxruntime-cpu``, ...).
        device: CPU model name or GPU name.
        threads: CPU intra-op threads (None for GPU backends).
        software: backend library and version, e.g. ``torch 2.14.1``.
    """

    backend: str
    device: str
    threads: int | None
    software: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DeviceKey":
        threads = data.get("threads")
        if not isinstance(data.get("backend"), str) or not isinstance(data.get("device"), str) or not isinstance(
                data.get("software"), str) or not (threads is None or isinstance(threads, int)):
            raise ValueError("device must have string backend/device/software and an integer or null threads")
        return cls(data["backend"], data["device"], threads, data["software"])

    def describe(self) -> str:
        """``"torch-cpu on Intel(R) Xeon(R) ... , 2 threads, torch 2.14.1"``."""
        threads = f", {self.threads} threads" if self.threads is not None else ""
        return f"{self.backend} on {self.device}{threads}, {self.software}"

    def slug(self) -> str:
        """A file-name-safe name unique to this key: ``torch-cpu_2t_torch-2.14.1_<hash of the whole key>``."""
        digest = hashlib.sha1(repr(sorted(self.as_dict().items())).encode()).hexdigest()[:10]
        threads = f"_{self.threads}t" if self.threads is not None else ""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.backend}{threads}_{self.software}") + f"_{digest}"
