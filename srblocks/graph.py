"""From a validated spec to a checked ``networkx.DiGraph`` of constructed blocks.

Steps: resolve variables (defaults, overrides, expressions) -> expand ``repeat`` bodies and templates -> build the
DAG -> reject duplicate ids, unknown inputs, cycles, arity errors and nodes that never reach the output -> walk in
topological order inferring channels along edges, validating each node's arguments against its block's schema and
constructing the block. Every error is a :class:`~srblocks.errors.SpecError` naming file, YAML path and node.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import keyword
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import networkx as nx
import pydantic
import torch
from torch import fx, nn
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import SpecError, brief, clip
from .registry import BlockArgumentError, BlockInfo, UnknownBlockError, get_block
from .spec.expr import ExpressionError, evaluate, render_template
from .spec.limits import (
    MAX_BUILD_WORK,
    MAX_ELEMENTS,
    MAX_ID_LENGTH,
    MAX_MODULES,
    MAX_NODES,
    MAX_REPEAT,
    structure_problem,
)
from .spec.loader import close_names, format_pydantic_error
from .spec.schema import Each, GraphSpec, NodeSpec, RepeatSpec

__all__ = ["ResolvedNode", "ResolvedGraph", "resolve_variables", "resolve_graph", "build_limits", "check_name",
           "reserved_names"]


@dataclass
class ResolvedNode:
    """A node after expansion: concrete id, inputs, arguments, its YAML path and (after inference) its module."""

    id: str
    block: BlockInfo
    inputs: list[str]
    raw_args: dict[str, Any]
    path: str
    env: dict[str, Any]
    module: nn.Module | None = None
    in_channels: list[int] = field(default_factory=list)
    out_channels: int | None = None


@dataclass
class ResolvedGraph:
    """A checked DAG: graph inputs with channels, nodes in execution order, the output id(s) and the networkx graph.

    ``outputs`` has one id for a model; sub-graphs may return several tensors (a tuple, in the listed order)."""

    inputs: dict[str, int]
    nodes: list[ResolvedNode]
    outputs: list[str]
    dag: nx.DiGraph
    variables: dict[str, Any]

    @property
    def out_channels(self) -> int:
        """Channels of the (first) output."""
        return self.dag.nodes[self.outputs[0]]["channels"]

    @property
    def output_channels(self) -> list[int]:
        return [self.dag.nodes[o]["channels"] for o in self.outputs]


# ------------------------------------------------------------------------------------------------------ limits
class _Budget:
    """What one build may still spend (limits in :mod:`srblocks.spec.limits`), shared by its sub-graphs."""

    def __init__(self) -> None:
        self.work = MAX_BUILD_WORK
        self.nodes = MAX_NODES
        self.modules = MAX_MODULES
        self.elements = MAX_ELEMENTS

    def charge_work(self, units: int, source: str, path: str) -> None:
        self.work -= units
        if self.work < 0:
            raise SpecError(f"expanding the spec takes too much work (more than {MAX_BUILD_WORK:,} steps: repeats, "
                            "templates and argument values)", source=source, path=path)

    def charge_elements(self, n: int) -> None:
        self.elements -= n
        if self.elements < 0:
            raise SpecError(f"the model is too large: building it allocates more than {MAX_ELEMENTS:,} tensor "
                            "elements")

    def charge_module(self) -> None:
        self.modules -= 1
        if self.modules < 0:
            raise SpecError(f"the model is too large: building it creates more than {MAX_MODULES:,} modules")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("srblocks_build_budget", default=None)
_COUNTING: contextvars.ContextVar[bool] = contextvars.ContextVar("srblocks_counting", default=False)


@contextlib.contextmanager
def build_limits() -> Iterator[_Budget]:
    """The budget of the current build: a new one when none is active (the outermost call), else the active one."""
    active = _BUDGET.get()
    if active is not None:
        yield active
        return
    budget = _Budget()
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def _budget() -> _Budget:
    active = _BUDGET.get()
    return active if active is not None else _Budget()


class _AllocationCounter(TorchDispatchMode):
    """Charges the tensor elements allocated on real devices (not meta) to the active build budget, refusing a
    factory call (``torch.empty(size)``, ...) whose size would pass the budget before it allocates anything."""

    def __init__(self, budget: _Budget) -> None:
        super().__init__()
        self.budget = budget

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        size = args[0] if args else kwargs.get("size")
        device = kwargs.get("device")
        if isinstance(size, (list, tuple)) and size and all(isinstance(d, int) for d in size) \
                and not (device is not None and torch.device(device).type == "meta"):
            if any(d < 0 for d in size):
                raise SpecError(f"a tensor of negative size {list(size)} was requested")
            if math.prod(size) > self.budget.elements:
                self.budget.charge_elements(math.prod(size))
        out = func(*args, **kwargs)
        schema = func._schema
        if not schema.is_mutable and not func.is_view:
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.device.type != "meta":
                    self.budget.charge_elements(t.numel())
        return out


@contextlib.contextmanager
def _counting_allocations() -> Iterator[None]:
    """While active: tensor elements and modules created are charged to the build budget (module construction)."""
    budget = _BUDGET.get()
    if budget is None or _COUNTING.get():
        yield
        return

    def on_register(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
        if _BUDGET.get() is budget and submodule is not None:
            budget.charge_module()

    token = _COUNTING.set(True)
    handle = torch.nn.modules.module.register_module_module_registration_hook(on_register)
    try:
        with _AllocationCounter(budget):
            yield
    finally:
        handle.remove()
        _COUNTING.reset(token)


def _charge_value(value: Any, budget: _Budget, source: str, path: str) -> None:
    """Charge the size of a raw argument value (its YAML nodes, aliases expanded) to the build's work budget."""
    if isinstance(value, (dict, list, tuple)):
        problem = structure_problem(value, max_nodes=max(1, min(budget.work, 1_000_000)))
        if problem is not None and "too large" in problem:
            budget.charge_work(budget.work + 1, source, path)
        if problem is not None:
            raise SpecError(problem.replace("the document", "the value"), source=source, path=path)
        budget.charge_work(_count(value), source, path)
    else:
        budget.charge_work(1, source, path)


