"""``build_model``: a spec (path, shipped name, mapping or ArchSpec) -> a ``torch.nn.Module``.

The module is a ``torch.fx.GraphModule``: its ``forward`` is generated Python code that calls the blocks in
topological order and drops each intermediate tensor right after its last consumer, so an assembled model has no
interpreter overhead over a hand-written one, and works with ``torch.compile``, ``torch.jit.trace`` and ONNX export.
Submodules are registered under their node ids (``feats.0``), which become the state_dict key prefixes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import pydantic
import torch
from torch import fx, nn

from .errors import SpecError, brief, clip
from .graph import ResolvedGraph, _counting_allocations, _describe, build_limits, resolve_graph, resolve_variables
from .spec.loader import LoadedSpec, format_pydantic_error, load_spec
from .spec.schema import ArchSpec, GraphSpec

__all__ = ["ModelInfo", "build_model", "build_graph_module", "model_info", "model_memory_format", "set_memory_format"]

MemoryFormat = Literal["channels_last", "contiguous"]
_TORCH_MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def model_memory_format(model: nn.Module) -> MemoryFormat:
    """``channels_last`` if the model's 4-D weights are NHWC, else ``contiguous`` (weights whose layout is ambiguous,
    such as 1x1 and depthwise kernels, which are both at once, do not decide)."""
    for p in model.parameters():
        if p.dim() == 4:
            nchw, nhwc = p.is_contiguous(), p.is_contiguous(memory_format=torch.channels_last)
            if nchw != nhwc:
                return "channels_last" if nhwc else "contiguous"
    return "contiguous"


def set_memory_format(model: nn.Module, memory_format: str) -> nn.Module:
    """Lay out ``model``'s 4-D weights (in place) as ``"contiguous"`` (NCHW) or ``"channels_last"`` (NHWC)."""
    if memory_format not in _TORCH_MEMORY_FORMATS:
        raise ValueError(f"memory_format must be 'channels_last' or 'contiguous', got {memory_format!r}")
    return model.to(memory_format=_TORCH_MEMORY_FORMATS[memory_format])

_IDENTIFIER = re.compile(r"[^0-9a-zA-Z_]")


@dataclass(frozen=True)
class ModelInfo:
    """What a built model remembers of its spec: the spec, its source, and the resolved variables."""

    spec: ArchSpec
    source: str
    variables: dict[str, Any]

    @property
    def scale(self) -> int | None:
        return self.variables.get("scale")

    @property
    def input_range(self) -> float:
        return self.spec.input_range

    def content_hash(self) -> str:
        """First 16 hex digits of the SHA-256 of what defines the network: the spec's graph and settings with the
        resolved variables, without names, descriptions, notes, reproduction targets or checkpoint key maps. Two
        specs that build the same network from the same variables share it, whatever they are called or however
        they lay out their weights (``memory_format``)."""
        import hashlib
        import json

        content = self.spec.model_dump(mode="json", exclude=_NOT_ARCHITECTURE)
        # the memory format is a layout, not the network; it is hashed as the constant it was before it left the
        # hash (when every spec was contiguous), so that hashes in existing results stores stay valid
        content["memory_format"] = "contiguous"
        text = json.dumps({"spec": _without_notes(content), "variables": self.variables}, sort_keys=True,
                          separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_NOT_ARCHITECTURE = {"name", "extends", "paper", "description", "expected", "official_checkpoint", "notes",
                     "dry_run_size"}


def _without_notes(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_notes(v) for k, v in value.items() if not (k == "note" and isinstance(v, (str, type(None))))}
    if isinstance(value, list):
        return [_without_notes(v) for v in value]
    return value


def build_graph_module(resolved: ResolvedGraph) -> fx.GraphModule:
    """Turn a checked graph into a GraphModule (one ``call_module`` per node, inputs as placeholders)."""
    graph = fx.Graph()
    values: dict[str, fx.Node] = {}
    for name in resolved.inputs:
        values[name] = graph.placeholder(_IDENTIFIER.sub("_", name))
    modules: dict[str, nn.Module] = {}
    for node in resolved.nodes:
        assert node.module is not None
        modules[node.id] = node.module
        values[node.id] = graph.call_module(node.id, tuple(values[ref] for ref in node.inputs))
    if len(resolved.outputs) == 1:
        graph.output(values[resolved.outputs[0]])
    else:
        graph.output(tuple(values[o] for o in resolved.outputs))
    graph.lint()
    return fx.GraphModule(modules, graph, class_name="SRNet")


class _LocatingInterpreter(fx.Interpreter):
    """Runs a GraphModule node by node so a failure can be pinned to the node that raised it."""

    failed_node: str | None = None

    def run_node(self, n: fx.Node) -> Any:
        try:
            return super().run_node(n)
        except Exception:
            self.failed_node = str(n.target) if n.op == "call_module" else n.name
            raise


def dry_run(model: fx.GraphModule, resolved: ResolvedGraph, size: tuple[int, int], source: str) -> None:
    """Run ``model`` once on meta tensors of spatial ``size``; a failing block raises a located SpecError.

    Channel inference catches channel errors; this catches the rest of the shape errors (pixel-unshuffle of a size
    that does not divide, pooling to zero size, ...) at build time instead of at the user's first forward, and checks
    the output contract (:func:`check_output_contract`).
    """
    interpreter = _LocatingInterpreter(model)
    was = model.training
    model.eval()
    try:
        meta_state = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict().items()}
        inputs = [torch.empty(1, c, *size, device="meta") for c in resolved.inputs.values()]
        with torch.no_grad(), torch.nn.utils.stateless._reparametrize_module(model, meta_state):
            out = interpreter.run(*inputs)
    except Exception as exc:  # noqa: BLE001 - any failure of a block becomes one located error
        node = interpreter.failed_node
        path = next((n.path for n in resolved.nodes if n.id == node), None)
        raise SpecError(f"the model fails on a {size[0]}x{size[1]} input: {_describe(exc, with_type=True)}",
                        source=source, path=path, node=node) from None
    finally:
        model.train(was)
    check_output_contract(out, resolved, size, source)


