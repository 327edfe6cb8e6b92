"""Randomly mutated valid specs only ever give a SpecError or a model that runs (hypothesis)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import srblocks
from srblocks import SpecError
from srblocks.spec import load_spec

BASES = [load_spec(name).raw for name in ("safmn", "fmen_s")]
SMALL = {"safmn": {"n_blocks": 1, "dim": 8}, "fmen_s": {"n_feats": 8, "mid_feats": 8, "down_blocks": 1}}
VALUES = st.one_of(
    st.integers(-3, 70), st.floats(-2, 5, allow_nan=False), st.booleans(), st.none(),
    st.sampled_from(["dim", "scale * 2", "nope", "1 +", "'text'", "n_feats - 4", "[1, 2]", ""]),
    st.lists(st.integers(-1, 4), max_size=6),
)


def _flat_nodes(nodes: list[dict]) -> list[dict]:
    out = []
    for node in nodes:
        out.append(node)
        if "repeat" in node:
            out.extend(_flat_nodes(node["nodes"]))
    return out


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    base_index = draw(st.integers(0, len(BASES) - 1))
    spec = copy.deepcopy(BASES[base_index])
    spec["variables"] = {**spec["variables"], **SMALL[spec["name"]]}
    spec["expected"] = []
    for _ in range(draw(st.integers(1, 3))):
        nodes = _flat_nodes(spec["nodes"])
        node = draw(st.sampled_from(nodes))
        kind = draw(st.sampled_from(["block", "arg", "drop_arg", "inputs", "delete", "repeat", "variable", "id"]))
        if kind == "block" and "block" in node:
            node["block"] = draw(st.sampled_from(srblocks.block_names() + ["unknown_block"]))
        elif kind == "arg" and "block" in node:
            node.setdefault("args", {})[draw(st.sampled_from(["out_channels", "scale", "dim", "mid_feats",
                                                               "n_erbs", "kernel_size", "x"]))] = draw(VALUES)
        elif kind == "drop_arg" and node.get("args"):
            node["args"].pop(draw(st.sampled_from(sorted(node["args"]))))
        elif kind == "inputs" and "block" in node:
            ids = [n["id"] for n in nodes if "id" in n] + ["image", "missing"]
            node["inputs"] = draw(st.lists(st.sampled_from(ids), max_size=3))
        elif kind == "delete" and len(spec["nodes"]) > 1:
            spec["nodes"].remove(draw(st.sampled_from(spec["nodes"])))
        elif kind == "repeat" and "repeat" in node:
            node["repeat"] = draw(VALUES)
        elif kind == "variable":
            spec["variables"][draw(st.sampled_from(sorted(spec["variables"])))] = draw(VALUES)
        elif kind == "id" and "id" in node:
            node["id"] = draw(st.sampled_from(["head", "to_feat", "tail.0", "x{", "a b", "feats.{i}", "n"]))
    return spec


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_mutated_specs_fail_cleanly_or_run(spec: dict[str, Any]) -> None:
    try:
        model = srblocks.build_model(spec)
    except SpecError as exc:
        assert str(exc)
        return
    with torch.no_grad():
        out = model.eval()(torch.rand(1, 3, 64, 64))
    assert out.ndim == 4 and out.shape[0] == 1
