"""Runners: the one extension point between the latency model and an inference backend.

A runner knows how to run one forward pass of a module on its backend, and which device key its measurements
belong to. Everything else (interleaved timing, the table, prediction, calibration, the search) only calls runners,
so a new backend is one class:

.. code-block:: python

    class OrtRunner:                       # e.g. in srblocks/export/ (ONNX Runtime)
        def key(self) -> DeviceKey:        # backend "onnxruntime-cpu", software f"onnxruntime {ort.__version__}"
            ...
        def session(self):                 # set the backend's thread count etc. for the measurement
            return contextlib.nullcontext()
        def prepare(self, module, inputs): # export `module` at these input shapes, build a session once...
            sess = ...
            feeds = {...}
            return lambda: sess.run(None, feeds)   # ...and return a callable that runs one synchronised forward

:func:`TorchRunner` covers torch eager on CPU (both memory formats: the layout is the module's and the inputs', see
:mod:`.calls`) and on CUDA (``device="cuda"``; each call synchronises).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, ContextManager, Iterator, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from ..errors import SrblocksError
from .device import DeviceKey, cpu_model

__all__ = ["Runner", "TorchRunner"]


@runtime_checkable
class Runner(Protocol):
    """How to run (and identify) forward passes on one backend."""

    def key(self) -> DeviceKey:
        """The device key of everything this runner measures."""

    def session(self) -> ContextManager[Any]:
        """A context in which measurements run (e.g. with the runner's thread count set)."""

    def prepare(self, module: nn.Module, inputs: Sequence[torch.Tensor]) -> Callable[[], Any]:
        """A callable running one complete, synchronised forward pass of ``module`` (eval mode) on ``inputs``
        (CPU tensors with the shapes, dtype and memory format to measure)."""


class TorchRunner:
    """torch eager in ``inference_mode``, on CPU with ``threads`` intra-op threads (default: the current number), or
    on CUDA (``device="cuda"`` or ``"cuda:N"``; the module is copied to the GPU, calls synchronise)."""

    def __init__(self, device: str | torch.device = "cpu", threads: int | None = None) -> None:
        self.device = torch.device(device)
        if self.device.type not in ("cpu", "cuda"):
            raise SrblocksError(f"latency runner: device must be cpu or cuda, got {str(device)!r}")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SrblocksError("latency runner: device cuda requested but torch has no CUDA device here")
        if threads is not None and threads < 1:
            raise SrblocksError(f"latency runner: --threads must be >= 1, got {threads}")
        self.threads = threads if threads is not None else (None if self.device.type == "cuda"
                                                            else torch.get_num_threads())

    def key(self) -> DeviceKey:
        if self.device.type == "cuda":
            return DeviceKey("torch-cuda", torch.cuda.get_device_name(self.device), None,
                             f"torch {torch.__version__}, CUDA {torch.version.cuda}")
        return DeviceKey("torch-cpu", cpu_model(), self.threads, f"torch {torch.__version__}")

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def prepare(self, module: nn.Module, inputs: Sequence[torch.Tensor]) -> Callable[[], Any]:
        module.eval()
        if self.device.type == "cpu":
            args = tuple(inputs)

            def run_cpu() -> None:
                with torch.inference_mode():
                    module(*args)

            return run_cpu
        on_device = copy.deepcopy(module).to(self.device)
        args = tuple(t.to(self.device) for t in inputs)
        device = self.device

        def run_cuda() -> None:
            with torch.inference_mode():
                on_device(*args)
            torch.cuda.synchronize(device)

        return run_cuda