def check_output_contract(out: Any, resolved: ResolvedGraph, size: tuple[int, int], source: str) -> None:
    """A model maps (B, C, H, W) to (B, C, s*H, s*W): C the channels of its (first) input, s its ``scale``.

    Only what the spec declares is checked: the scale when it has an integer ``scale`` variable, the channels
    always (an SR model returns an image like the one it gets). Raises a SpecError at ``output``."""
    channels = next(iter(resolved.inputs.values()))
    scale = resolved.variables.get("scale")
    if isinstance(scale, float) and scale.is_integer():
        scale = int(scale)
    scale = scale if isinstance(scale, int) and not isinstance(scale, bool) and scale >= 1 else None
    h, w = size
    spatial = f"{brief(scale * h)}, {brief(scale * w)}" if scale is not None else "H', W'"
    want = f"(1, {channels}, {spatial})"
    node = resolved.outputs[0] if resolved.outputs else None
    where = f"a model{f' with scale {brief(scale)}' if scale is not None else ''}"
    if not isinstance(out, torch.Tensor):
        got = f"a {type(out).__name__}" + (f" of {len(out)}" if isinstance(out, (tuple, list)) else "")
        raise SpecError(f"the output is {got}, not a tensor: {where} maps a (1, {channels}, {h}, {w}) input to "
                        f"one tensor {want}", source=source, path="output", node=node)
    shape = tuple(out.shape)
    ok = len(shape) == 4 and shape[0] == 1 and shape[1] == channels
    if ok and scale is not None:
        ok = shape[2:] == (scale * h, scale * w)
    if not ok:
        raise SpecError(f"the output contract is broken: a (1, {channels}, {h}, {w}) input gives "
                        f"{clip(str(shape), 100)}, but {where} must give {want}", source=source, path="output",
                        node=node)


def _subgraph_builder(value: Mapping[str, Any], env: dict[str, Any], source: str, path: str) -> nn.Module:
    try:
        sub = GraphSpec.model_validate(value)
    except pydantic.ValidationError as exc:
        where, message = format_pydantic_error(exc, path)
        raise SpecError(message, source=source, path=where) from None
    resolved = resolve_graph(sub, dict(env), source=source, path=path, build_subgraph=_subgraph_builder)
    module = _graph_module(resolved, source, path)
    module.out_channels = resolved.out_channels  # type: ignore[assignment]
    module.output_channels = resolved.output_channels  # type: ignore[assignment]
    return module


