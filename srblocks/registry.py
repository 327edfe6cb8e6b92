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

**One channel name.** A block that works on a feature map of a given width calls that width ``dim`` (SAFM, HFAB,
CPD, RCAB, the MGA mask predictor, ...), as timm's blocks do. Only the plain layers that mirror a torch layer and
map one width to another (``conv``, ``conv_transpose``, ``project``, ``pixel_shuffle``, ``add``, ...) keep torch's
``in_channels`` / ``out_channels``. Arguments that were once named otherwise are declared with ``renamed=`` and
give an error that names the new spelling.

**Validated construction.** Registering a block wraps its ``__init__``: every construction, from a spec or
directly in Python (``SAFM(dim="a")``), is checked against the same pydantic model first, so bad arguments raise
:class:`BlockArgumentError` naming the class, the argument and the value instead of an error from deep inside
torch.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

import pydantic
import pydantic.json_schema
from torch import nn

from .errors import SrblocksError, brief, format_pydantic_error

__all__ = ["BlockInfo", "BlockArgumentError", "UnknownBlockError", "register_block", "get_block", "list_blocks", "block_names"]

ModuleT = TypeVar("ModuleT", bound=type[nn.Module])


class UnknownBlockError(SrblocksError, KeyError):
    """Raised for a block name that is not registered; the message lists the closest known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


class BlockArgumentError(SrblocksError, TypeError, ValueError):
    """Arguments a block's schema refuses (wrong type, out of range, unknown or renamed name, missing).

    Attributes:
        argument: the first offending argument name, or None when the problem is not one argument's.
        validation_error: the pydantic error behind it, when there is one (the spec layer locates it in YAML).
    """

    def __init__(self, message: str, *, argument: str | None = None,
                 validation_error: pydantic.ValidationError | None = None) -> None:
        super().__init__(message)
        self.argument = argument
        self.validation_error = validation_error


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
        renamed: former argument names -> current names (refused with a hint naming the current one).
    """

    name: str
    cls: type[nn.Module]
    args_model: type[pydantic.BaseModel]
    in_channels: str | None
    arity: int | None
    summary: str
    renamed: Mapping[str, str] = field(default_factory=dict)

    def validate_args(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """``args`` checked and coerced by the block's schema: a dict with every constructor argument.

        Raises:
            BlockArgumentError: naming the block, the argument and the (bounded) value; a former argument name
                names its replacement.
        """
        for old in args:
            if old in self.renamed:
                new = self.renamed[old]
                raise BlockArgumentError(f"{self.cls.__name__} ({self.name!r}): argument {old!r} is now called "
                                         f"{new!r}", argument=old)
        try:
            validated = self.args_model.model_validate(dict(args))
        except pydantic.ValidationError as exc:
            where, message = format_pydantic_error(exc)
            raise BlockArgumentError(f"{self.cls.__name__} ({self.name!r}): invalid arguments: {message}",
                                     argument=where.split(".")[0] or None, validation_error=exc) from None
        return {k: getattr(validated, k) for k in self.args_model.model_fields}

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
    validators = {"srblocks_bounded": pydantic.field_validator("*")(_check_bounded)}
    return pydantic.create_model(f"{cls.__name__}Args", __config__=config, __validators__=validators, **fields)


#: largest magnitude of a numeric block argument: far above any real width, kernel, count or factor, and below what
#: torch turns into an overflow deep in a layer's constructor
MAX_INT_ARGUMENT = 2**31 - 1


def _check_bounded(cls: type, value: Any) -> Any:
    """Every block argument: integers and floats within +-:data:`MAX_INT_ARGUMENT` (floats finite), also inside lists and
    tuples. (Applied to every field of every block, so a new block gets it without writing anything.)"""
    stack, seen = [value], 0
    while stack and seen < 10_000:
        item = stack.pop()
        seen += 1
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and abs(item) > MAX_INT_ARGUMENT:
            raise ValueError("integer out of range (|value| must be at most 2**31 - 1)")
        if isinstance(item, float) and not (math.isfinite(item) and abs(item) <= MAX_INT_ARGUMENT):
            raise ValueError("must be a finite number of magnitude at most 2**31 - 1")
        if isinstance(item, (list, tuple)):
            stack.extend(item)
    return value


def register_block(
    name: str, *, in_channels: str | None = "in_channels", arity: int | None = 1,
    renamed: Mapping[str, str] | None = None,
) -> Callable[[ModuleT], ModuleT]:
    """Class decorator registering an ``nn.Module`` under ``name`` and validating its construction (see module
    docstring). ``renamed`` maps former argument names to current ones."""

    def decorate(cls: ModuleT) -> ModuleT:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"block name {name!r} is already registered for {_REGISTRY[name].cls.__qualname__}")
        args_model = _args_model_from_signature(cls)
        if in_channels is not None and in_channels not in args_model.model_fields:
            raise TypeError(f"block {name!r}: in_channels argument {in_channels!r} is not a constructor argument")
        for old, new in (renamed or {}).items():
            if new not in args_model.model_fields or old in args_model.model_fields:
                raise TypeError(f"block {name!r}: renamed {old!r} -> {new!r} does not match the constructor")
        doc = inspect.getdoc(cls) or ""
        info = BlockInfo(name, cls, args_model, in_channels, arity, doc.splitlines()[0] if doc else "",
                         dict(renamed or {}))
        _REGISTRY[name] = info
        cls.block_name = name  # type: ignore[attr-defined]
        cls.__init__ = _validating_init(info, cls.__init__)  # type: ignore[method-assign]
        return cls

    return decorate


def _validating_init(info: BlockInfo, init: Callable[..., None]) -> Callable[..., None]:
    """``init`` preceded by :meth:`BlockInfo.validate_args` on its arguments (positional ones bound by name).

    Every call validates, including a subclass's ``super().__init__(...)``: the arguments are then checked against
    the registered class's own schema, which is the one they are for."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        for old in kwargs:
            if old in info.renamed:
                info.validate_args({old: kwargs[old]})  # raises, naming the current spelling
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as exc:
            raise BlockArgumentError(f"{info.cls.__name__} ({info.name!r}): {exc}") from None
        values = dict(bound.arguments)
        values.pop(next(iter(signature.parameters)))
        init(self, **info.validate_args(values))

    return __init__


def _ensure_builtin_blocks() -> None:
    """Register srblocks' own blocks (importing ``srblocks.blocks``) before the registry is read; ``import srblocks``
    itself is lazy, so nothing else guarantees they are there."""
    if "srblocks.blocks" not in sys.modules:
        importlib.import_module("srblocks.blocks")


def get_block(name: str) -> BlockInfo:
    """Look up a block; unknown names raise :class:`UnknownBlockError` naming the closest registered names."""
    _ensure_builtin_blocks()
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
    _ensure_builtin_blocks()
    return sorted(_REGISTRY)


def list_blocks() -> dict[str, dict[str, Any]]:
    """Registered blocks with their summary, input arity, channel argument and argument JSON schema."""
    _ensure_builtin_blocks()
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
