"""Named, versioned training protocols: the YAML files in ``search/protocols/`` (shipped as package data).

A protocol fixes everything that decides a trained model's quality except the architecture: scale, data and its
validation split, patch size, batch, iterations, learning-rate schedule, EMA and seeds. Two runs with the same
spec, protocol and seed on the same device give the same weights (see :mod:`srblocks.train`).

Format::

    name: ref_x4
    version: 1                 # bump when anything below changes meaning
    description: ...
    extends: other_protocol    # optional: that protocol with this file's keys on top (data/training merged key-wise)
    scale: 4
    data:
      description: ...         # what the default data is (the folder itself comes from --data or $SRBLOCKS_SHARED)
      val_count: 15            # images held out for validation, chosen by a salted hash of their relative path
      split_salt: ref_x4-v1
      test_sets: [Set5, Set14] # reported, never used to select
    training: {...}            # fields of srblocks.train.TrainConfig (iterations, batch_size, lr_patch_size, ...)
    seeds: [0, 1]

:func:`Protocol.content_hash` hashes everything that changes the result (not ``name``/``description``), so a
results store keys runs by what was run, not by what it was called.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import pydantic

from ..errors import SpecError
from ..spec.loader import format_pydantic_error

__all__ = ["Protocol", "ProtocolData", "ProtocolTraining", "load_protocol", "shipped_protocol_names"]

_MAX_EXTENDS = 8


class ProtocolData(pydantic.BaseModel):
    """Where the images come from and how they are split."""

    model_config = pydantic.ConfigDict(extra="forbid")

    description: str | None = None
    val_count: int = pydantic.Field(15, ge=1, description="held-out validation images")
    split_salt: str = pydantic.Field("srblocks", min_length=1, description="salt of the path hash that splits")
    test_sets: list[str] = pydantic.Field(default_factory=lambda: ["Set5", "Set14"])


class ProtocolTraining(pydantic.BaseModel):
    """The :class:`srblocks.train.TrainConfig` fields a protocol fixes (the others keep their defaults)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    iterations: int = pydantic.Field(ge=1)
    batch_size: int = pydantic.Field(16, ge=1)
    lr_patch_size: int = pydantic.Field(32, ge=4, description="LR patch side (px); HR is this x scale")
    lr: float = pydantic.Field(1e-3, gt=0)
    min_lr: float = pydantic.Field(1e-5, ge=0)
    warmup_iterations: int = pydantic.Field(0, ge=0)
    ema_decay: float | None = pydantic.Field(0.999, gt=0, lt=1)
    grad_clip: float | None = pydantic.Field(None, gt=0)
    fft_loss_weight: float = pydantic.Field(0.0, ge=0)
    augment: bool = True


class Protocol(pydantic.BaseModel):
    """A parsed protocol file (see the module docstring)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    name: str = pydantic.Field(min_length=1)
    version: int = pydantic.Field(ge=1)
    description: str | None = None
    extends: str | None = None
    scale: int = pydantic.Field(ge=1, le=16)
    data: ProtocolData = pydantic.Field(default_factory=ProtocolData)
    training: ProtocolTraining
    seeds: list[int] = pydantic.Field(default_factory=lambda: [0], min_length=1)

    def content(self) -> dict[str, Any]:
        """What changes a run's result (the hashed content): version, scale, split and training settings."""
        data = self.data.model_dump(exclude={"description", "test_sets"})
        return {"version": self.version, "scale": self.scale, "data": data, "training": self.training.model_dump()}

    def content_hash(self) -> str:
        """First 16 hex digits of the SHA-256 of :meth:`content` as canonical JSON."""
        text = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def train_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`srblocks.train.train` (``scale`` included)."""
        return {**self.training.model_dump(), "scale": self.scale}


def _protocol_dir() -> Path:
    return Path(str(resources.files("srblocks.protocols.files")))


def shipped_protocol_names() -> list[str]:
    """Names of the protocols shipped with the package (``search/protocols/*.yaml``)."""
    return sorted(p.stem for p in _protocol_dir().glob("*.yaml"))


def _find(ref: str | Path, relative_to: Path | None) -> Path:
    path = Path(ref)
    candidates = [path] if path.suffix in (".yaml", ".yml") else []
    if relative_to is not None:
        candidates.append(relative_to / path)
    candidates.append(_protocol_dir() / f"{path.stem if path.suffix else path.name}.yaml")
    for c in candidates:
        if c.is_file():
            return c.resolve()
    close = difflib.get_close_matches(str(ref), shipped_protocol_names(), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise SpecError(f"no protocol file or shipped protocol named {str(ref)!r} (shipped: "
                    f"{', '.join(shipped_protocol_names())}){hint}")


def _read(path: Path) -> dict[str, Any]:
    from ..spec.loader import read_yaml_file  # the spec limits: size, depth, expanded aliases

    raw = read_yaml_file(path, str(path), what="protocol")
    if not isinstance(raw, Mapping):
        raise SpecError(f"a protocol must be a YAML mapping, got {type(raw).__name__}", source=str(path))
    return dict(raw)


def _merged(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    raw = _read(path)
    base_ref = raw.get("extends")
    if base_ref is None:
        return raw
    if not isinstance(base_ref, str):
        raise SpecError(f"extends must be a protocol name or path, got {base_ref!r}", source=str(path), path="extends")
    base_path = _find(base_ref, path.parent)
    if base_path in seen or base_path == path:
        chain = " -> ".join(str(p) for p in (*seen, path, base_path))
        raise SpecError(f"extends cycle: {chain}", source=str(path), path="extends")
    if len(seen) >= _MAX_EXTENDS:
        raise SpecError(f"extends chain longer than {_MAX_EXTENDS}", source=str(path), path="extends")
    base = _merged(base_path, (*seen, path))
    out = dict(base)
    for key, value in raw.items():
        if key in ("data", "training") and isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            out[key] = {**base[key], **value}
        else:
            out[key] = value
    return out


def load_protocol(source: str | Path | Protocol) -> Protocol:
    """A protocol by shipped name (``"ref_x4"``), YAML path, or as is. Errors are :class:`SpecError` naming the
    file and YAML path."""
    if isinstance(source, Protocol):
        return source
    path = _find(source, None)
    raw = _merged(path, ())
    try:
        return Protocol.model_validate(raw)
    except pydantic.ValidationError as exc:
        where, message = format_pydantic_error(exc)
        raise SpecError(message, source=str(path), path=where) from None
