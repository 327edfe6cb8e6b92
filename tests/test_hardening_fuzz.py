"""Fuzzing every shipped spec: whatever the mutation, a spec ends as a located error or a working model, in bounds.

Each case mutates one shipped spec (made small so a case is cheap): its structure (nodes deleted, duplicated, wrapped
in repeats, keys removed or added), the types and magnitudes of its values (huge integers, NaN, long strings, deep
nesting, recursive YAML, alias bombs), its expressions (exponent towers, string and list doubling chains, string
formatting), its ids (torch attribute names, keywords, dotted prefixes of other ids), its ``extends`` chain (cycles
through un-normalised paths, long names, huge or unreadable files, chains that are too long) and the variable
overrides given through the API or ``srblocks summary --set``. The spec is written to a YAML file and built with
:func:`srblocks.build_model` (or the CLI) in a forked child of this process (srblocks already imported, so a case
costs a fork, not an interpreter start) under an address-space limit and a timeout.

Outcomes: ``located`` (a SpecError naming its file, or the CLI's exit 2 whose message names the file), ``working``
(a model whose real forward pass maps (1, C, H, W) to (1, C, s*H, s*W)); anything else fails the test: a raw
exception, an error without a location, a hang, memory exhaustion, a wrong output shape. The default run tries
300 cases (10-30 s on one core, about 0.03-0.1 s a case); ``pytest -m slow`` tries 5,000. Each failure is
listed with its case number, base spec and mutations; ``SRBLOCKS_FUZZ_SEED``, ``SRBLOCKS_FUZZ_CASES`` and
``SRBLOCKS_FUZZ_LOG`` (one JSON line per case) reproduce and inspect a run.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import io
import json
import os
import random
import resource
import select
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import srblocks
from srblocks import SpecError
from srblocks.errors import MAX_MESSAGE
from srblocks.spec import load_spec, shipped_spec_names

DEFAULT_CASES = 300
SLOW_CASES = 5000
CASE_TIMEOUT = 30.0  # seconds per case (cases take about 0.05 s; the limits bound the worst legal build)
MEMORY_HEADROOM = 3 << 30  # bytes of address space a case may add to what this process already maps

#: small settings of the shipped specs' variables (only those a spec has are used; a base that fails keeps its own)
SMALL = {"n_blocks": 1, "dim": 8, "n_feats": 16, "mid_feats": 8, "warmup_mid": 8, "down_blocks": 1, "n_groups": 1,
         "n_resblocks": 1, "refine_groups": 1, "nf": 16, "unf": 8, "refine_blocks": 1, "d": 8, "s": 4,
         "qk_dim": 8, "mlp_dim": 16, "patch_sizes": [8, 8], "n_pub": 1, "n_hpub": 1}

EXPRESSIONS = [
    "((((10**64)**64)**64)**64)**64", "2**63", "2**64", "10**10**10", "9**9**9", "2**-2000", "'a' + 'b'",
    "[1] * 10**9", "'x' * 10**9", "'%0999999999d' % 1", "'%s' % dim", "round(5, -10**9)", "round(2.5, 10**9)",
    "float('inf')", "float('nan')", "float('1e999')", "int(1e308)", "int('9' * 400)", "(-8) ** 0.5",
    "-" * 300 + "1", "(" * 150 + "1" + ")" * 150, "max([])", "min(1)", "len(5)", "[1, 2][5]", "{'a': 1}",
    "__import__('os')", "().__class__", "dim if dim else", "scale ** -1", "1 / 0", "1 // 0", "True + 1",
    "[i for i in range(10)]", "lambda: 1", "x.y", "'a' < 1", "n_blocks * 2**62", "scale * 2", "dim", "nope",
    "1 +", "'text'", "n_feats - 4", "[1, 2]", "", " ", "scale == 4", "int(dim * 1.5)", "abs(-3)",
    "len(patch_sizes)", "patch_sizes[0]", "patch_sizes[10**9]", "patch_sizes['a']", "2 ** 0.5 ** 200",
    "1e308 * 10", "10**38", "(10**38) ** 3", "'a' + 1", "not dim", "dim and scale", "x" * 600,
]
MAGNITUDES = [0, 1, -1, 2, 3, 7, 64, 70, -3, 2**31, 2**31 - 1, 2**63, 2**63 - 1, -(2**63), 2**64, 10**30, 10**100,
              10**400, 1e308, -1e308, float("nan"), float("inf"), float("-inf"), 1e-300, -0.0, 0.5, 1.5, 2.0]
STRINGS = ["", " ", "x", "dim", "scale", "bilinear", "relu", "lrelu", "mask", "a" * 300, "a" * 20000, "\t", "é",
           "{", "}", "{i}", "None", "null", "true", "1e3", "0x10", "\\x00"]
IDS = ["__class__", "self", "meta", "training", "graph", "half", "__init__", "forward", "code", "float", "to",
       "type", "_modules", "state_dict", "class", "in", "None", "", "a..b", ".a", "a.", "x{", "x}", "{i}",
       "feats.{i + 1}", "a b", "é", "\t", "a" * 300, "head.weight", "{10**9}", "{'a' * 100}", "{[1, 2]}",
       "{2**200}", "{'a' + 'b'}", "{1/0}", "x" * 5000, "training.x", "a.__dict__", "a.0", "0", "image", "input"]
ARG_NAMES = ["out_channels", "scale", "dim", "kernel_size", "n_resblocks", "n_blocks", "patch_size", "reduction",
             "mid_feats", "groups", "padding", "ratio", "n_levels", "ffn_scale", "mode", "kind", "negative_slope",
             "bias", "inner", "base", "refine", "k", "halo", "in_channels", "x", "n_feat", "nf", "stride"]
TOP_KEYS = ["name", "inputs", "output", "variables", "dry_run_size", "input_range", "memory_format", "mask_guided",
            "y_convention", "nodes", "expected", "official_checkpoint", "notes", "bogus", "extends", "paper"]


# ---------------------------------------------------------------------------------------------------------------
# bases
# ---------------------------------------------------------------------------------------------------------------


def _small(raw: dict[str, Any]) -> dict[str, Any]:
    variables = dict(raw.get("variables") or {})
    changed = {k: v for k, v in SMALL.items() if k in variables and variables[k] not in (0, False)
               and not (isinstance(variables[k], int) and isinstance(v, int) and variables[k] <= v)}
    return {**raw, "variables": {**variables, **changed}, "expected": []}


_BASES: list[tuple[str, dict[str, Any]]] = []


def bases() -> list[tuple[str, dict[str, Any]]]:
    """Every shipped spec (its merged raw mapping, without extends), with small variables where they build."""
    if not _BASES:
        from srblocks.cli import _load_command_modules

        _load_command_modules()  # the CLI's sub-command modules (and optuna) load once, not in every child
        for name in shipped_spec_names():
            raw = {k: v for k, v in copy.deepcopy(dict(load_spec(name).raw)).items() if k != "extends"}
            small = _small(raw)
            try:
                srblocks.build_model(copy.deepcopy(small))
                raw = small
            except SpecError:
                raw = {**raw, "expected": []}
            _BASES.append((name, raw))
    return _BASES


# ---------------------------------------------------------------------------------------------------------------
# mutations
# ---------------------------------------------------------------------------------------------------------------


def _nested(rng: random.Random, depth: int) -> Any:
    value: Any = rng.choice([1, "x", None])
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10)
    if kind == 0:
        return rng.choice(MAGNITUDES)
    if kind == 1:
        return rng.randint(-3, 70)
    if kind == 2:
        return rng.choice(STRINGS)
    if kind in (3, 4):
        return rng.choice(EXPRESSIONS)
    if kind == 5:
        return rng.choice([True, False, None])
    if kind == 6 and depth < 3:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == 7 and depth < 3:
        options = [{}, {"each": random_value(rng, depth + 1)}, {"nodes": random_value(rng, depth + 1)},
                   {"nodes": [{"id": "a", "block": rng.choice(srblocks.block_names())}]},
                   {"inputs": {"x": 8}, "nodes": [{"id": "a", "block": "conv"}]},
                   {"a": random_value(rng, depth + 1)}]
        return rng.choice(options)
    if kind == 8:
        return _nested(rng, rng.choice([5, 40, 70, 300]))
    return rng.choice([[1, 2, 3], list(range(rng.choice([10, 2000]))), {"each": [1, 2]}, [[1, 2], [3]]])


def _node_lists(value: Any, out: list[list[Any]]) -> list[list[Any]]:
    """Every ``nodes`` list in a spec (top level, repeat bodies, sub-graph arguments)."""
    if isinstance(value, dict):
        if isinstance(value.get("nodes"), list):
            out.append(value["nodes"])
        for v in value.values():
            _node_lists(v, out)
    elif isinstance(value, list):
        for v in value:
            _node_lists(v, out)
    return out


def _nodes(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for lst in _node_lists(spec, []) for n in lst if isinstance(n, dict)]


def _ids(spec: dict[str, Any]) -> list[str]:
    return [n["id"] for n in _nodes(spec) if isinstance(n.get("id"), str)]


def _chain(kind: str, n: int = 40) -> dict[str, Any]:
    if kind == "str":
        return {"s0": "'abcdefghij'", **{f"s{i}": f"s{i - 1} + s{i - 1}" for i in range(1, n)}}
    if kind == "list":
        return {"l0": "[1, 2, 3]", **{f"l{i}": f"[l{i - 1}, l{i - 1}]" for i in range(1, n)}}
    if kind == "concat":
        return {"l0": "[1, 2, 3]", **{f"l{i}": f"l{i - 1} + l{i - 1}" for i in range(1, n)}}
    return {"i0": "2**60", **{f"i{i}": f"i{i - 1} * i{i - 1}" for i in range(1, n)}}


def mutate_structure(rng: random.Random, spec: dict[str, Any]) -> str:
    lists = [lst for lst in _node_lists(spec, []) if lst]
    if not lists:
        return "no nodes"
    lst = rng.choice(lists)
    k = rng.randrange(len(lst))
    op = rng.randrange(9)
    if op == 0:
        del lst[k]
        return "delete node"
    if op == 1:
        lst.insert(k, copy.deepcopy(lst[k]))
        return "duplicate node"
    if op == 2:
        j = rng.randrange(len(lst))
        lst[k], lst[j] = lst[j], lst[k]
        return "swap nodes"
    if op == 3:
        count = rng.choice([0, 1, 2, 3, -1, 10**4, 10**5, 2**63, "2**63", "n_blocks * 1000", 1.5, "x", None, [2]])
        lst[k] = {"repeat": count, "nodes": [lst[k]]}
        return f"wrap in repeat {count!r:.40}"
    if op == 4:
        lst[k] = rng.choice([5, "x", [], None, {}, {"id": "a"}, {"block": "conv"}, [lst[k]]])
        return "node of the wrong type"
    node = lst[k]
    if not isinstance(node, dict):
        return "no-op"
    if op == 5:
        if node:
            node.pop(rng.choice(sorted(node)))
        return "remove node key"
    if op == 6:
        node[rng.choice(["foo", "note", "args", "inputs", "index", "nodes"])] = random_value(rng)
        return "set node key"
    if op == 7 and "repeat" in node:
        node["repeat"] = rng.choice([*MAGNITUDES, *EXPRESSIONS[:12], "n_blocks", [1], {"a": 1}])
        return "repeat count"
    if op == 7 and "repeat" not in node:
        node["inputs"] = rng.choice([[], "missing", 5, [5], rng.sample(_ids(spec) + ["image", "x"], k=min(
            3, len(_ids(spec)) + 2)), ["{i}"], ["a" * 300]])
        return "inputs"
    node["block"] = rng.choice(srblocks.block_names() + ["unknown_block", "", 5, None])
    return "block"


def mutate_value(rng: random.Random, spec: dict[str, Any]) -> str:
    nodes = [n for n in _nodes(spec) if "block" in n]
    if rng.random() < 0.6 and nodes:
        node = rng.choice(nodes)
        args = node.setdefault("args", {})
        if not isinstance(args, dict):
            node["args"] = args = {}
        name = rng.choice(sorted(args) or ARG_NAMES) if rng.random() < 0.6 else rng.choice(ARG_NAMES)
        args[name] = random_value(rng)
        return f"arg {name}"
    variables = spec.setdefault("variables", {})
    if not isinstance(variables, dict):
        spec["variables"] = variables = {}
    if rng.random() < 0.15:
        kind = rng.choice(["str", "list", "concat", "int"])
        variables.update(_chain(kind))
        return f"{kind} doubling chain"
    name = rng.choice(sorted(variables) or ["scale"]) if rng.random() < 0.8 else rng.choice(["new", "i", "__repeat__"])
    variables[name] = random_value(rng)
    return f"variable {name}"


def mutate_id(rng: random.Random, spec: dict[str, Any]) -> str:
    nodes = [n for n in _nodes(spec) if "id" in n]
    if not nodes:
        return "no ids"
    node = rng.choice(nodes)
    others = [i for i in _ids(spec) if i != node["id"]]
    pool = IDS + ([f"{rng.choice(others)}.x", rng.choice(others), rng.choice(others).split(".")[0]] if others else [])
    new = rng.choice(pool)
    old = node["id"]
    node["id"] = new
    if rng.random() < 0.5:  # keep the graph connected: point the consumers of the old id at the new one
        for n in _nodes(spec):
            if isinstance(n.get("inputs"), list):
                n["inputs"] = [new if i == old else i for i in n["inputs"]]
        if spec.get("output") == old:
            spec["output"] = new
    return f"id {new!r:.40}"


def mutate_top(rng: random.Random, spec: dict[str, Any]) -> str:
    key = rng.choice(TOP_KEYS)
    ids = _ids(spec) or ["x"]
    pools: dict[str, list[Any]] = {
        "dry_run_size": [[-1, -1], [0, 64], [1, 1], [4096, 4096], [5000, 5], "64x64", [64], 2**63, [2**63, 1],
                         [3, 7], [1.5, 2], [16, 16], [64, 48]],
        "inputs": [{}, {"self": 3}, {"class": 3}, {"x": 0}, {"x": -1}, {"x": "2**100"}, {"image": 1},
                   {"image": 48}, {"image": 3, "extra": 3}, [3], "image", {"a.b": 3}, {"": 3}, {"x": 2**40},
                   {"__class__": 3}, {"image": "3 if scale else 1"}],
        "output": [rng.choice(ids), ids[:2], [], "missing", 5, "{i}", None, ids[0]],
        "mask_guided": [{}, {"split": rng.choice(ids)}, {"split": rng.choice(ids), "tail": rng.choice(ids),
                        "k": random_value(rng)}, 5, {"split": ids[0], "tail": ids[-1], "mode": "dense",
                        "mask_predictor": False}],
        "input_range": [0, -1, float("nan"), float("inf"), "255", 1e308, True, 255.0, None],
        "memory_format": ["nhwc", "channels_last", 5, None],
        "y_convention": ["uint8", "int", None],
        "extends": [5, [], None, "", "nope", "safmn"],
        "official_checkpoint": [{"drop": ["(a*)*b"]}, {"drop": ["("]}, {"renames": [{"pattern": "(x+)+", "replacement":
                                "y"}]}, {"renames": 5}, {"drop": ["a" * 2000]}, {"source": 5}, {}],
    }
    if key == "mask_guided" and isinstance(spec.get("mask_guided"), dict) and rng.random() < 0.6:
        option = rng.choice(["k", "patch_size", "halo", "mode", "split", "tail", "temperature", "mask_kernel_size",
                             "mask_predictor", "refine_prefix", "bogus"])
        spec["mask_guided"][option] = random_value(rng)
        return f"mask_guided.{option}"
    if key in ("name", "nodes", "variables") and rng.random() < 0.3:
        spec.pop(key, None)
        return f"remove {key}"
    spec[key] = rng.choice(pools[key]) if key in pools and rng.random() < 0.8 else random_value(rng)
    return f"top-level {key}"


def mutate_overrides(rng: random.Random, spec: dict[str, Any]) -> dict[str, Any]:
    names = sorted(spec.get("variables") or {}) if isinstance(spec.get("variables"), dict) else []
    recursive: list[Any] = []
    recursive.append(recursive)
    pool = [*MAGNITUDES, *STRINGS[:10], [1, 2], _nested(rng, 100), recursive, {"a": 1}, None, True]
    out = {}
    for _ in range(rng.randint(1, 2)):
        name = rng.choice(names + ["unknown", "x" * 300]) if names and rng.random() < 0.85 else "unknown"
        out[name] = rng.choice(pool)
    return out


YAML_TEXT = ["alias bomb", "recursive alias", "deep flow", "deep block", "huge file", "bad utf-8", "truncated",
             "garbage", "huge int", "python tag", "tabs", "merge bomb"]


def mutate_text(rng: random.Random, text: str) -> tuple[bytes, str]:
    kind = rng.choice(YAML_TEXT)
    if kind == "alias bomb":
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
            f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
        where = rng.choice(["notes: *a8", "variables: {v: *a8}", "expected: *a8"])
        text = "\n".join(lines) + "\n" + text + "\n" + where + "\n"
    elif kind == "merge bomb":
        lines = ["m0: &m0 {a: 1, b: 2}"] + [f"m{i}: &m{i} {{<<: [*m{i - 1}], k{i}: [*m{i - 1}, *m{i - 1}, *m{i - 1}]}}"
                                             for i in range(1, 14)]
        text = "\n".join(lines) + "\n" + text + "\nnotes: *m13\n"
    elif kind == "recursive alias":
        text += rng.choice(["\nnotes: &r [1, *r]\n", "\nvariables: &v {a: *v}\n", "\nmask_guided: &m {x: *m}\n"])
    elif kind == "deep flow":
        n = rng.choice([70, 300, 3000])
        text += f"\nnotes: {'[' * n}{']' * n}\n"
    elif kind == "deep block":
        n = rng.choice([70, 300])
        text += "\nnotes:\n" + "".join(f"{'  ' * i}- \n" for i in range(1, n)) + f"{'  ' * n}- 1\n"
    elif kind == "huge file":
        text += "\n#" + "x" * ((1 << 20) + 10) + "\n"
    elif kind == "bad utf-8":
        return b"\xff\xfe\x00" + text.encode(), kind
    elif kind == "truncated":
        text = text[: rng.randrange(max(1, len(text)))]
    elif kind == "garbage":
        k = rng.randrange(max(1, len(text)))
        text = text[:k] + rng.choice(["{[", ":", "\t", "- - -", "&", "*nope", "!!", "'", '"', "%YAML 9\n"]) + text[k:]
    elif kind == "huge int":
        text += f"\nnotes: 1{'0' * rng.choice([400, 5000, 100000])}\n"
    elif kind == "python tag":
        text += "\nnotes: !!python/object/apply:os.system ['true']\n"
    elif kind == "tabs":
        text = text.replace("  ", "\t", 3)
    return text.encode(), kind


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _dump(spec: Any) -> str:
    try:
        return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=1 << 20)
    except (yaml.YAMLError, RecursionError, ValueError):
        return "name: unrepresentable\nnodes: []\n"


def mutate_extends(rng: random.Random, spec: dict[str, Any], base_name: str, work: Path) -> tuple[Path, str]:
    """A spec file whose ``extends`` chain is broken (or, sometimes, fine), in its own folder under ``work``."""
    d = work / "d"
    small = spec.get("variables") if isinstance(spec.get("variables"), dict) else {}
    overlay = {"name": "derived", "variables": dict(small), "expected": []}  # keep the shipped base cheap
    kind = rng.randrange(12)
    if kind == 0:
        return _write(d / "p.yaml", _dump({"extends": "../d/p.yaml", **overlay})), "extends itself via ../d"
    if kind == 1:
        _write(d / "q.yaml", _dump({"extends": "./p.yaml", "name": "q"}))
        return _write(d / "p.yaml", _dump({"extends": "../d/q.yaml", **overlay})), "extends cycle via ../d"
    if kind == 2:
        _write(d / "c0.yaml", _dump({"extends": base_name, "name": "c0"}))
        for i in range(1, 20):
            _write(d / f"c{i}.yaml", _dump({"extends": f"c{i - 1}.yaml", "name": f"c{i}"}))
        return d / "c19.yaml", "extends chain of 20"
    if kind == 3:
        target = rng.choice(["a" * 300, "a/" * 300 + "x.yaml", "x" * 5000 + ".yaml", "/dev/zero", "/proc/self/mem",
                             "/etc/passwd", ".", "..", "/", "nonexistent.yaml", "nonexistent", "\x00", "~",
                             "../../../../../../etc/passwd", "arch_specs/" + base_name + ".yaml", "safmn "])
        return _write(d / "p.yaml", _dump({"extends": target, **overlay})), f"extends {target[:30]!r}"
    if kind == 4:
        _write(d / "big.yaml", "name: big\nnodes: []\n#" + "x" * ((1 << 20) + 10) + "\n")
        return _write(d / "p.yaml", _dump({"extends": "big.yaml", **overlay})), "extends a huge file"
    if kind == 5:
        (d / "sub.yaml").mkdir(parents=True, exist_ok=True)
        return _write(d / "p.yaml", _dump({"extends": "sub.yaml", **overlay})), "extends a folder"
    if kind == 6:
        _write(d / "base.yaml", mutate_text(rng, _dump(spec))[0])
        return _write(d / "p.yaml", _dump({"extends": "base.yaml", **overlay})), "extends a broken YAML file"
    if kind == 7:
        mutated = copy.deepcopy(spec)
        mutate_value(rng, mutated)
        _write(d / "base.yaml", _dump(mutated))
        return _write(d / "p.yaml", _dump({"extends": "../d/base.yaml", **overlay})), "extends a mutated base"
    if kind == 8:
        variables = spec.get("variables") if isinstance(spec.get("variables"), dict) else {}
        name = rng.choice(sorted(variables) or ["scale"])
        return _write(d / "p.yaml", _dump({"extends": base_name, **overlay, "variables": {
            **small, name: random_value(rng)}})), "extends a shipped spec, variable overlay"
    if kind == 9:
        return _write(d / "p.yaml", _dump({"extends": base_name, **overlay, "variables": random_value(rng)})), \
            "extends, variables of any type"
    if kind == 10:
        _write(d / "base.yaml", _dump(spec))
        return _write(d / "p.yaml", _dump({"extends": "base.yaml", **overlay, "nodes": random_value(rng)})), \
            "extends, nodes of any type"
    return _write(d / "p.yaml", _dump({"extends": base_name, **overlay})), "extends a shipped spec"


def mutate_python(rng: random.Random, spec: dict[str, Any]) -> str:
    """Values only a Python mapping can hold: shared-reference bombs, self-references, huge ints, odd types."""
    bomb: Any = ["x"] * 9
    for _ in range(rng.choice([3, 8, 30])):
        bomb = [bomb] * 9
    loop: list[Any] = [1]
    loop.append(loop)
    looped: dict[str, Any] = {"a": 1}
    looped["self"] = looped
    value = rng.choice([bomb, loop, looped, 10**5000, -(10**5000), _nested(rng, 1000), (1, 2), {1, 2}, b"bytes",
                        object(), torch.zeros(3), {1: "int key"}, {("t",): 1}, float("nan"), range(10**12)])
    target = rng.choice(["variable", "arg", "top", "node"])
    nodes = [n for n in _nodes(spec) if "block" in n]
    if target == "variable" and isinstance(spec.get("variables"), dict):
        spec["variables"][rng.choice(sorted(spec["variables"]) or ["v"])] = value
    elif target == "arg" and nodes:
        node = rng.choice(nodes)
        if not isinstance(node.get("args"), dict):
            node["args"] = {}
        node["args"][rng.choice(sorted(node["args"]) or ARG_NAMES)] = value
    elif target == "node" and nodes:
        rng.choice(nodes)[rng.choice(["id", "inputs", "block"])] = value
    else:
        spec[rng.choice(TOP_KEYS)] = value
    return f"python value {type(value).__name__} at {target}"


@dataclass
class Case:
    index: int
    base: str
    what: list[str]
    path: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    cli: list[str] | None = None
    mapping: dict[str, Any] | None = None  # built from this mapping (not the file) when set

    def describe(self) -> str:
        return f"case {self.index} ({self.base}: {'; '.join(self.what)}{'; CLI' if self.cli else ''})"


def make_case(index: int, seed: int, work: Path) -> Case:
    rng = random.Random(seed * 1_000_003 + index)
    base_name, base = rng.choice(bases())
    spec = copy.deepcopy(base)
    what: list[str] = []
    folder = work / f"c{index}"
    overrides: dict[str, Any] = {}
    kind = rng.random()
    if kind < 0.12:
        path, desc = mutate_extends(rng, spec, base_name, folder)
        what.append(desc)
    else:
        for _ in range(rng.randint(1, 3)):
            mutation = rng.choice([mutate_structure, mutate_value, mutate_value, mutate_id, mutate_top])
            what.append(mutation(rng, spec))
        if rng.random() < 0.12:
            what.append(mutate_python(rng, spec))
            return Case(index, base_name, what, folder / "unused.yaml", mutate_overrides(rng, spec)
                        if rng.random() < 0.2 else {}, None, spec)
        text = _dump(spec)
        data = text.encode()
        if rng.random() < 0.12:
            data, desc = mutate_text(rng, text)
            what.append(desc)
        path = _write(folder / "spec.yaml", data)
        if rng.random() < 0.15:
            overrides = mutate_overrides(rng, spec)
            what.append(f"overrides {sorted(map(str, overrides))}")
    cli = None
    if rng.random() < 0.1:
        size = spec.get("dry_run_size") if isinstance(spec, dict) else None
        lr = f"{size[0]}x{size[1]}" if isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, int) and 1 <= v <= 64 for v in size) else "64x64"
        cli = ["summary", str(path), "--lr-size", lr]
        for name, value in list(overrides.items())[:2]:
            try:
                text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip().removesuffix("...").strip()
            except (yaml.YAMLError, RecursionError):
                text = "&a [*a]"
            cli += ["--set", f"{name}={text}"]
        if rng.random() < 0.3:
            cli += rng.choice([["--scale", "-1"], ["--scale", str(2**63)], ["--set", "scale"], ["--set", "=1"],
                               ["--set", "dim=" + "[" * 3000], ["--set", "dim=&a [*a]"], ["--lr-size", "0x0"]])
        overrides = {}
    return Case(index, base_name, what, path, overrides, cli)


# ---------------------------------------------------------------------------------------------------------------
# running a case in a forked child
# ---------------------------------------------------------------------------------------------------------------


def _input_channels(model: torch.nn.Module) -> int:
    from srblocks.spec.expr import evaluate

    info = srblocks.model_info(model)
    value = next(iter(info.spec.inputs.values()))
    return evaluate(value, info.variables) if isinstance(value, str) else value


def _classify_error(exc: BaseException, case: Case) -> tuple[str, str]:
    text = str(exc)
    if isinstance(exc, MemoryError) or "can't allocate memory" in text or "Cannot allocate memory" in text:
        return "memory", f"{type(exc).__name__}: {text[:300]}"
    if isinstance(exc, SpecError):
        if exc.source and len(text) <= MAX_MESSAGE + 50:
            return "located", text[:300]
        return "unlocated", f"SpecError without a source or too long ({len(text)} chars): {text[:300]}"
    return "raw", f"{type(exc).__name__}: {text[:500]}"


def run_case(case: Case) -> dict[str, Any]:
    """Build (or run the CLI on) one case and classify the result (in the child process)."""
    if case.cli is not None:
        from srblocks.cli import main

        err, out = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                rc = main(case.cli)
        except SystemExit as exc:  # argparse usage errors: exit 2 with a usage line naming the argument
            rc = exc.code
        except BaseException as exc:  # noqa: BLE001
            return {"outcome": "raw", "detail": f"CLI raised {type(exc).__name__}: {str(exc)[:500]}"}
        message = err.getvalue().strip()
        if rc == 0:
            return {"outcome": "working", "detail": ""}
        last = message.splitlines()[-1] if message else ""
        if rc == 2 and message.startswith("usage:") and ": error: argument " in last:
            return {"outcome": "located", "detail": ""}  # argparse: usage, then the argument at fault
        if rc == 2 and message and len(message.splitlines()) <= 2 and "Traceback" not in message:
            if "can't allocate memory" in message:
                return {"outcome": "memory", "detail": message[:300]}
            if str(case.path) in message or "--set" in message or "--scale" in message:
                return {"outcome": "located", "detail": message[:300]}
        return {"outcome": "unlocated" if rc == 2 else "raw", "detail": f"CLI exit {rc}: {message[:500]}"}
    try:
        model = srblocks.build_model(case.mapping if case.mapping is not None else case.path, **case.overrides)
    except BaseException as exc:  # noqa: BLE001 - the point of the test
        outcome, detail = _classify_error(exc, case)
        return {"outcome": outcome, "detail": detail}
    try:
        info = srblocks.model_info(model)
        c = _input_channels(model)
        h, w = info.spec.dry_run_size or (64, 64)
        device = "cpu" if h * w <= 64 * 64 else "meta"
        with torch.no_grad():
            if device == "meta":
                state = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict().items()}
                with torch.nn.utils.stateless._reparametrize_module(model.eval(), state):
                    out = model(torch.empty(1, c, h, w, device="meta"))
            else:
                out = model.eval()(torch.rand(1, c, h, w))
        s = info.scale if isinstance(info.scale, int) and not isinstance(info.scale, bool) else None
        want = (1, c, s * h, s * w) if s else None
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[:2] != (1, c) or (
                want and tuple(out.shape) != want):
            return {"outcome": "wrong_shape", "detail": f"output {getattr(out, 'shape', type(out))}, want {want}"}
        return {"outcome": "working", "detail": ""}
    except BaseException as exc:  # noqa: BLE001
        return {"outcome": "raw", "detail": f"the built model failed: {type(exc).__name__}: {str(exc)[:400]}"}


def _address_space() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def run_isolated(case: Case, timeout: float = CASE_TIMEOUT) -> dict[str, Any]:
    """:func:`run_case` in a forked child under an address-space limit; a child past ``timeout`` is killed."""
    limit = _address_space() + MEMORY_HEADROOM
    r, w = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        result: dict[str, Any]
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            result = run_case(case)
        except BaseException as exc:  # noqa: BLE001
            result = {"outcome": "raw", "detail": f"{type(exc).__name__}: {str(exc)[:300]}"}
        try:
            os.write(w, json.dumps(result, default=str).encode()[:60000])
        finally:
            os._exit(0)
    os.close(w)
    chunks, deadline = [], start + timeout
    with os.fdopen(r, "rb") as pipe:
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or not select.select([pipe], [], [], remaining)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"outcome": "hang", "detail": f"no result after {timeout:.0f} s",
                        "seconds": time.perf_counter() - start}
            chunk = os.read(pipe.fileno(), 65536)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - start
    if not chunks:
        return {"outcome": "crash", "detail": f"child died (wait status {status})", "seconds": seconds}
    result = json.loads(b"".join(chunks))
    result["seconds"] = seconds
    return result


FAILURES = ("raw", "unlocated", "hang", "memory", "crash", "wrong_shape")


def fuzz(n: int, seed: int, work: Path, log: Any = None) -> tuple[collections.Counter, list[str], float]:
    bases()  # built in the parent, shared by every child
    counts: collections.Counter = collections.Counter()
    failures: list[str] = []
    slowest = 0.0
    for index in range(n):
        case = make_case(index, seed, work)
        result = run_isolated(case)
        counts[result["outcome"]] += 1
        if log is not None:
            log.write(json.dumps({"case": case.describe(), **result}, default=str) + "\n")
        slowest = max(slowest, result.get("seconds", 0.0))
        if result["outcome"] in FAILURES:
            failures.append(f"{case.describe()}: {result['outcome']}: {result['detail']}")
    return counts, failures, slowest


def _report(counts: collections.Counter, failures: list[str], slowest: float, seconds: float) -> str:
    tried = sum(counts.values())
    other = sum(counts[k] for k in FAILURES)
    lines = [f"fuzz: tried {tried}, located error {counts['located']}, working {counts['working']}, other {other} "
             f"({', '.join(f'{k} {counts[k]}' for k in FAILURES if counts[k]) or 'none'}); "
             f"{seconds:.1f} s, slowest case {slowest:.2f} s"]
    lines += failures[:25]
    return "\n".join(lines)


def _run(n: int, seed: int, tmp_path: Path) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    start = time.perf_counter()
    log_path = os.environ.get("SRBLOCKS_FUZZ_LOG")  # one JSON line per case, for looking at the messages
    with open(log_path, "a") if log_path else contextlib.nullcontext() as log:
        counts, failures, slowest = fuzz(n, seed, tmp_path, log)
    report = _report(counts, failures, slowest, time.perf_counter() - start)
    print("\n" + report)
    assert not failures, report
    assert counts["located"] > 0 and counts["working"] > 0, report


def test_fuzz_shipped_specs(tmp_path: Path) -> None:
    _run(DEFAULT_CASES, seed=int(os.environ.get("SRBLOCKS_FUZZ_SEED", "0")), tmp_path=tmp_path)


@pytest.mark.slow
def test_fuzz_shipped_specs_slow(tmp_path: Path) -> None:
    _run(int(os.environ.get("SRBLOCKS_FUZZ_CASES", SLOW_CASES)), seed=int(os.environ.get("SRBLOCKS_FUZZ_SEED", "1")),
         tmp_path=tmp_path)


def test_every_shipped_spec_is_a_fuzz_base() -> None:
    assert [name for name, _ in bases()] == shipped_spec_names()
