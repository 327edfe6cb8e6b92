"""From a validated spec to a checked ``networkx.DiGraph`` of constructed blocks.

Steps: resolve variables (defaults, overrides, expressions) -> expand ``repeat`` bodies and templates -> build the
DAG -> reject duplicate ids, unknown inputs, cycles, arity errors and nodes that never reach the output -> walk in
topological order inferring channels along edges, validating each node's arguments against its block's schema and
constructing the block. Every error is a :class:`~srblocks.errors.SpecError` naming file, YAML path and node.
"""

from __future__ import annotations

import difflib
import keyword
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import networkx as nx
import pydantic
from torch import nn

from .errors import SpecError
from .registry import BlockInfo, UnknownBlockError, get_block
from .spec.expr import ExpressionError, evaluate, render_template
from .spec.loader import format_pydantic_error
from .spec.schema import Each, GraphSpec, NodeSpec, RepeatSpec

__all__ = ["ResolvedNode", "ResolvedGraph", "resolve_variables", "resolve_graph"]

MAX_NODES = 10_000


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


def resolve_variables(
    defaults: Mapping[str, Any], overrides: Mapping[str, Any], *, source: str, inherited: Mapping[str, Any] = ()
) -> dict[str, Any]:
    """Variables in declaration order: overrides are values; defaults that are strings are expressions."""
    unknown = [k for k in overrides if k not in defaults]
    if unknown:
        parts = []
        for k in unknown:
            close = difflib.get_close_matches(k, defaults, n=2, cutoff=0.5)
            parts.append(f"{k!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
        known = ", ".join(defaults) or "none"
        raise SpecError(f"unknown variable override {', '.join(parts)}; the spec's variables are: {known}", source=source)
    env: dict[str, Any] = dict(inherited)
    for name, default in defaults.items():
        if name in overrides:
            env[name] = overrides[name]
            continue
        try:
            env[name] = _evaluate_value(default, env)
        except ExpressionError as exc:
            raise SpecError(str(exc), source=source, path=f"variables.{name}") from None
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


def _expand(
    items: list[NodeSpec | RepeatSpec], env: dict[str, Any], path: str, source: str, out: list[ResolvedNode]
) -> None:
    for k, item in enumerate(items):
        item_path = f"{path}[{k}]"
        if isinstance(item, RepeatSpec):
            try:
                count = evaluate(item.repeat, env) if isinstance(item.repeat, str) else item.repeat
            except ExpressionError as exc:
                raise SpecError(str(exc), source=source, path=f"{item_path}.repeat") from None
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise SpecError(f"repeat count must be a non-negative integer, got {count!r}", source=source,
                                path=f"{item_path}.repeat")
            for i in range(count):
                inner = {**env, item.index: i, "__repeat__": (i, count)}
                _expand(item.nodes, inner, f"{item_path}.nodes", source, out)
            continue
        try:
            node_id = render_template(item.id, env)
            inputs = None if item.inputs is None else [render_template(s, env) for s in item.inputs]
        except ExpressionError as exc:
            raise SpecError(str(exc), source=source, path=item_path) from None
        try:
            block = get_block(item.block)
        except UnknownBlockError as exc:
            raise SpecError(str(exc), source=source, path=f"{item_path}.block", node=node_id) from None
        out.append(ResolvedNode(node_id, block, inputs if inputs is not None else [], dict(item.args), item_path,
                                env))
        out[-1].raw_args["__default_input__"] = inputs is None
        if len(out) > MAX_NODES:
            raise SpecError(f"the spec expands to more than {MAX_NODES} nodes", source=source, path=item_path)


def _node_args(node: ResolvedNode, source: str, build_subgraph: Callable[..., nn.Module]) -> dict[str, Any]:
    """Evaluate a node's arguments in its environment (expressions, per-repeat lists, sub-graphs)."""
    types = node.block.field_types()
    args: dict[str, Any] = {}
    for name, value in node.raw_args.items():
        if name == "__default_input__":
            continue
        arg_path = f"{node.path}.args.{name}"
        if isinstance(value, Mapping) and set(value) == {"each"}:
            repeat = node.env.get("__repeat__")
            each = Each.model_validate(value).each
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


def resolve_graph(
    graph: GraphSpec,
    env: dict[str, Any],
    *,
    source: str,
    path: str = "",
    build_subgraph: Callable[..., nn.Module],
) -> ResolvedGraph:
    """Expand, check and construct every node of ``graph`` (see module docstring)."""
    prefix = f"{path}." if path else ""
    inputs: dict[str, int] = {}
    for name, channels in graph.inputs.items():
        try:
            value = evaluate(channels, env) if isinstance(channels, str) else channels
        except ExpressionError as exc:
            raise SpecError(str(exc), source=source, path=f"{prefix}inputs.{name}") from None
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(f"input channels must be a positive integer, got {value!r}", source=source,
                            path=f"{prefix}inputs.{name}")
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
        if node.id in dag:
            what = "a graph input" if dag.nodes[node.id]["kind"] == "input" else "another node"
            raise SpecError(f"duplicate id {node.id!r} (also used by {what})", source=source, path=node.path,
                            node=node.id)
        bad = [part for part in node.id.split(".") if not part or keyword.iskeyword(part)]
        if bad:
            raise SpecError(f"id {node.id!r} cannot name a submodule: its dot-separated parts must be non-empty and "
                            f"not Python keywords (got {bad[0]!r})", source=source, path=node.path, node=node.id)
        if node.raw_args["__default_input__"]:
            node.inputs = [previous]
        dag.add_node(node.id, kind="block", order=order, resolved=node)
        previous = node.id
    for node in nodes:
        for ref in node.inputs:
            if ref not in dag:
                close = difflib.get_close_matches(ref, list(dag), n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                raise SpecError(f"input {ref!r} is not a node or graph input{hint}", source=source,
                                path=f"{node.path}.inputs", node=node.id)
            dag.add_edge(ref, node.id)
        arity = node.block.arity
        if (arity is None and not node.inputs) or (arity is not None and len(node.inputs) != arity):
            want = "at least 1" if arity is None else str(arity)
            raise SpecError(f"block {node.block.name!r} takes {want} input(s), got {len(node.inputs)}",
                            source=source, path=f"{node.path}.inputs", node=node.id)
    try:
        cycle = nx.find_cycle(dag)
        raise SpecError("the graph has a cycle: " + " -> ".join(f"{a}" for a, _ in cycle) + f" -> {cycle[0][0]}",
                        source=source, path=f"{prefix}nodes", node=cycle[0][0])
    except nx.NetworkXNoCycle:
        pass
    try:
        raw_outputs = graph.output if isinstance(graph.output, list) else [graph.output or nodes[-1].id]
        outputs = [render_template(o, env) for o in raw_outputs]
    except ExpressionError as exc:
        raise SpecError(str(exc), source=source, path=f"{prefix}output") from None
    used: set[str] = set()
    for output in outputs:
        if output not in dag:
            close = difflib.get_close_matches(output, list(dag), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise SpecError(f"output {output!r} is not a node{hint}", source=source, path=f"{prefix}output")
        used |= nx.ancestors(dag, output) | {output}
    output = ", ".join(outputs)
    for name in dag:
        if name not in used:
            kind = dag.nodes[name]["kind"]
            where = dag.nodes[name]["resolved"].path if kind == "block" else f"{prefix}inputs.{name}"
            raise SpecError(f"{'node' if kind == 'block' else 'graph input'} {name!r} is never used "
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
        if not isinstance(channels, int):
            raise SpecError(f"block {node.block.name!r} did not set an integer out_channels", source=source,
                            path=node.path, node=node.id)
        node.out_channels = channels
        dag.nodes[name]["channels"] = channels
    ordered = [dag.nodes[n]["resolved"] for n in order if dag.nodes[n]["kind"] == "block"]
    return ResolvedGraph(inputs, ordered, outputs, dag, {k: v for k, v in env.items() if k != "__repeat__"})


def _construct(node: ResolvedNode, source: str, build_subgraph: Callable[..., nn.Module]) -> nn.Module:
    args = _node_args(node, source, build_subgraph)
    info = node.block
    if info.in_channels is not None:
        inferred: Any = node.in_channels[0] if info.arity == 1 else list(node.in_channels)
        given = args.get(info.in_channels)
        if given is not None and given != inferred:
            sources = ", ".join(f"{ref!r} has {c}" for ref, c in zip(node.inputs, node.in_channels))
            raise SpecError(f"channel mismatch: argument {info.in_channels}={given!r} but the input {sources}",
                            source=source, path=f"{node.path}.args.{info.in_channels}", node=node.id)
        args[info.in_channels] = inferred
    try:
        validated = info.args_model.model_validate(args)
    except pydantic.ValidationError as exc:
        where, message = format_pydantic_error(exc, f"{node.path}.args")
        raise SpecError(f"invalid arguments for block {info.name!r}: {message}", source=source, path=where,
                        node=node.id) from None
    kwargs = {k: getattr(validated, k) for k in info.args_model.model_fields}
    try:
        module = info.cls(**kwargs)
        module.srblocks_args = kwargs  # what built it: lets the profiler reuse counts of identical blocks
        return module
    except SpecError as exc:
        raise exc.located(source=source, path=node.path) from None
    except (ValueError, TypeError, RuntimeError) as exc:
        raise SpecError(f"block {info.name!r} rejected its arguments: {exc}", source=source,
                        path=f"{node.path}.args", node=node.id) from None
