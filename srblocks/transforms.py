"""Spec-level transforms of assembled models: the MGA mask-guided split (Hu et al., ECCV 2022).

MGA decomposes an SR network along its depth: a Base-Net restores the whole image (coarse feature F_c, upsampled to
a coarse SR image I_c) and a Refine-Net continues from F_c, but only on the K feature patches that the Mask
Prediction module marks as worst; its HR patches overwrite I_c. :func:`mask_guided_transform` does this to any
assembled graph (the decomposed network "D-Net" as a spec), by ``torch.fx`` graph surgery. A spec asks for it with a
top-level mapping::

    mask_guided: {split: out_lr, tail: upsampler.0, k: k}

Definitions on the D-Net graph (G, output O, graph input x):

* ``split`` S: the node whose output is F_c. ``pre`` = S and every node S depends on.
* ``tail`` T: the first node of the reconstruction tail (the upsampler part), a node after S; the tail is T and
  every node that depends on T (so it ends at O).
* Base-Net = ``pre`` + a **new copy of the tail** whose inputs that came from the part between S and T are rewired
  to S (F_c must then have the channels those inputs had). Nodes the tail reads that depend neither on S nor are in
  ``pre`` (e.g. a bilinear skip of x) are copied too. Output: ``(coarse image, F_c, *extras)``.
* Refine-Net = every node not in ``pre`` (the blocks after S and the original tail), with inputs ``(F_c, *extras)``:
  extras are the other ``pre`` values the refine part reads (a long skip from the head, the LR image for a bilinear
  skip), in graph order. They are cropped at the same patches as F_c.
* The pieces become a :class:`~srblocks.blocks.mga.MaskGuided` block (MP module on F_c, top-K, crop with halo,
  refine, paste); the returned GraphModule calls it as its only submodule, ``mga``.

Parameters: -M = D-Net + tail copy + MP; -D (``mask_predictor: false``, ``mode: dense``) = D-Net + tail copy, which
is the paper's "Base + Refine" count. The Base-Net alone (the paper's -B) is the D-Net graph without the refine
part (a spec variable in the shipped specs).

Module paths (state_dict keys): ``mga.base.<id>`` for ``pre`` nodes and the tail copy (the same ids as the tail
nodes), ``mga.mask.*`` (MP), ``mga.refine.<id>`` with a leading ``refine_prefix`` (default ``"refine."``) removed
from the ids of the refine nodes, so a D-Net graph can name its refine blocks ``refine.B1`` (unique in the graph)
while the Refine-Net's own keys are ``B1`` as in the official ``RFDNMGA`` (``refine.B1.*``): an official RFDN-MGA
state_dict maps with the single rename ``'^' -> 'mga.'``.

Fresh weights: the tail copy is built anew from each block's recorded constructor arguments (its own random init);
modules without recorded arguments are deep-copied.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any, Callable, Iterable

from torch import fx, nn

from .blocks.mga import MaskGuided, resolve_k
from .spec.expr import ExpressionError, evaluate, render_template

__all__ = ["mask_guided_transform", "split_graph", "MASK_GUIDED_OPTIONS"]

#: Options of the ``mask_guided:`` mapping: name -> (kind, default); kind "text" values are templates, "number" and
#: "bool" values may be expressions over the spec variables. ``...`` marks a required option.
MASK_GUIDED_OPTIONS: dict[str, tuple[str, Any]] = {
    "split": ("text", ...),
    "tail": ("text", ...),
    "k": ("number", None),
    "patch_size": ("number", 4),
    "halo": ("number", 1),
    "mask_kernel_size": ("number", 5),
    "temperature": ("number", 1.0),
    "mode": ("text", "mask"),
    "mask_predictor": ("bool", True),
    "refine_prefix": ("text", "refine."),
}


def _option_values(options: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(options, dict):
        raise ValueError(f"mask_guided must be a mapping of options, got {type(options).__name__}")
    unknown = sorted(set(options) - set(MASK_GUIDED_OPTIONS))
    if unknown:
        raise ValueError(f"unknown mask_guided option(s) {unknown}; known: {', '.join(MASK_GUIDED_OPTIONS)}")
    out: dict[str, Any] = {}
    for name, (kind, default) in MASK_GUIDED_OPTIONS.items():
        if name not in options or options[name] is None:
            if default is ...:
                raise ValueError(f"mask_guided.{name} is required")
            out[name] = default
            continue
        value = options[name]
        try:
            if kind == "text":
                if not isinstance(value, str):
                    raise ValueError(f"mask_guided.{name} must be a string, got {value!r}")
                # a string equal to a variable holding text takes its value (as block arguments do)
                value = variables[value] if isinstance(variables.get(value), str) else render_template(value, variables)
            elif isinstance(value, str):
                value = evaluate(value, variables)
        except ExpressionError as exc:
            raise ValueError(f"mask_guided.{name}: {exc}") from None
        out[name] = value
    for name in ("patch_size", "mask_kernel_size"):
        if isinstance(out[name], bool) or not isinstance(out[name], int) or out[name] < 1:
            raise ValueError(f"mask_guided.{name} must be a positive integer, got {out[name]!r}")
    if isinstance(out["halo"], bool) or not isinstance(out["halo"], int) or out["halo"] < 0:
        raise ValueError(f"mask_guided.halo must be an integer >= 0, got {out['halo']!r}")
    if not isinstance(out["mask_predictor"], bool):
        raise ValueError(f"mask_guided.mask_predictor must be true or false, got {out['mask_predictor']!r}")
    if out["mode"] not in ("mask", "all", "dense", "base"):
        raise ValueError(f"mask_guided.mode must be one of mask, all, dense, base, got {out['mode']!r}")
    if out["k"] is None:
        if out["mode"] == "mask":
            raise ValueError("mask_guided.k (patches refined per image: a count, or a fraction in [0, 1]) is required")
        out["k"] = 0
    resolve_k(out["k"], 1)  # validates
    return out


# ------------------------------------------------------------------------------------------------------ surgery


def _reachable(node: fx.Node, step: Callable[[fx.Node], Iterable[fx.Node]]) -> set[fx.Node]:
    """Nodes reachable from ``node`` by repeatedly following ``step`` (``node`` itself and the output excluded)."""
    seen: set[fx.Node] = set()
    stack = list(step(node))
    while stack:
        n = stack.pop()
        if n not in seen and n.op != "output":
            seen.add(n)
            stack.extend(step(n))
    return seen


def _ancestors(node: fx.Node) -> set[fx.Node]:
    return _reachable(node, lambda n: n.all_input_nodes)


def _descendants(node: fx.Node) -> set[fx.Node]:
    return _reachable(node, lambda n: n.users)


def _fresh_copy(module: nn.Module) -> nn.Module:
    """A new instance of a spec-built block (own random init, same arguments); others are deep-copied."""
    args = getattr(module, "srblocks_args", None)
    if isinstance(args, dict) and not any(isinstance(v, nn.Module) for v in args.values()):
        try:
            new = type(module)(**args)
        except Exception:  # noqa: BLE001 - any reconstruction failure falls back to a copy
            new = copy.deepcopy(module)
        else:
            new.srblocks_args = dict(args)  # type: ignore[assignment]
            new.train(module.training)
        return new
    return copy.deepcopy(module)


def _channels(model: fx.GraphModule, node: fx.Node) -> int | None:
    if node.op != "call_module":
        return None
    value = getattr(model.get_submodule(str(node.target)), "out_channels", None)
    return value if isinstance(value, int) else None


def _module_id(node: fx.Node) -> str:
    return str(node.target)


def split_graph(
    model: fx.GraphModule, split: str, tail: str, refine_prefix: str = "refine."
) -> tuple[fx.GraphModule, fx.GraphModule, dict[str, Any]]:
    """Split a D-Net GraphModule into (Base-Net, Refine-Net, info) as described in the module docstring.

    Returns:
        base: (B, C_in, H, W) -> (coarse (B, C_out, sH, sW), F_c (B, nf, H, W), *extras (B, C_i, H, W)).
        refine: (F_c patch, *extra patches) -> SR output of the refine part (same spatial rule as the D-Net).
        info: ``nf``, ``out_channels``, ``in_channels`` (or None), ``extras`` (ids), ``refine_ids``, ``tail_ids``.

    Raises:
        ValueError: unknown/ill-placed ``split`` or ``tail``, several graph inputs, a rewired tail input whose
            channels differ from F_c, or id collisions after removing ``refine_prefix``.
    """
    graph = model.graph
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"the mask-guided form needs a network with one input, this one has {len(placeholders)}")
    for n in nodes:
        if n.op == "get_attr":
            raise ValueError(f"graph node {n.name!r} reads an attribute; only module/function calls can be split")
    output = next(n for n in nodes if n.op == "output")
    result = output.args[0]
    if not isinstance(result, fx.Node):
        raise ValueError("the network must return a single tensor")
    by_id = {_module_id(n): n for n in nodes if n.op == "call_module"}

    def lookup(name: str, what: str) -> fx.Node:
        if name not in by_id:
            close = difflib.get_close_matches(name, list(by_id), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"{what} {name!r} is not a node of the network{hint}")
        return by_id[name]

    s_node = lookup(split, "split")
    t_node = lookup(tail, "tail")
    pre = _ancestors(s_node) | {s_node}
    after_s = _descendants(s_node)
    if s_node is result:
        raise ValueError(f"split {split!r} is the network output: nothing is left to refine")
    if t_node not in after_s:
        raise ValueError(f"tail {tail!r} must come after the split node {split!r} (it must depend on it)")
    tail_set = _descendants(t_node) | {t_node}
    if result not in tail_set:
        raise ValueError(f"the network output does not depend on tail {tail!r}")
    refine_nodes = [n for n in nodes if n.op not in ("placeholder", "output") and n not in pre]
    body_nodes = [n for n in refine_nodes if n not in tail_set and n in after_s]
    if not body_nodes:
        raise ValueError(
            f"no refine blocks between split {split!r} and tail {tail!r}: the Refine-Net would only repeat the tail"
        )

    # ---- inputs of the refine part: F_c first, then the other pre values it reads (graph order)
    read = {a for n in refine_nodes for a in n.all_input_nodes}
    if s_node not in read:
        raise ValueError(f"no node after the split reads {split!r}")
    extras = [n for n in nodes if n in read and n in pre and n is not s_node]

    # ---- base: pre + (side nodes the tail needs) + tail copy with the S..T part rewired to S
    nf = _channels(model, s_node)
    needed_side: set[fx.Node] = set()
    stack = [a for n in tail_set for a in n.all_input_nodes]
    while stack:
        a = stack.pop()
        if a in pre or a in tail_set or a in after_s or a in needed_side:
            continue
        needed_side.add(a)
        stack.extend(a.all_input_nodes)
    rewired: list[str] = []
    for n in tail_set:
        for a in n.all_input_nodes:
            if a in after_s and a not in tail_set:
                c = _channels(model, a)
                if nf is not None and c is not None and c != nf:
                    raise ValueError(
                        f"tail node {_module_id(n)!r} reads {_module_id(a)!r} ({c} channels); in the Base-Net it reads "
                        f"the split feature {split!r} instead, which has {nf} channels"
                    )
                rewired.append(_module_id(a))

    def build(
        keep: list[fx.Node],
        inputs: list[fx.Node],
        outputs: list[fx.Node],
        rename: dict[fx.Node, str],
        copies: set[fx.Node],
        redirect: dict[fx.Node, fx.Node],
        input_names: list[str],
    ) -> fx.GraphModule:
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for n, name in zip(inputs, input_names):
            env[n] = g.placeholder(name)
        modules: dict[str, nn.Module] = {}

        def arg(a: fx.Node) -> fx.Node:
            return env[redirect.get(a, a)]

        for n in keep:
            if n in env:
                continue
            args = fx.map_arg(n.args, arg)
            kwargs = fx.map_arg(n.kwargs, arg)
            if n.op == "call_module":
                name = rename.get(n, _module_id(n))
                if name in modules:
                    raise ValueError(f"two nodes become the sub-network module {name!r}")
                mod = model.get_submodule(_module_id(n))
                modules[name] = _fresh_copy(mod) if n in copies else mod
                env[n] = g.call_module(name, args, kwargs)  # type: ignore[arg-type]
            else:
                env[n] = g.create_node(n.op, n.target, args, kwargs)  # type: ignore[arg-type]
        outs = [env[redirect.get(o, o)] for o in outputs]
        g.output(outs[0] if len(outs) == 1 else tuple(outs))
        g.lint()
        return fx.GraphModule(modules, g, class_name="SubNet")

    x = placeholders[0]
    base_keep = [n for n in nodes if n in pre or n in needed_side or n in tail_set]
    base_keep = [n for n in base_keep if n.op != "placeholder"]
    redirect = {a: s_node for n in tail_set for a in n.all_input_nodes if a in after_s and a not in tail_set}
    base = build(base_keep, [x], [result, s_node, *extras], {}, needed_side | tail_set, redirect, [x.name])
    rename = {}
    for n in refine_nodes:
        if n.op == "call_module" and refine_prefix and _module_id(n).startswith(refine_prefix):
            rename[n] = _module_id(n)[len(refine_prefix):]
    refine_inputs = [s_node, *extras]
    refine = build(
        refine_nodes, refine_inputs, [result], rename, set(), {},
        ["feat", *[f"extra_{i}" if e.op != "placeholder" else e.name for i, e in enumerate(extras)]],
    )
    out_channels = _channels(model, result)
    extra_channels = [_channels(model, e) for e in extras]
    in_channels = None
    for user in x.users:
        if user.op == "call_module":
            c = getattr(model.get_submodule(_module_id(user)), "in_channels", None)
            if isinstance(c, int):
                in_channels = c
                break
    base.out_channels = [out_channels, nf, *extra_channels]  # type: ignore[assignment]
    refine.out_channels = out_channels  # type: ignore[assignment]
    info = {
        "nf": nf,
        "out_channels": out_channels,
        "in_channels": in_channels,
        "extras": [e.name if e.op == "placeholder" else _module_id(e) for e in extras],
        "refine_ids": [rename.get(n, _module_id(n)) for n in refine_nodes if n.op == "call_module"],
        "tail_ids": [_module_id(n) for n in nodes if n in tail_set and n.op == "call_module"],
        "rewired": sorted(set(rewired)),
    }
    return base, refine, info


def mask_guided_transform(model: fx.GraphModule, options: dict[str, Any], variables: dict[str, Any]) -> fx.GraphModule:
    """The mask-guided (MGA) form of an assembled D-Net: ``x -> mga(x)`` with ``mga`` a :class:`MaskGuided`.

    Called by :func:`srblocks.build_model` for a spec with a top-level ``mask_guided:`` mapping. Options (strings are
    expressions over the spec variables for numbers, templates for names):

    * ``split`` (required): node id of the coarse feature F_c (the Base-Net's last node before its upsampler).
    * ``tail`` (required): node id where the reconstruction tail starts (copied into the Base-Net, see module doc).
    * ``k``: patches refined per image, an int count or a float fraction of the p x p patches (required in mode
      ``mask``). ``patch_size`` (4), ``halo`` (1), ``mask_kernel_size`` (5), ``temperature`` (1.0): as
      :class:`MaskGuided`.
    * ``mode``: ``mask`` (default; -M), ``all`` (All-Net), ``dense`` (-D), ``base`` (coarse only). Changeable later:
      ``model.mga.mode = "all"`` or ``model.mga.run(x, mode=..., k=...)``.
    * ``mask_predictor`` (true): false leaves the MP module out (the -D network's parameters).
    * ``refine_prefix`` ("refine."): removed from refine node ids to name the Refine-Net's modules.

    The call's intermediate results (coarse image, mask, selected patches) are in ``model.mga.last``.
    """
    opts = _option_values(options, variables)
    base, refine, info = split_graph(model, opts["split"], opts["tail"], opts["refine_prefix"])
    if info["nf"] is None or info["out_channels"] is None:
        raise ValueError("could not read the channel counts of the split node and the output (out_channels)")
    mga = MaskGuided(
        in_channels=info["in_channels"] or 3,
        base=base,
        refine=refine,
        dim=info["nf"],
        k=opts["k"],
        out_channels=info["out_channels"],
        patch_size=opts["patch_size"],
        halo=opts["halo"],
        mask_kernel_size=opts["mask_kernel_size"],
        temperature=float(opts["temperature"]),
        mode=opts["mode"],
        mask_predictor=opts["mask_predictor"],
    )
    mga.split_info = info  # type: ignore[assignment]
    mga.train(model.training)
    g = fx.Graph()
    x = g.placeholder(next(n.name for n in model.graph.nodes if n.op == "placeholder"))
    g.output(g.call_module("mga", (x,)))
    return fx.GraphModule({"mga": mga}, g, class_name="SRNet")
