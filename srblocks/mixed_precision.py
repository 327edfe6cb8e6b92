"""Mixed-precision training (``amp="bf16"`` or ``"fp16"``): autocast for the forward pass and the loss, and for
fp16 a gradient scaler so that small gradients do not underflow.

* ``bf16``: ``torch.autocast(device, torch.bfloat16)``; bfloat16 has float32's exponent range, so no scaling is
  needed. On CUDA it needs a GPU with bf16 support (Ampere or newer); on CPU it runs through oneDNN (slower than
  float32 on CPUs without AMX/AVX512-BF16).
* ``fp16``: ``torch.autocast(device, torch.float16)`` with ``torch.amp.GradScaler``: the loss is multiplied by a
  dynamic scale before ``backward``, gradients are unscaled before clipping, and steps whose gradients hold
  inf/NaN are skipped (the scale then halves). CUDA only here.
* ``None`` (default): float32, no autocast, the trainer's exact float32 path.

Weights, optimizer state, EMA and checkpoints stay float32 in every mode; the loss is computed in float32 on the
(autocast) model output.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ContextManager

import torch

from .errors import SrblocksError

__all__ = ["AMP_MODES", "Precision", "check_amp", "precision_for"]

#: accepted values of ``TrainConfig.amp`` (besides None)
AMP_MODES = ("bf16", "fp16")


class AmpError(SrblocksError, ValueError):
    """A mixed-precision mode that is unknown or unsupported on the run's device."""


def check_amp(mode: str | None) -> None:
    """Raise :class:`AmpError` unless ``mode`` is None or one of :data:`AMP_MODES`."""
    if mode is not None and mode not in AMP_MODES:
        raise AmpError(f"amp must be one of {', '.join(AMP_MODES)} or None, got {str(mode)[:40]!r}")


@dataclass
class Precision:
    """How one training step runs: ``autocast()`` wraps forward + loss; ``scaler`` is a GradScaler (fp16) or None."""

    mode: str | None
    device_type: str
    scaler: Any | None = None

    def autocast(self) -> ContextManager[Any]:
        if self.mode is None:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.mode == "bf16" else torch.float16
        return torch.autocast(self.device_type, dtype=dtype)


def precision_for(mode: str | None, device: torch.device) -> Precision:
    """The :class:`Precision` of ``mode`` on ``device``.

    Raises:
        AmpError: unknown mode; fp16 off CUDA; bf16 on a GPU without bf16 support.
    """
    check_amp(mode)
    if mode is None:
        return Precision(None, device.type)
    if device.type not in ("cuda", "cpu"):
        raise AmpError(f"amp={mode!r} runs on cuda or cpu, not on {device}")
    if mode == "fp16":
        if device.type != "cuda":
            raise AmpError("amp='fp16' needs a CUDA device (use amp='bf16' on CPU)")
        return Precision(mode, "cuda", torch.amp.GradScaler("cuda"))
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise AmpError(f"amp='bf16': {torch.cuda.get_device_name(device)} has no bfloat16 support (use amp='fp16')")
    return Precision(mode, device.type)
