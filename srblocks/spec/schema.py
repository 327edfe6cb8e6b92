"""The pydantic schema of an architecture spec (the YAML files under ``arch_specs/``).

A spec is a graph of nodes. Each node names a registered block (or op) and its inputs; a node without ``inputs``
takes the previous node's output (sequential sugar); ``repeat`` expands a body of nodes N times with an index
variable; argument values may be expressions over ``variables`` (``3 * scale ** 2``), per-repeat lists
(``{each: [12, 16, 20, 24]}``) or sub-graphs (a mapping with ``nodes:``, built into a module and passed to the
block). Ids and input references are templates: ``"feats.{i}"``, ``"feats.{n_blocks - 1}"``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from .limits import MAX_DRY_RUN_SIDE

__all__ = [
    "NodeSpec",
    "RepeatSpec",
    "GraphSpec",
    "ExpectedValue",
    "ExpectedEntry",
    "OfficialCheckpoint",
    "KeyRename",
    "ArchSpec",
    "Each",
]


#: a positive image side in pixels, at most MAX_DRY_RUN_SIDE (dry runs, reproduction sizes)
Side = Annotated[int, Field(ge=1, le=MAX_DRY_RUN_SIDE)]


def _nested_repeat(items: Any, inside: bool = False) -> bool:
    """True when a parsed regex has an unbounded repeat inside another repeat (``(a+)+``: exponential time)."""
    from re import _constants as c, _parser  # type: ignore[attr-defined]

    for op, av in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            low, high, sub = av
            unbounded = high == c.MAXREPEAT or high > 1
            if inside and unbounded:
                return True
            if _nested_repeat(sub, inside or unbounded):
                return True
        elif op == c.SUBPATTERN:
            if _nested_repeat(av[-1], inside):
                return True
        elif op == c.BRANCH:
            if any(_nested_repeat(branch, inside) for branch in av[1]):
                return True
        elif op in (c.ASSERT, c.ASSERT_NOT):
            if _nested_repeat(av[1], inside):
                return True
        elif op == c.GROUPREF_EXISTS:
            if any(b is not None and _nested_repeat(b, inside) for b in av[1:]):
                return True
        elif isinstance(av, _parser.SubPattern):
            if _nested_repeat(av, inside):
                return True
    return False


def _safe_regex(pattern: str) -> str:
    """A regular expression a spec may apply to checkpoint keys: valid, and without nested repeats, which can
    take exponential time (a few bytes must not hang loading)."""
    from re import _parser  # type: ignore[attr-defined]

    try:
        re.compile(pattern)
        nested = _nested_repeat(_parser.parse(pattern))
    except (re.error, RecursionError, OverflowError) as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    if nested:
        raise ValueError("a repeat inside a repeat (like (a+)+) can take exponential time; write it without")
    return pattern


Regex = Annotated[str, Field(max_length=1000), AfterValidator(_safe_regex)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Each(_Strict):
    """Per-repeat argument list: inside a ``repeat`` of N, the i-th repeat gets ``each[i]`` (length must be N)."""

    each: list[Any]


class NodeSpec(_Strict):
    """One node: ``id`` (template), ``block`` (registered name), ``inputs`` (templates; default: previous node)."""

    id: str = Field(min_length=1)
    block: str = Field(min_length=1)
    inputs: list[str] | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    note: str | None = None

    @field_validator("inputs", mode="before")
    @classmethod
    def _single_input(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RepeatSpec(_Strict):
    """``repeat: N`` copies of ``nodes`` with the index variable ``index`` (default ``i``) = 0..N-1 in scope."""

    repeat: int | str
    index: str = "i"
    nodes: list[Union[NodeSpec, "RepeatSpec"]]


class GraphSpec(_Strict):
    """A (sub-)graph: named inputs with their channel counts, nodes, and the output node id (default: last node).

    A sub-graph may list several outputs; its module then returns a tuple in that order."""

    inputs: dict[str, int | str] = Field(default_factory=lambda: {"input": 3}, min_length=1)
    nodes: list[Union[NodeSpec, RepeatSpec]] = Field(min_length=1)
    output: str | list[str] | None = None


class ExpectedValue(_Strict):
    """A reproduction target with an explicit tolerance (absolute ``abs`` or relative ``rel``)."""

    value: float
    abs: float | None = None
    rel: float | None = None


class ExpectedEntry(_Strict):
    """Numbers a spec must hit for one setting of its variables (``when``), checked by the test suite.

    Values: an int (exact), a string with an SI suffix as printed in the paper (``"13.555G"``, ``"748K"``: must round
    to the same digits), or an :class:`ExpectedValue` with an explicit tolerance. ``lr_size`` is the (H, W) input for
    MACs/activations/memory. ``reference`` says where the numbers come from.
    """

    when: dict[str, Any] = Field(default_factory=dict)
    lr_size: tuple[Side, Side] | None = None
    params: int | str | ExpectedValue | None = None
    macs: int | str | ExpectedValue | None = None
    acts: int | str | ExpectedValue | None = None
    convs: int | None = None
    macs_exclude: list[str] = Field(
        default_factory=list,
        description="profiler ops (keys of Profile.macs_by_op, e.g. 'aten.upsample_bilinear2d') left out of the macs "
        "comparison, for reference counts made with a counter that ignores them (torch's FlopCounterMode)")
    reference: str | None = None
    paper: dict[str, Any] = Field(default_factory=dict)
    note: str | None = None


class KeyRename(_Strict):
    """Regex rename applied to official checkpoint keys (``re.sub(pattern, replacement, key)``), in order."""

    pattern: Regex
    replacement: str = Field(max_length=1000)


class OfficialCheckpoint(_Strict):
    """How an official state_dict maps onto the assembled model's keys."""

    source: str | None = None
    renames: list[KeyRename] = Field(default_factory=list, max_length=1000)
    drop: list[Regex] = Field(default_factory=list, max_length=1000,
                              description="regexes of official keys with no counterpart")


class ArchSpec(GraphSpec):
    """A whole architecture spec file."""

    name: str
    extends: str | None = Field(None, description="base spec this one was derived from (resolved when loading)")
    paper: str | None = None
    description: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    input_range: float = Field(1.0, gt=0, allow_inf_nan=False, description="the model takes RGB in [0, input_range]")
    y_convention: Literal["float", "uint8"] = "float"
    dry_run_size: tuple[Side, Side] | None = Field(
        (64, 64), description="LR (H, W) of the build-time shape and output check on the meta device (each side "
        f"1..{MAX_DRY_RUN_SIDE}); null disables it"
    )
    memory_format: Literal["contiguous", "channels_last"] = Field(
        "channels_last", description="default weight layout of the built model (build_model(memory_format=...) "
        "overrides it): channels_last (NHWC oneDNN convolutions) is faster on CPU for every shipped family and equal "
        "to float rounding (benchmarks/layout.py); contiguous (NCHW) is bit-identical to hand-written NCHW code")
    official_checkpoint: OfficialCheckpoint = Field(default_factory=OfficialCheckpoint)
    expected: list[ExpectedEntry] = Field(default_factory=list)
    mask_guided: dict[str, Any] | None = Field(
        None, description="turn the network into its MGA mask-guided form: {split: NODE_ID, k: ..., ...} "
        "(srblocks.transforms.mask_guided_transform)")
    notes: list[str] | str | None = None


RepeatSpec.model_rebuild()
GraphSpec.model_rebuild()
ArchSpec.model_rebuild()
