"""What a model runs: its block calls, each with the key of its latency table entry.

A model built by :func:`srblocks.build_model` is a ``torch.fx.GraphModule`` whose nodes call registered blocks.
Each call is keyed by everything its speed depends on:

* the block name and its constructor arguments (``module.srblocks_args``, recorded by the assembler);
* its parameter layout (names, shapes, dtypes: a re-parameterized deploy form differs from the training form);
* its input shapes (B, C, H, W), dtype and memory format (``contiguous`` NCHW or ``channels_last`` NHWC) as the
  block sees them inside the model;
* the model's weight memory format.

Shapes come from one meta-device pass at the measured size (no arithmetic; a block already seen on the same input
shapes is not run again). Input layouts come from one real CPU pass at a small probe size (32x32, else the spec's
``dry_run_size``), because the layout a block receives is decided by the blocks before it (oneDNN convolutions with
channels-last weights return NHWC, some blocks return NCHW) and the meta device does not model that; what each
block returns for which input layouts is remembered, so a model made only of blocks seen before needs no probe.

Models that are not a plain chain of block calls (``mask_guided`` transforms, modules not built from a spec) are one
opaque call of the whole model, keyed by its spec, variables and parameter layout.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import fx, nn

from ..build import model_memory_format

__all__ = ["TensorSpec", "BlockCall", "block_calls", "model_memory_format", "tensor_layout", "WHOLE_MODEL"]

#: the block name of an opaque whole-model entry
WHOLE_MODEL = "(whole model)"


def tensor_layout(t: torch.Tensor) -> str:
    """``contiguous``, ``channels_last`` or ``strided`` (any other layout) of a tensor."""
    if t.is_contiguous():
        return "contiguous"
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "strided"


@dataclass(frozen=True)
class TensorSpec:
    """An input as a block sees it: shape (B, C, H, W, ...), dtype name (``float32``) and layout."""

    shape: tuple[int, ...]
    dtype: str
    layout: str

    def make(self, seed: int = 0) -> torch.Tensor:
        """A random CPU tensor of this shape, dtype and layout (uniform [0, 1) for floats)."""
        dtype = getattr(torch, self.dtype)
        generator = torch.Generator().manual_seed(seed)
        if dtype.is_floating_point:
            t = torch.rand(self.shape, dtype=dtype, generator=generator)
        else:
            t = torch.zeros(self.shape, dtype=dtype)
        if self.layout == "channels_last" and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def as_list(self) -> list[Any]:
        return [list(self.shape), self.dtype, self.layout]


@dataclass(frozen=True)
class BlockCall:
    """One node of a model: its name in the graph, the table key, the block name, a short label, the module and
    the inputs it receives."""

    node: str
    key: str
    block: str
    label: str
    module: nn.Module
    inputs: tuple[TensorSpec, ...]

    def make_inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(spec.make(i) for i, spec in enumerate(self.inputs))


def _canonical(value: Any) -> Any:
    """A JSON-able, order-independent form of constructor arguments (sub-modules by their own arguments)."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, nn.Module):
        args = getattr(value, "srblocks_args", None)
        return {"module": type(value).__qualname__,
                "args": _canonical(args) if args is not None else hashlib.sha1(str(value).encode()).hexdigest()}
    return repr(value)


def _param_layout(module: nn.Module) -> list[Any]:
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in module.state_dict().items()]


def _digest(payload: Any) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def _spec(t: torch.Tensor, layout: str | None = None) -> TensorSpec:
    return TensorSpec(tuple(t.shape), str(t.dtype).removeprefix("torch."), layout or tensor_layout(t))


def _label(block: str, args: dict[str, Any], inputs: Sequence[TensorSpec]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in list(_canonical(args).items())[:6] if not isinstance(v, (dict, list)))
    shapes = " ".join("x".join(map(str, s.shape)) + ("/NHWC" if s.layout == "channels_last" else "") for s in inputs)
    return f"{block}({shown}) on {shapes}"


