"""Loading checkpoints: official state_dicts (through the spec's key mapping) and our own files.

Accepted files: PyTorch files read with ``torch.load(..., weights_only=True)`` and ``.safetensors``. Wrappers
(``params_ema``, ``params``, ``state_dict``, ``model``, ``net``, ``netG``) are unwrapped and a leading ``module.``
(DataParallel) prefix is stripped. Loading is strict: any missing, unexpected or mis-shaped key is an error that lists
them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .build import model_info

__all__ = ["WeightsError", "read_state_dict", "official_to_model_keys", "load_weights", "save_weights"]

WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "netG", "generator")
PREFIXES = ("module.", "netG.", "model.")


class WeightsError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message lists the offending keys."""


def _unwrap(obj: Any, origin: str) -> dict[str, torch.Tensor]:
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        else:
            tops = ", ".join(map(str, list(obj)[:8]))
            raise WeightsError(f"{origin}: not a state_dict and no known wrapper key (top-level keys: {tops})")
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{origin}: expected a state_dict mapping, got {type(obj).__name__}")
    state = dict(obj)
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A flat state_dict from a file or mapping (unwrapped, ``module.`` stripped, tensors on CPU)."""
    if isinstance(source, Mapping):
        return _unwrap(source, "<state_dict>")
    path = Path(source)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one clear error
        raise WeightsError(f"cannot read weights {str(path)!r}: {type(exc).__name__}: {exc}") from None
    return _unwrap(obj, str(path))


def official_to_model_keys(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official keys with the spec's ``official_checkpoint`` regex renames (and drop listed keys)."""
    mapping = model_info(model).spec.official_checkpoint
    drops = [re.compile(p) for p in mapping.drop]
    renames = [(re.compile(r.pattern), r.replacement) for r in mapping.renames]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if any(d.fullmatch(key) for d in drops):
            continue
        new = key
        for pattern, replacement in renames:
            new = pattern.sub(replacement, new)
        if new in out:
            raise WeightsError(f"official keys collide after renaming: {key!r} -> {new!r}")
        out[new] = value
    return out


def load_weights(
    model: nn.Module, source: str | Path | Mapping[str, Any], *, official: bool = False, strict: bool = True
) -> nn.Module:
    """Load weights into ``model`` in place and return it.

    Args:
        model: a model from :func:`srblocks.build_model` (or any module when ``official`` is False).
        source: a checkpoint path or a state_dict mapping.
        official: the keys are the official implementation's; rename them through the spec's mapping.
        strict: every key must match (names and shapes); errors list the first offending keys.
    """
    state = read_state_dict(source)
    if official:
        state = official_to_model_keys(model, state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:6])}"
                        f"{' ...' if len(unexpected) > 6 else ''}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {'; '.join(mismatched[:4])}")
    if problems:
        hint = "" if official else " (official checkpoint? pass official=True)"
        raise WeightsError("weights do not fit the model: " + " | ".join(problems) + hint)
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=strict)
    return model


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Save ``model.state_dict()`` as ``.safetensors`` (by suffix) or a torch file readable with weights_only."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