def _graph_module(resolved: ResolvedGraph, source: str, path: str = "") -> fx.GraphModule:
    """:func:`build_graph_module` with its failures (which the id checks should have prevented) located."""
    try:
        with _counting_allocations():
            return build_graph_module(resolved)
    except SpecError as exc:
        raise exc.located(source=source, path=path or "nodes") from None
    except Exception as exc:  # noqa: BLE001 - a graph the checks let through but fx cannot generate code for
        raise SpecError(f"cannot assemble the graph: {_describe(exc)}", source=source, path=path or "nodes") from None


def build_model(
    spec: str | Path | Mapping[str, Any] | ArchSpec | LoadedSpec,
    *,
    check_shapes: bool = True,
    memory_format: MemoryFormat | None = None,
    **overrides: Any,
) -> fx.GraphModule:
    """Build the network a spec describes.

    Args:
        spec: a YAML path (``"arch_specs/safmn.yaml"``), a shipped spec name (``"safmn"``), a parsed mapping, an
            :class:`~srblocks.spec.schema.ArchSpec` or a :class:`~srblocks.spec.loader.LoadedSpec`.
        check_shapes: run the build-time shape check (one meta-device forward at the spec's ``dry_run_size``);
            callers that profile the model right away (the search) skip it, since profiling runs the same check.
        memory_format: layout of the 4-D weights; default: the spec's ``memory_format`` (``channels_last`` unless
            it says otherwise). ``"channels_last"``: oneDNN's convolutions on CPU run in NHWC (x4 at 180x320, 2
            threads, interleaved: 1.04-2.5x faster for every shipped spec, ``benchmarks/layout.py``), outputs are NHWC-strided,
            inputs may have either layout. ``"contiguous"``: plain NCHW, bit-identical to a hand-written module of the same
            layers; the two agree to float rounding (about 1e-6 relative; more after many layers).
        **overrides: values for the spec's variables (``scale=2``, ``dim=48``); unknown names are an error.

    Returns:
        An ``nn.Module`` (B, input channels, H, W) -> SR output, in training mode like any new module, with the spec
        attached as ``model.meta["srblocks"]`` (see :func:`model_info`).

    Raises:
        SpecError: anything wrong in the spec or the overrides, naming the file, YAML path and node.
    """
    loaded = spec if isinstance(spec, LoadedSpec) else load_spec(spec)
    arch = loaded.spec
    with build_limits():
        env = resolve_variables(arch.variables, overrides, source=loaded.source)
        resolved = resolve_graph(arch, env, source=loaded.source, build_subgraph=_subgraph_builder)
        if len(resolved.outputs) != 1:
            raise SpecError("a model has one output (several outputs are for sub-graphs)", source=loaded.source,
                            path="output")
        model = _graph_module(resolved, loaded.source)
        if arch.mask_guided is not None:
            from .transforms import mask_guided_transform

            try:
                with _counting_allocations():
                    model = mask_guided_transform(model, arch.mask_guided, resolved.variables)
            except SpecError as exc:
                raise exc.located(source=loaded.source, path="mask_guided") from None
            except Exception as exc:  # noqa: BLE001 - the transform's failures are the spec's mask_guided options
                raise SpecError(f"mask_guided transform failed: {_describe(exc)}", source=loaded.source,
                                path="mask_guided") from None
    if check_shapes and arch.dry_run_size is not None:
        dry_run(model, resolved, arch.dry_run_size, loaded.source)
    set_memory_format(model, arch.memory_format if memory_format is None else memory_format)
    model.meta["srblocks"] = ModelInfo(arch, loaded.source, resolved.variables)  # survives deepcopy/deploy
    return model


def model_info(model: nn.Module) -> ModelInfo:
    """The :class:`ModelInfo` of a model made by :func:`build_model` (raises ``TypeError`` for other modules)."""
    info = getattr(model, "meta", {}).get("srblocks") if isinstance(getattr(model, "meta", None), dict) else None
    if not isinstance(info, ModelInfo):
        raise TypeError(f"{type(model).__name__} was not built from a spec by srblocks.build_model")
    return info


