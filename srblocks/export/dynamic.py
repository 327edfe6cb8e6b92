"""Symbolic height/width for ``torch.export``: the dimension objects, and which spec node prevents them.

A network supports dynamic H and W when ``torch.export`` can record it with both as symbols over
[minimum input size, :data:`MAX_SIDE`]. Where it cannot, :func:`find_blocker` names the node: first the blocks
known to need a fixed size (:data:`FIXED_SIZE_BLOCKS`, with the reason), else the first top-level node that fails
to export on its own with symbolic sizes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import fx, nn

__all__ = ["MAX_SIDE", "FIXED_SIZE_BLOCKS", "spatial_dims", "find_blocker", "minimum_side"]

#: largest symbolic side (pixels) an export declares
MAX_SIDE = 8192

#: block classes that need a fixed input size, and why
FIXED_SIZE_BLOCKS: dict[str, str] = {
    "MaskGuided": "(modes 'mask' and 'all') the mask-guided top-K (K patches of the p x p patch grid, K = resolve_k(k, number of patches)) "
                  "is a Python integer of the input size, and the crop/paste indices depend on the data",
}


def minimum_side(model: nn.Module) -> tuple[int, int]:
    """The smallest LR (height, width) the model accepts (``srblocks.evaluate.minimum_input_size``; at least 2,
    since torch.export treats sizes 0 and 1 as constants)."""
    from ..evaluate import minimum_input_size

    found = minimum_input_size(model) or (1, 1)
    return max(2, found[0]), max(2, found[1])


def spatial_dims(min_hw: tuple[int, int], tag: str = "") -> dict[int, Any]:
    """``{2: Dim(H), 3: Dim(W)}`` for one (B, C, H, W) argument, H in [min_hw[0], MAX_SIDE]."""
    return {2: torch.export.Dim(f"height{tag}", min=min_hw[0], max=MAX_SIDE),
            3: torch.export.Dim(f"width{tag}", min=min_hw[1], max=MAX_SIDE)}


def _known_blocker(model: nn.Module) -> tuple[str, str] | None:
    for name, module in model.named_modules():
        reason = FIXED_SIZE_BLOCKS.get(type(module).__name__)
        if reason is not None and getattr(module, "mode", None) in ("dense", "base"):
            continue  # the decomposed -D network (one refine pass over the whole map) and the base alone: no top-K
        if reason is not None:
            return name or "<model>", f"{type(module).__name__}: {reason}"
    return None


def _node_inputs(model: fx.GraphModule, example: torch.Tensor) -> dict[str, tuple[nn.Module, tuple[Any, ...]]]:
    """Each top-level call_module node's module and positional inputs at ``example``, in graph order."""
    seen: dict[str, tuple[nn.Module, tuple[Any, ...]]] = {}
    handles = []
    for node in model.graph.nodes:
        if node.op != "call_module":
            continue
        module = model.get_submodule(node.target)

        def hook(mod: nn.Module, args: tuple[Any, ...], name: str = str(node.target)) -> None:
            seen.setdefault(name, (mod, args))

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return seen


def find_blocker(model: nn.Module, example: torch.Tensor, min_hw: tuple[int, int]) -> tuple[str, str]:
    """(node id, reason) of the first node that keeps ``model`` from a dynamic-H/W export at ``example``'s size.

    Falls back to ``("<model>", first line of the model-level error)`` when every node exports on its own."""
    known = _known_blocker(model)
    if known is not None:
        return known
    if not isinstance(model, fx.GraphModule):
        return "<model>", "not an fx GraphModule built by srblocks"
    h = example.shape[-2]
    for name, (module, args) in _node_inputs(model, example).items():
        if not args or not all(isinstance(a, torch.Tensor) and a.dim() == 4 for a in args):
            continue
        ratio = args[0].shape[-2] / h
        local_min = (max(2, math.ceil(min_hw[0] * ratio)), max(2, math.ceil(min_hw[1] * ratio)))
        sizes: dict[tuple[int, int], dict[int, Any]] = {}
        shapes = []
        for k, a in enumerate(args):  # inputs of equal spatial size share their symbols
            shapes.append(sizes.setdefault(tuple(a.shape[-2:]), spatial_dims(local_min, f"_{k}")))
        try:
            torch.export.export(module.eval(), tuple(args), dynamic_shapes=tuple(shapes))
        except Exception as exc:  # noqa: BLE001 - any failure names this node
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            return name, f"{type(module).__name__}: {first}"
    return "<model>", "torch.export specialised the input size, but no single node does on its own"