def _count(value: Any) -> int:
    """YAML nodes of a value already known to be within the document limits."""
    n, stack = 0, [value]
    while stack:
        item = stack.pop()
        n += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return n


# ------------------------------------------------------------------------------------------------------ names
@functools.cache
def reserved_names() -> frozenset[str]:
    """Names a node id (or a part of a dotted id) cannot take: the attributes of ``nn.Module`` and
    ``fx.GraphModule`` instances (``training``, ``forward``, ``half``, ``meta``, ``graph``, ``__class__``, ...),
    ``self`` (the generated ``forward``'s first argument) and Python keywords."""
    gm = fx.GraphModule(nn.Module(), fx.Graph())
    return frozenset(dir(gm)) | frozenset(dir(nn.Module())) | {"self"} | frozenset(keyword.kwlist)


def check_name(name: Any, *, what: str, source: str, path: str, node: str | None = None) -> None:
    """Refuse a node id or graph input name that cannot name a submodule or an argument of ``forward``.

    One rule for every id: at most :data:`~srblocks.spec.limits.MAX_ID_LENGTH` characters, and each dot-separated
    part non-empty and not a :func:`reserved name <reserved_names>` (a Python keyword or an attribute of the
    modules it becomes part of, which would silently replace or shadow it)."""
    if not isinstance(name, str) or len(name) > MAX_ID_LENGTH:
        raise SpecError(f"{what} {brief(name)} is longer than {MAX_ID_LENGTH} characters", source=source, path=path,
                        node=node)
    reserved = reserved_names()
    bad = [part for part in name.split(".") if not part or part in reserved or not part.isprintable()]
    if bad:
        raise SpecError(f"{what} {brief(name)} cannot name a submodule: its dot-separated parts must be non-empty, "
                        f"printable and not Python keywords or attributes of torch modules (got {bad[0]!r})",
                        source=source, path=path, node=node)


