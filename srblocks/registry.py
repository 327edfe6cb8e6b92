"""The block registry: stable names -> block classes with validated argument schemas.

A block is a plain ``torch.nn.Module`` whose constructor takes keyword arguments with type hints. Registering it
derives a pydantic model of those arguments from the constructor signature (one mechanism for every block, no
hand-written schema), and records which argument receives the *inferred* input channel count so that specs never
repeat channel numbers. After construction every block exposes ``out_channels: int``.

Usage::

    @register_block("safm", in_channels="dim")
    class SAFM(nn.Module):
        def __init__(self, dim: PositiveInt, n_levels: PositiveInt = 4) -> None: ...

``in_channels`` names the constructor argument that receives the channel count of the block's input. For blocks
taking several tensors (``arity`` > 1 or ``None`` for "any number >= 1") that argument receives a list of ints, one
per input, in input order.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import pydantic
import pydantic.json_schema
from torch import nn

from .errors import SrblocksError, brief

__all__ = ["BlockInfo", "UnknownBlockError", "register_block", "get_block", "list_blocks", "block_names"]

ModuleT = TypeVar("ModuleT", bound=type[nn.Module])


class UnknownBlockError(SrblocksError, KeyError):
    """Raised for a block name that is not registered; the message lists the closest known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


@dataclass(frozen=True)
class BlockInfo:
    """What the assembler knows about one registered block.

    Attributes:
        name: stable registry name used in specs (``"safm"``).
        cls: the ``nn.Module`` subclass.
        args_model: pydantic model of the constructor's keyword arguments (extra arguments forbidden).
        in_channels: constructor argument filled with the inferred input channels, or None (block ignores them).
        arity: number of tensor inputs of ``forward``; None means any number >= 1.
        summary: first line of the class docstring.
    """

    name: str
    cls: type[nn.Module]
    args_model: type[pydantic.BaseModel]
    in_channels: str | None
    arity: int | None
    summary: str

    def schema(self) -> dict[str, Any]:
        """JSON schema of the block's arguments (what ``srblocks blocks`` prints).

        Arguments typed as Python objects with no JSON form (sub-graph modules such as ``mask_guided``'s ``base``)
        appear as ``{"type": "object", "description": "<class> (a sub-graph in specs)"}``.
        """
        return self.args_model.model_json_schema(schema_generator=_ArgsJsonSchema)

    def field_types(self) -> dict[str, Any]:
        """Mapping argument name -> annotation (used to decide whether a YAML string is an expression)."""
        return {k: f.annotation for k, f in self.args_model.model_fields.items()}


class _ArgsJsonSchema(pydantic.json_schema.GenerateJsonSchema):
    """JSON schema generator that describes arbitrary-type (isinstance) fields instead of failing on them."""

    def is_instance_schema(self, schema: Any) -> dict[str, Any]:
        return {"type": "object", "description": f"{schema['cls'].__name__} (a sub-graph in specs)"}


_REGISTRY: dict[str, BlockInfo] = {}


def _args_model_from_signature(cls: type[nn.Module]) -> type[pydantic.BaseModel]:
    sig = inspect.signature(cls.__init__)
    hints = inspect.get_annotations(cls.__init__, eval_str=True)
    fields: dict[str, Any] = {}
    for pname, param in list(sig.parameters.items())[1:]:  # skip self
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"block {cls.__name__}: *args/**kwargs are not allowed in a block constructor")
        annotation = hints.get(pname, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (annotation, default)
    config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True, strict=False)
    return pydantic.create_model(f"{cls.__name__}Args", __config__=config, **fields)


def register_block(
    name: str, *, in_channels: str | None = "in_channels", arity: int | None = 1
) -> Callable[[ModuleT], ModuleT]:
    """Class decorator registering an ``nn.Module`` under ``name`` (see module docstring)."""

    def decorate(cls: ModuleT) -> ModuleT:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"block name {name!r} is already registered for {_REGISTRY[name].cls.__qualname__}")
        args_model = _args_model_from_signature(cls)
        if in_channels is not None and in_channels not in args_model.model_fields:
            raise TypeError(f"block {name!r}: in_channels argument {in_channels!r} is not a constructor argument")
        doc = inspect.getdoc(cls) or ""
        _REGISTRY[name] = BlockInfo(name, cls, args_model, in_channels, arity, doc.splitlines()[0] if doc else "")
        cls.block_name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def get_block(name: str) -> BlockInfo:
    """Look up a block; unknown names raise :class:`UnknownBlockError` naming the closest registered names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5) if len(name) <= 100 else []
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownBlockError(f"unknown block {brief(name)}{hint} (see srblocks.list_blocks())") from None
    except TypeError:  # an unhashable name
        raise UnknownBlockError(f"unknown block {brief(name)} (see srblocks.list_blocks())") from None


def block_names() -> list[str]:
    """All registered block names, sorted."""
    return sorted(_REGISTRY)


def list_blocks() -> dict[str, dict[str, Any]]:
    """Registered blocks with their summary, input arity, channel argument and argument JSON schema."""
    return {
        n: {
            "class": f"{i.cls.__module__}.{i.cls.__qualname__}",
            "summary": i.summary,
            "arity": i.arity,
            "in_channels_arg": i.in_channels,
            "args": i.schema(),
        }
        for n, i in sorted(_REGISTRY.items())
    }