class _NotChain(Exception):
    """The graph has nodes other than block calls on tensors: use one whole-model entry."""


def _is_chain(model: nn.Module) -> bool:
    if not isinstance(model, fx.GraphModule):
        return False
    for node in model.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.op != "call_module" or node.kwargs or not all(isinstance(a, fx.Node) for a in node.args):
            return False
        if getattr(model.get_submodule(str(node.target)), "srblocks_args", None) is None:
            return False
    return sum(n.op == "placeholder" for n in model.graph.nodes) == 1


#: (block identity, input shapes/dtypes) -> (output shape, dtype): repeated blocks skip the meta pass
_SHAPES: "OrderedDict[Any, tuple[tuple[int, ...], torch.dtype]]" = OrderedDict()
#: (block identity, input layouts, model format) -> output layout, learnt from probes: a model whose every block is
#: known needs no probe
_LAYOUTS: "OrderedDict[Any, str]" = OrderedDict()
_CACHE_SIZE = 8192


def _remember(cache: OrderedDict, key: Any, value: Any) -> None:
    cache[key] = value
    if len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def _meta_inputs(model: fx.GraphModule, x: torch.Tensor, idents: dict[str, str]) -> dict[str, list[torch.Tensor]]:
    """node name -> the meta tensors its block receives (a meta pass at the measured size; a block already seen on
    the same input shapes is not run again)."""
    values: dict[fx.Node, torch.Tensor] = {}
    out: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for node in model.graph.nodes:
            if node.op == "placeholder":
                values[node] = x
            elif node.op == "call_module":
                inputs = [values[a] for a in node.args]  # type: ignore[index]
                key = (idents[node.name], tuple((tuple(t.shape), t.dtype) for t in inputs))
                known = _SHAPES.get(key)
                if known is None:
                    module = model.get_submodule(str(node.target))
                    state = {n: torch.empty_like(t, device="meta")
                             for n, t in [*module.named_parameters(), *module.named_buffers()]}
                    result = torch.func.functional_call(module, state, tuple(inputs), strict=False)
                    if not isinstance(result, torch.Tensor):
                        raise _NotChain
                    known = (tuple(result.shape), result.dtype)
                    _remember(_SHAPES, key, known)
                values[node] = torch.empty(known[0], dtype=known[1], device="meta")
                out[node.name] = inputs
    return out


def _probe_layouts(model: fx.GraphModule, shape: tuple[int, ...], dtype: torch.dtype,
                   idents: dict[str, str], fmt: str) -> dict[str, list[str]] | None:
    """node name -> the layouts of its inputs, from the layout cache when every block of the model is known there,
    else from one real CPU pass at a small size (32x32, else the spec's ``dry_run_size``) that fills the cache.
    None if no probe could run."""
    placeholder = next(n for n in model.graph.nodes if n.op == "placeholder")
    layouts: dict[str, list[str]] = {}
    produced: dict[fx.Node, str] = {placeholder: "contiguous"}
    for node in model.graph.nodes:
        if node.op != "call_module":
            continue
        ins = [produced.get(a) for a in node.args]  # type: ignore[misc]
        out = _LAYOUTS.get((idents[node.name], tuple(ins), fmt)) if None not in ins else None
        if out is None:
            break
        layouts[node.name], produced[node] = ins, out  # type: ignore[assignment]
    else:
        return layouts
    info = getattr(model, "meta", {}).get("srblocks") if isinstance(getattr(model, "meta", None), dict) else None
    dry = getattr(getattr(info, "spec", None), "dry_run_size", None) or (64, 64)
    for probe in ((32, 32), tuple(dry)):
        size = (min(probe[0], shape[-2]), min(probe[1], shape[-1]))
        layouts = {}
        outputs: dict[str, str] = {}

        class Probe(fx.Interpreter):
            def run_node(self, n: fx.Node) -> Any:
                if n.op == "call_module":
                    layouts[n.name] = [tensor_layout(a) for a in self.map_nodes_to_values(n.args, n)]
                result = super().run_node(n)
                if n.op == "call_module" and isinstance(result, torch.Tensor):
                    outputs[n.name] = tensor_layout(result)
                return result

        was_training = model.training
        model.eval()  # never update a training-form model's statistics (BatchNorm)
        try:
            with torch.no_grad():
                Probe(model).run(torch.rand((*shape[:2], *size), dtype=dtype))
        except Exception:  # noqa: BLE001 - too small for this model: try the spec's own dry-run size
            continue
        finally:
            model.train(was_training)
        for name, out in outputs.items():
            _remember(_LAYOUTS, (idents[name], tuple(layouts[name]), fmt), out)
        return layouts
    return None