# ------------------------------------------------------------------------------------------------------ variables
def resolve_variables(
    defaults: Mapping[str, Any], overrides: Mapping[str, Any], *, source: str, inherited: Mapping[str, Any] = ()
) -> dict[str, Any]:
    """Variables in declaration order: overrides are values; defaults that are strings are expressions."""
    unknown = [k for k in overrides if k not in defaults]
    if unknown:
        parts = []
        for k in unknown[:5]:
            close = close_names(k, defaults, n=2, cutoff=0.5)
            parts.append(brief(k) + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
        known = clip(", ".join(map(str, defaults)) or "none", 500)
        raise SpecError(f"unknown variable override {', '.join(parts)}; the spec's variables are: {known}", source=source)
    env: dict[str, Any] = dict(inherited)
    for name, default in defaults.items():
        if name in overrides:
            value = overrides[name]
            problem = structure_problem(value)
            if problem:
                raise SpecError(f"override {brief(name)}: {problem.replace('the document', 'the value')}",
                                source=source, path=f"variables.{clip(str(name), 100)}")
            env[name] = value
            continue
        try:
            env[name] = _evaluate_value(default, env)
        except ExpressionError as exc:
            raise SpecError(str(exc), source=source, path=f"variables.{clip(str(name), 100)}") from None
    return env


def _evaluate_value(value: Any, env: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return evaluate(value, env)
    if isinstance(value, list):
        return [_evaluate_value(v, env) for v in value]
    return value


def _is_text_annotation(annotation: Any) -> bool:
    """True when a block argument takes text (str or Literal of strings), so YAML strings are literals there."""
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return any(isinstance(a, str) for a in typing.get_args(annotation))
    if origin is not None:
        return any(_is_text_annotation(a) for a in typing.get_args(annotation))
    return False


# ------------------------------------------------------------------------------------------------------ expansion
def _expand(
    items: list[NodeSpec | RepeatSpec], env: dict[str, Any], path: str, source: str, out: list[ResolvedNode]
) -> None:
    budget = _budget()
    for k, item in enumerate(items):
        item_path = f"{path}[{k}]"
        budget.charge_work(1, source, item_path)
        if isinstance(item, RepeatSpec):
            try:
                count = evaluate(item.repeat, env) if isinstance(item.repeat, str) else item.repeat
            except ExpressionError as exc:
                raise SpecError(str(exc), source=source, path=f"{item_path}.repeat") from None
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise SpecError(f"repeat count must be a non-negative integer, got {brief(count)}", source=source,
                                path=f"{item_path}.repeat")
            if count > MAX_REPEAT:
                raise SpecError(f"repeat count {brief(count)} is larger than {MAX_REPEAT:,}", source=source,
                                path=f"{item_path}.repeat")
            for i in range(count):
                budget.charge_work(1, source, f"{item_path}.repeat")
                inner = {**env, item.index: i, "__repeat__": (i, count)}
                _expand(item.nodes, inner, f"{item_path}.nodes", source, out)
            continue
        try:
            budget.charge_work(len(item.id) // 16 + sum(len(s) // 16 + 1 for s in item.inputs or ()), source,
                               item_path)
            node_id = render_template(item.id, env)
            inputs = None if item.inputs is None else [render_template(s, env) for s in item.inputs]
        except ExpressionError as exc:
            raise SpecError(str(exc), source=source, path=item_path) from None
        try:
            block = get_block(item.block)
        except UnknownBlockError as exc:
            raise SpecError(str(exc), source=source, path=f"{item_path}.block", node=clip(node_id, 200)) from None
        out.append(ResolvedNode(node_id, block, inputs if inputs is not None else [], dict(item.args), item_path,
                                env))
        out[-1].raw_args["__default_input__"] = inputs is None
        budget.nodes -= 1
        if budget.nodes < 0:
            raise SpecError(f"the spec expands to more than {MAX_NODES:,} nodes (sub-graphs included)",
                            source=source, path=item_path)


def _node_args(node: ResolvedNode, source: str, build_subgraph: Callable[..., nn.Module]) -> dict[str, Any]:
    """Evaluate a node's arguments in its environment (expressions, per-repeat lists, sub-graphs)."""
    types = node.block.field_types()
    budget = _budget()
    args: dict[str, Any] = {}
    for name, value in node.raw_args.items():
        if name == "__default_input__":
            continue
        arg_path = f"{node.path}.args.{clip(str(name), 100)}"
        _charge_value(value, budget, source, arg_path)
        if isinstance(value, Mapping) and set(value) == {"each"}:
            repeat = node.env.get("__repeat__")
            try:
                each = Each.model_validate(value).each
            except pydantic.ValidationError as exc:
                where, message = format_pydantic_error(exc, arg_path)
                raise SpecError(f"'each' takes a list of values, one per repeat: {message}", source=source,
                                path=where, node=node.id) from None
            if repeat is None:
                raise SpecError("'each' lists are only allowed inside a repeat", source=source, path=arg_path,
                                node=node.id)
            i, count = repeat
            if len(each) != count:
                raise SpecError(f"'each' has {len(each)} values but the repeat has {count}", source=source,
                                path=arg_path, node=node.id)
            value = each[i]
        if isinstance(value, Mapping) and "nodes" in value:
            args[name] = build_subgraph(value, node.env, source, arg_path)
            continue
        try:
            if isinstance(value, str) and not _is_text_annotation(types.get(name, Any)):
                value = evaluate(value, node.env)
            elif isinstance(value, str) and value in node.env and isinstance(node.env[value], str):
                value = node.env[value]
            elif isinstance(value, list) and not _is_text_annotation(types.get(name, Any)):
                value = _evaluate_value(value, node.env)
        except ExpressionError as exc:
            raise SpecError(str(exc), source=source, path=arg_path, node=node.id) from None
        args[name] = value
    return args


def _not_found(kind: str, ref: str, known: list[str]) -> str:
    close = close_names(ref, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    return f"{kind} {brief(ref)} is not a node{' or graph input' if kind == 'input' else ''}{hint}"


def resolve_graph(
    graph: GraphSpec,
    env: dict[str, Any],
    *,
    source: str,
    path: str = "",
    build_subgraph: Callable[..., nn.Module],
) -> ResolvedGraph:
    """Expand, check and construct every node of ``graph`` (see module docstring).

    Everything one build does is bounded (:mod:`srblocks.spec.limits`): repeat counts, expanded nodes (sub-graphs
    included), expansion work, and the modules and tensor elements the block constructors create."""
    with build_limits():
        return _resolve_graph(graph, env, source=source, path=path, build_subgraph=build_subgraph)


def _resolve_graph(
    graph: GraphSpec, env: dict[str, Any], *, source: str, path: str, build_subgraph: Callable[..., nn.Module]
) -> ResolvedGraph:
    prefix = f"{path}." if path else ""
    inputs: dict[str, int] = {}
    for name, channels in graph.inputs.items():
        where = f"{prefix}inputs.{clip(str(name), 100)}"
        check_name(name, what="graph input", source=source, path=where)
        try:
            value = evaluate(channels, env) if isinstance(channels, str) else channels
        except ExpressionError as exc:
            raise SpecError(str(exc), source=source, path=where) from None
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(f"input channels must be a positive integer, got {brief(value)}", source=source,
                            path=where)
        inputs[name] = value
    nodes: list[ResolvedNode] = []
    _expand(graph.nodes, env, f"{prefix}nodes", source, nodes)
    if not nodes:
        raise SpecError("the graph has no nodes", source=source, path=f"{prefix}nodes")

    dag = nx.DiGraph()
    for name, channels in inputs.items():
        dag.add_node(name, kind="input", channels=channels, order=-1)
    previous = next(iter(inputs))
    for order, node in enumerate(nodes):
        check_name(node.id, what="id", source=source, path=node.path, node=clip(node.id, 200))
        if node.id in dag:
            what = "a graph input" if dag.nodes[node.id]["kind"] == "input" else "another node"
            raise SpecError(f"duplicate id {brief(node.id)} (also used by {what})", source=source, path=node.path,
                            node=node.id)
        if node.raw_args["__default_input__"]:
            node.inputs = [previous]
        dag.add_node(node.id, kind="block", order=order, resolved=node)
        previous = node.id
    blocks = {node.id for node in nodes}
    for node in nodes:
        parts = node.id.split(".")
        owner = next((".".join(parts[:n]) for n in range(1, len(parts)) if ".".join(parts[:n]) in blocks), None)
        if owner is not None:
            raise SpecError(f"id {brief(node.id)} would put a submodule inside node {owner!r}'s block; "
                            f"a node id cannot start with another node's id and a dot", source=source,
                            path=node.path, node=node.id)
    for node in nodes:
        for ref in node.inputs:
            if ref not in dag:
                raise SpecError(_not_found("input", ref, list(dag)), source=source, path=f"{node.path}.inputs",
                                node=node.id)
            dag.add_edge(ref, node.id)
        arity = node.block.arity
        if (arity is None and not node.inputs) or (arity is not None and len(node.inputs) != arity):
            want = "at least 1" if arity is None else str(arity)
            raise SpecError(f"block {node.block.name!r} takes {want} input(s), got {len(node.inputs)}",
                            source=source, path=f"{node.path}.inputs", node=node.id)
    try:
        cycle = nx.find_cycle(dag)
        shown = " -> ".join(f"{a}" for a, _ in cycle[:20]) + (" -> ..." if len(cycle) > 20 else "")
        raise SpecError(clip(f"the graph has a cycle: {shown} -> {cycle[0][0]}", 600), source=source,
                        path=f"{prefix}nodes", node=cycle[0][0])
    except nx.NetworkXNoCycle:
        pass
    try:
        raw_outputs = graph.output if isinstance(graph.output, list) else [graph.output or nodes[-1].id]
        if not raw_outputs:
            raise SpecError("output lists no node", source=source, path=f"{prefix}output")
        outputs = [render_template(o, env) for o in raw_outputs]
    except ExpressionError as exc:
        raise SpecError(str(exc), source=source, path=f"{prefix}output") from None
    used: set[str] = set()
    for output in outputs:
        if output not in dag:
            raise SpecError(_not_found("output", output, list(dag)), source=source, path=f"{prefix}output")
        used |= nx.ancestors(dag, output) | {output}
    output = clip(", ".join(outputs), 300)
    for name in dag:
        if name not in used:
            kind = dag.nodes[name]["kind"]
            where = dag.nodes[name]["resolved"].path if kind == "block" else f"{prefix}inputs.{clip(str(name), 100)}"
            raise SpecError(f"{'node' if kind == 'block' else 'graph input'} {brief(name)} is never used "
                            f"(it does not lead to the output {output!r})", source=source, path=where,
                            node=name if kind == "block" else None)

    order = list(nx.lexicographical_topological_sort(dag, key=lambda n: dag.nodes[n]["order"]))
    for name in order:
        if dag.nodes[name]["kind"] != "block":
            continue
        node: ResolvedNode = dag.nodes[name]["resolved"]
        node.in_channels = [dag.nodes[ref]["channels"] for ref in node.inputs]
        node.module = _construct(node, source, build_subgraph)
        channels = getattr(node.module, "out_channels", None)
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise SpecError(f"block {node.block.name!r} did not set a positive integer out_channels (got "
                            f"{brief(channels)})", source=source, path=node.path, node=node.id)
        node.out_channels = channels
        dag.nodes[name]["channels"] = channels
    ordered = [dag.nodes[n]["resolved"] for n in order if dag.nodes[n]["kind"] == "block"]
    return ResolvedGraph(inputs, ordered, outputs, dag, {k: v for k, v in env.items() if k != "__repeat__"})


def _construct(node: ResolvedNode, source: str, build_subgraph: Callable[..., nn.Module]) -> nn.Module:
    """Evaluate, validate and construct one node; any failure is a SpecError naming the node and its YAML path.

    This is the one boundary between the spec and a block's code: whatever a block constructor raises for the
    arguments it was given (ValueError, OverflowError, a torch RuntimeError, MemoryError, ...) comes out as
    ``block 'name' rejected its arguments: ...`` located at the node."""
    info = node.block
    try:
        args = _node_args(node, source, build_subgraph)
        if info.in_channels is not None:
            inferred: Any = node.in_channels[0] if info.arity == 1 else list(node.in_channels)
            given = args.get(info.in_channels)
            if given is not None and given != inferred:
                sources = ", ".join(f"{ref!r} has {c}" for ref, c in zip(node.inputs, node.in_channels))
                raise SpecError(f"channel mismatch: argument {info.in_channels}={brief(given)} but the input "
                                f"{clip(sources, 300)}", source=source, path=f"{node.path}.args.{info.in_channels}",
                                node=node.id)
            args[info.in_channels] = inferred
        try:
            kwargs = info.validate_args(args)
        except BlockArgumentError as exc:
            if exc.validation_error is None:  # a former argument name
                raise SpecError(f"block {info.name!r}: argument {exc.argument!r} is now called "
                                f"{info.renamed.get(exc.argument or '')!r}", source=source,
                                path=f"{node.path}.args.{exc.argument}", node=node.id) from None
            where, message = format_pydantic_error(exc.validation_error, f"{node.path}.args")
            raise SpecError(f"invalid arguments for block {info.name!r}: {message}", source=source, path=where,
                            node=node.id) from None
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failure while reading a node's arguments is located at the node
        raise SpecError(f"cannot evaluate the arguments of block {info.name!r}: {_describe(exc)}", source=source,
                        path=f"{node.path}.args", node=node.id) from None
    try:
        with _counting_allocations():
            module = info.cls(**kwargs)
        module.srblocks_args = kwargs  # what built it: lets the profiler reuse counts of identical blocks
        return module
    except SpecError as exc:
        raise exc.located(source=source, path=node.path) if exc.node else SpecError(
            exc.message, source=exc.source or source, path=exc.path or node.path, node=node.id) from None
    except Exception as exc:  # noqa: BLE001 - any failure of a block constructor becomes one located error
        raise SpecError(f"block {info.name!r} rejected its arguments: {_describe(exc)}", source=source,
                        path=f"{node.path}.args", node=node.id) from None


def _describe(exc: BaseException, *, with_type: bool = False) -> str:
    """``Type: first line of the message`` (bounded); the message alone for ValueError/TypeError/RuntimeError
    unless ``with_type``."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - e.g. int-to-str digit limit inside an exception's __str__
        text = ""
    first = clip(text.strip().splitlines()[0] if text.strip() else "", 300)
    if not with_type and type(exc) in (ValueError, TypeError, RuntimeError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
