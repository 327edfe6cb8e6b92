"""Bad specs give one clear error naming the file, the YAML path and the node; good ones build."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

import srblocks
from srblocks import SpecError, build_model
from srblocks.build import _subgraph_builder
from srblocks.spec.expr import ExpressionError, evaluate

TINY = {
    "name": "tiny",
    "variables": {"scale": 2, "dim": 8},
    "inputs": {"image": 3},
    "nodes": [
        {"id": "head", "block": "conv", "args": {"out_channels": "dim"}},
        {"id": "body", "block": "conv"},
        {"id": "skip", "block": "add", "inputs": ["body", "head"]},
        {"id": "tail", "block": "conv", "args": {"out_channels": "3 * scale ** 2"}},
        {"id": "shuffle", "block": "pixel_shuffle", "args": {"scale": "scale"}},
    ],
}


def _spec(**changes) -> dict:
    spec = copy.deepcopy(TINY)
    spec.update(changes)
    return spec


def _error(spec: dict, **overrides) -> SpecError:
    with pytest.raises(SpecError) as info:
        build_model(spec, **overrides)
    return info.value


def test_tiny_spec_builds_and_infers_channels() -> None:
    model = build_model(TINY)
    assert model(torch.rand(2, 3, 5, 7)).shape == (2, 3, 10, 14)
    assert model.body.in_channels == 8 and model.tail.in_channels == 8


def test_unknown_block_names_closest_known() -> None:
    spec = _spec()
    spec["nodes"][1]["block"] = "safn"
    err = _error(spec)
    assert err.path == "nodes[1].block" and err.node == "body"
    assert "'safm'" in str(err) and "<mapping>" in str(err)


def test_unknown_input_reference() -> None:
    spec = _spec()
    spec["nodes"][2]["inputs"] = ["bdy", "head"]
    err = _error(spec)
    assert err.path == "nodes[2].inputs" and "'bdy'" in str(err) and "did you mean 'body'" in str(err)


def test_cycle_is_rejected() -> None:
    spec = _spec()
    spec["nodes"][1]["inputs"] = ["skip"]
    assert "cycle" in str(_error(spec))


def test_unused_node_is_rejected() -> None:
    spec = _spec()
    spec["nodes"].insert(2, {"id": "dangling", "block": "conv", "inputs": ["head"]})
    err = _error(spec)
    assert err.node == "dangling" and "never used" in str(err)


def test_arity_error() -> None:
    spec = _spec()
    spec["nodes"][2]["inputs"] = ["body", "head", "head", "head"]
    spec["nodes"][2]["block"] = "mul"
    err = _error(spec)
    assert "takes 2 input(s), got 4" in str(err) and err.node == "skip"


def test_channel_mismatch_names_both_sides() -> None:
    spec = _spec()
    spec["nodes"][1]["args"] = {"out_channels": 4}
    err = _error(spec)
    assert err.node == "skip" and "equal channels" in str(err)
    spec = _spec()
    spec["nodes"][1]["args"] = {"in_channels": 5}
    err = _error(spec)
    assert err.path == "nodes[1].args.in_channels" and "'head' has 8" in str(err)


def test_invalid_argument_value_and_unknown_argument() -> None:
    spec = _spec()
    spec["nodes"][4]["args"] = {"scale": 2, "sclae": 3}
    err = _error(spec)
    assert err.path.startswith("nodes[4].args") and "sclae" in str(err)
    spec = _spec()
    spec["nodes"][0]["args"] = {"out_channels": -3}
    assert "greater than 0" in str(_error(spec))


def test_block_constraint_violation_is_located() -> None:
    spec = _spec()
    spec["nodes"][1] = {"id": "body", "block": "safm"}
    spec["variables"]["dim"] = 6
    err = _error(spec)
    assert err.node == "body" and "divisible by n_levels" in str(err)


def test_expression_errors_and_unknown_override() -> None:
    spec = _spec()
    spec["nodes"][0]["args"] = {"out_channels": "dimm * 2"}
    err = _error(spec)
    assert err.path == "nodes[0].args.out_channels" and "unknown variable 'dimm'" in str(err)
    err = _error(TINY, dimm=3)
    assert "did you mean 'dim'" in str(err)


def test_duplicate_ids_and_schema_errors() -> None:
    spec = _spec()
    spec["nodes"][1]["id"] = "head"
    assert "duplicate id 'head'" in str(_error(spec))
    bad = _spec()
    bad["nodez"] = []
    assert "nodez" in str(_error(bad))


def test_errors_name_the_file(tmp_path: Path) -> None:
    spec = _spec()
    spec["nodes"][1]["block"] = "nope"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(spec))
    err = _error(str(path))  # type: ignore[arg-type]
    assert str(path) in str(err) and "nodes[1].block" in str(err)
    path.write_text("nodes: [unclosed")
    assert "invalid YAML" in str(_error(str(path)))  # type: ignore[arg-type]


def test_unknown_shipped_name_suggests() -> None:
    err = _error("safmm")  # type: ignore[arg-type]
    assert "'safmn'" in str(err)


def test_repeat_each_and_templates() -> None:
    spec = _spec()
    spec["nodes"][1] = {
        "repeat": 3,
        "nodes": [{"id": "body.{i}", "block": "conv", "args": {"kernel_size": {"each": [1, 3, 5]}}}],
    }
    spec["nodes"][2]["inputs"] = ["body.{3 - 1}", "head"]
    model = build_model(spec)
    assert [model.get_submodule(f"body.{i}").kernel_size for i in range(3)] == [(1, 1), (3, 3), (5, 5)]
    spec["nodes"][1]["nodes"][0]["args"]["kernel_size"] = {"each": [1, 3]}
    assert "'each' has 2 values but the repeat has 3" in str(_error(spec))


def test_extends_merges_variables(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"extends": "base.yaml", "name": "child",
                                                          "variables": {"dim": 12}}))
    model = build_model(str(tmp_path / "child.yaml"))
    assert model.head.out_channels == 12 and srblocks.model_info(model).spec.name == "child"


@srblocks.register_block("test_residual_wrapper", in_channels="channels")
class _ResidualWrapper(torch.nn.Module):
    """Test-only block: x + inner(x), where ``inner`` is a sub-graph built by the assembler."""

    def __init__(self, channels: int, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


def test_subgraph_argument_is_built_into_a_module() -> None:
    spec = _spec()
    spec["nodes"][1] = {
        "id": "body",
        "block": "test_residual_wrapper",
        "args": {"inner": {"inputs": {"x": "dim"}, "nodes": [
            {"id": "a", "block": "conv", "args": {"out_channels": "2 * dim"}},
            {"id": "b", "block": "conv", "args": {"out_channels": "dim"}},
        ]}},
    }
    model = build_model(spec)
    assert model.body.inner.a.out_channels == 16 and "body.inner.b.weight" in model.state_dict()
    assert model(torch.rand(1, 3, 4, 4)).shape == (1, 3, 8, 8)
    multi = dict(spec["nodes"][1]["args"]["inner"], output=["b", "a"])  # a sub-graph may return several tensors
    inner = _subgraph_builder(multi, {"dim": 8}, "<test>", "inner")
    b, a = inner(torch.rand(1, 8, 4, 4))
    assert (b.shape[1], a.shape[1]) == (8, 16) and inner.output_channels == [8, 16]
    spec["nodes"][1]["args"]["inner"]["output"] = ["b", "a"]  # the wrapper adds x + (b, a): located failure
    err = _error(spec)
    assert err.node == "body" and "fails on a 64x64 input" in str(err)
    spec["nodes"][1]["args"]["inner"]["output"] = "b"
    spec["nodes"][1]["args"]["inner"]["nodes"][1]["block"] = "bogus"
    err = _error(spec)
    assert err.path == "nodes[1].args.inner.nodes[1].block"


def test_safe_evaluator_refuses_python() -> None:
    assert evaluate("3 * scale ** 2", {"scale": 4}) == 48
    assert evaluate("sizes[i] + 1", {"sizes": [12, 16], "i": 1}) == 17
    assert evaluate("int(dim * 1.5)", {"dim": 36}) == 54
    for bad in ["__import__('os')", "().__class__", "open('x')", "2 ** 10000", "[1] * 10**9", "lambda: 1"]:
        with pytest.raises(ExpressionError):
            evaluate(bad, {})


@pytest.mark.parametrize("bad_id, part", [("body.in", "in"), ("body..x", ""), ("class", "class")])
def test_ids_that_cannot_name_a_submodule_are_refused(bad_id: str, part: str) -> None:
    spec = _spec()
    spec["nodes"][1]["id"] = bad_id
    spec["nodes"][2]["inputs"] = [bad_id, "head"]
    err = _error(spec)
    assert err.path == "nodes[1]" and err.node == bad_id and f"(got {part!r})" in str(err)


def test_memory_format_defaults_to_channels_last_comes_from_the_spec_and_can_be_overridden() -> None:
    fast = build_model(TINY)
    assert fast.body.weight.is_contiguous(memory_format=torch.channels_last) and not fast.body.weight.is_contiguous()
    plain = build_model(_spec(memory_format="contiguous"))
    assert plain.body.weight.is_contiguous()
    assert build_model(TINY, memory_format="contiguous").body.weight.is_contiguous()
    fast.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 9, 11)
    with torch.no_grad():
        assert (fast(x) - plain(x)).abs().max().item() <= 1e-5
    # a layout, not the network: the content hash (the key of every results store) ignores it
    assert srblocks.model_info(fast).content_hash() == srblocks.model_info(plain).content_hash()
    with pytest.raises(ValueError, match="memory_format"):
        build_model(TINY, memory_format="nhwc")
    err = _error(_spec(memory_format="nhwc"))
    assert err.path == "memory_format"


def test_content_hash_of_a_shipped_spec_is_the_one_in_the_committed_results_store() -> None:
    # benchmarks/results/search_fidelity.jsonl keys SAFMN x4 by this hash: a change to what the hash covers would
    # orphan every stored result
    assert srblocks.model_info(build_model("safmn", scale=4)).content_hash() == "ab8d5ee7f8efcb68"