def block_calls(model: nn.Module, input_shape: Sequence[int], dtype: torch.dtype = torch.float32) -> list[BlockCall]:
    """The block calls of ``model`` for a contiguous ``input_shape`` input (B, C, H, W), in graph order.

    Raises whatever the model raises when it cannot process that shape (as the profiler would)."""
    shape = tuple(int(v) for v in input_shape)
    fmt = model_memory_format(model)
    dtype_name = str(dtype).removeprefix("torch.")
    if _is_chain(model):
        gm: fx.GraphModule = model  # type: ignore[assignment]
        modules = {n.name: gm.get_submodule(str(n.target)) for n in gm.graph.nodes if n.op == "call_module"}
        described = {name: (getattr(m, "block_name", None) or type(m).__name__, getattr(m, "srblocks_args", {}))
                     for name, m in modules.items()}
        idents = {name: _digest({"block": block, "args": _canonical(args), "params": _param_layout(modules[name])})
                  for name, (block, args) in described.items()}
        try:
            metas = _meta_inputs(gm, torch.empty(shape, dtype=dtype, device="meta"), idents)
        except _NotChain:
            metas = None
        if metas is not None:
            layouts = _probe_layouts(gm, shape, dtype, idents, fmt) or {}
            placeholder = next(n.name for n in gm.graph.nodes if n.op == "placeholder")
            calls = []
            for node in gm.graph.nodes:
                if node.op != "call_module":
                    continue
                probed = layouts.get(node.name)
                specs = []
                for i, (arg, t) in enumerate(zip(node.args, metas[node.name])):
                    if probed is not None and i < len(probed):
                        layout = probed[i]
                    else:  # the image arrives contiguous; after a block, a channels-last model's features are NHWC
                        layout = "contiguous" if arg.name == placeholder or t.dim() != 4 else fmt
                    specs.append(_spec(t, layout))
                block, args = described[node.name]
                key = _digest({"ident": idents[node.name], "inputs": [s.as_list() for s in specs], "format": fmt})
                calls.append(BlockCall(node.name, key, block, _label(block, args, specs), modules[node.name],
                                       tuple(specs)))
            return calls
    info = getattr(model, "meta", {}).get("srblocks") if isinstance(getattr(model, "meta", None), dict) else None
    identity: Any = {"spec": info.spec.model_dump(mode="json"), "variables": _canonical(info.variables)} if \
        info is not None else {"module": hashlib.sha1(str(model).encode()).hexdigest()}
    spec = TensorSpec(shape, dtype_name, "contiguous")
    key = _digest({"block": WHOLE_MODEL, "model": identity, "params": _param_layout(model),
                   "inputs": [spec.as_list()], "format": fmt})
    name = info.spec.name if info is not None else type(model).__name__
    return [BlockCall("(model)", key, WHOLE_MODEL, f"{WHOLE_MODEL} {name} on {'x'.join(map(str, shape))}"
                      + ("/NHWC weights" if fmt == "channels_last" else ""), model, (spec,))]
