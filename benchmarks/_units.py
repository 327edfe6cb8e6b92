"""Resumable units of work for the long benchmarks: each unit is a named callable that records its own result in a
results store (and returns at once when it is already there); several processes share a list of units by claiming
each one with an exclusively created file before running it. A claim whose process is gone is taken over."""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path
from typing import Callable

from srblocks.protocols import ResultsStore

Unit = tuple[str, Callable[[], None]]


def _claim_path(claims: Path, name: str) -> Path:
    return claims / hashlib.sha256(name.encode()).hexdigest()[:16]


def claim(claims: Path, name: str) -> bool:
    """Claim unit ``name`` for this process; False when a live process holds it."""
    claims.mkdir(parents=True, exist_ok=True)
    path = _claim_path(claims, name)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text().split()[0])
                os.kill(pid, 0)
                return pid == os.getpid()
            except (ValueError, IndexError, ProcessLookupError, FileNotFoundError):
                path.unlink(missing_ok=True)
                continue
            except PermissionError:
                return False
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {name}\n")
        return True
    return False


def run_units(todo: list[Unit], store: ResultsStore, claims: Path, max_minutes: float | None = None) -> None:
    """Run every unclaimed unit in order; a failing unit is recorded (``kind: failure``) and the rest go on."""
    deadline = time.time() + max_minutes * 60 if max_minutes else None
    for n, (name, unit) in enumerate(todo, 1):
        if deadline is not None and time.time() > deadline:
            print("time limit reached; rerun to continue", flush=True)
            break
        if not claim(claims, name):
            continue
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                unit()
        except Exception as exc:  # noqa: BLE001 - one failing unit is recorded and the rest go on
            store.append({"kind": "failure", "unit": name, "at": time.time()}, {"error": f"{type(exc).__name__}: {exc}"})
            print(f"[{n}/{len(todo)}] {name}: FAILED {type(exc).__name__}: {exc}", flush=True)
            continue
        finally:
            _claim_path(claims, name).unlink(missing_ok=True)
        dt = time.perf_counter() - t0
        if dt > 1:
            print(f"[{n}/{len(todo)}] {name}: {dt:.0f} s", flush=True)
