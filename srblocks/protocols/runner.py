"""Run a spec under a protocol: build with the seed, train on the protocol's split, score val and the test sets,
append one record to a results store (skipped when the store already holds it).

A record (one JSON line) holds::

    key:       {kind: "protocol", spec_hash, protocol_hash, data, seed}
    spec_name, protocol, spec (the mapping when the spec was given as one; else its source path)
    val_psnr, val_curve [[iteration, psnr], ...], test_psnr {Set5: .., Set14: ..}   (dB, the spec's Y convention)
    params, macs (deploy form, at ``macs_lr_size``), iterations, wall_s (training + validation), eval_s
    machine {host, cpu, threads, torch, device}, finished (UTC ISO time)

The PSNR convention is the papers': Y of YCbCr, ``scale`` pixels shaved, and the spec's Y rounding.

Under ``torchrun`` every rank trains (DistributedDataParallel, :func:`srblocks.train.train`) and only rank 0 scores
the test sets, measures the cost and appends the record (with ``world_size``); the other ranks return
``{"key": ..., "rank": R}``. The store and ``work_dir`` must be the same files for every rank (one node, or a
shared file system). A mixed-precision run (``amp``) is another unit of work: its key holds ``amp``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from ..build import build_model, model_info
from ..deploy import deploy
from ..evaluate import evaluate
from ..profile import count_params, profile
from .protocol import Protocol, load_protocol
from .splits import RunData, resolve_data
from .store import ResultsStore, key_string

__all__ = ["run_protocol", "protocol_key", "machine_info", "deploy_cost", "MACS_LR_SIZE"]

#: LR size of the recorded MACs: x4 output 720x1280, the size the papers' tables use.
MACS_LR_SIZE = (180, 320)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Where a run ran: host, CPU model, torch threads, torch version and the device (GPU name on CUDA)."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return {"host": socket.gethostname(), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "device": name}


def deploy_cost(model: torch.nn.Module, lr_size: tuple[int, int] = MACS_LR_SIZE) -> dict[str, float]:
    """Params and MACs (fvcore convention) of the deploy form of ``model`` (FMEN blocks re-parameterized), at
    ``lr_size`` (H, W)."""
    has_train_form = any(hasattr(m, "reparameterize") for m in model.modules())
    inference = deploy(copy.deepcopy(model).cpu()) if has_train_form else copy.deepcopy(model).cpu()
    measured = profile(inference, lr_size)
    return {"params": int(count_params(inference)), "macs": float(measured.macs),
            "peak_memory_bytes": float(measured.peak_memory_bytes)}


def protocol_key(spec_hash: str, protocol: Protocol, data: RunData, seed: int) -> dict[str, Any]:
    """The store key of one run: what was trained, how, on what, with which seed."""
    return {"kind": "protocol", "spec_hash": spec_hash, "protocol_hash": protocol.content_hash(),
            "data": data.fingerprint(), "seed": int(seed)}


def _build(spec: Any, protocol: Protocol, seed: int, overrides: Mapping[str, Any]) -> torch.nn.Module:
    torch.manual_seed(seed)  # the initial weights depend on the seed
    return build_model(spec, **{"scale": protocol.scale, **overrides})


def run_protocol(
    spec: str | os.PathLike[str] | Mapping[str, Any],
    protocol: str | os.PathLike[str] | Protocol = "ref_x4",
    *,
    seed: int | None = None,
    data: str | os.PathLike[str] | RunData | None = None,
    tests: Mapping[str, str | os.PathLike[str]] | None = None,
    store: ResultsStore | str | os.PathLike[str] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    label: str | None = None,
    extra: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    val_every: int | None = None,
    amp: str | None = None,
) -> dict[str, Any]:
    """Train ``spec`` under ``protocol`` with ``seed`` and return its record (see the module docstring).

    Args:
        spec: a shipped spec name, a YAML path or a spec mapping (a search sample); built at the protocol's scale.
        protocol: a shipped protocol name, a YAML path or a :class:`Protocol`.
        seed: the run's seed (default: the protocol's first seed). Initial weights and data order follow it.
        data: training folder (default ``$SRBLOCKS_SHARED/data/train``) or already resolved :class:`RunData`.
        tests: name -> folder of the reported test sets (default: the protocol's, found beside the data).
        store: a results store (or its path): a run it holds is returned without training (with ``reused: True``);
            a new one is appended.
        work_dir: folder for the run's resumable checkpoint (``<work_dir>/<key digest>/``): an interrupted run
            continues from its last checkpoint (every 250 iterations) with identical results. Default: none.
        device, threads: as :func:`srblocks.train.train` (default CUDA when available).
        label: a readable name recorded as ``spec_name`` (default: the spec's name).
        extra: more fields to record (e.g. which benchmark asked for the run).
        overrides: values of the spec's variables (``{"dim": 24}``); part of the spec's content hash.
        val_every: validate every K iterations (default: 5 times per run); the last iteration always validates.
        amp: mixed precision, ``"bf16"`` or ``"fp16"`` (:mod:`srblocks.mixed_precision`); default float32.

    Raises:
        SpecError: bad spec or protocol.  DataNotFound: no data.  TrainingDiverged: the loss became NaN/inf.
    """
    from ..distributed import world_from_env
    from ..mixed_precision import check_amp
    from ..train import CHECKPOINT_NAME, train

    check_amp(amp)
    world = world_from_env()
    proto = load_protocol(protocol)
    run_seed = proto.seeds[0] if seed is None else int(seed)
    run_data = data if isinstance(data, RunData) else resolve_data(proto, data, dict(tests) if tests is not None else None)
    results = store if isinstance(store, ResultsStore) or store is None else ResultsStore(store)
    model = _build(spec, proto, run_seed, overrides or {})
    info = model_info(model)
    key = protocol_key(info.content_hash(), proto, run_data, run_seed)
    if amp is not None:  # float32 keys stay as they were
        key["amp"] = amp
    if results is not None:
        done = results.get(key)
        if done is not None:
            return {**done, "reused": True}
    run_dir = None
    if work_dir is not None:
        run_dir = Path(work_dir) / hashlib.sha256(key_string(key).encode()).hexdigest()[:16]
    resume = run_dir is not None and (run_dir / CHECKPOINT_NAME).is_file()
    iterations = proto.training.iterations
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        machine = machine_info(device)
        result = train(model, run_data.train, val_data=run_data.val, seed=run_seed, device=device,
                       val_every=val_every or max(1, iterations // 5), checkpoint_every=250, out_dir=run_dir, resume=resume,
                       progress=progress, amp=amp, **proto.train_options())
        if world is not None and not world.is_main:
            return {"key": key, "rank": world.rank}
        t0 = time.perf_counter()
        test_psnr = {name: round(float(evaluate(result.model, folder, compute_ssim=False).mean_psnr), 4)
                     for name, folder in run_data.tests.items()}
        eval_s = time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous_threads)
    cost = deploy_cost(result.model)
    record = {
        "spec_name": label or info.spec.name,
        "protocol": proto.name,
        "spec": dict(spec) if isinstance(spec, Mapping) else str(spec),
        "overrides": dict(overrides or {}),
        "val_psnr": round(float(result.final_psnr), 4) if result.final_psnr is not None else None,
        "val_curve": [[v.iteration, round(v.psnr, 4)] for v in result.validations],
        "test_psnr": test_psnr,
        "params": cost["params"],
        "macs": cost["macs"],
        "macs_lr_size": list(MACS_LR_SIZE),
        "iterations": result.iterations,
        "wall_s": round(result.elapsed, 1),
        "eval_s": round(eval_s, 1),
        "resumed": bool(resume),
        "machine": machine,
        **({"amp": amp} if amp is not None else {}),
        **({"world_size": world.size} if world is not None else {}),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(dict(extra) if extra else {}),
    }
    if results is not None:
        return results.append(key, record)
    return {"key": key, **record}
