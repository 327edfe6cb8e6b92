"""Issue 11, section 1: a few bytes of spec cannot hang the assembler or exhaust memory (one regression per example).

Every case must end, fast, as a located SpecError naming the limit; the limits live in ``srblocks.spec.limits``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import torch
import yaml

import srblocks
from conftest import TINY_SPEC
from srblocks import SpecError, build_model
from srblocks.errors import MAX_MESSAGE, brief, clip
from srblocks.spec import limits
from srblocks.spec.expr import ExpressionError, evaluate, render_template


def _spec(**changes) -> dict:
    spec = copy.deepcopy(TINY_SPEC)
    spec.update(changes)
    return spec


def _fails(spec, seconds: float = 5.0, **overrides) -> SpecError:
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        build_model(spec, **overrides)
    assert time.perf_counter() - start < seconds, f"took {time.perf_counter() - start:.1f} s"
    assert len(str(info.value)) <= MAX_MESSAGE
    return info.value


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------ expression results
@pytest.mark.parametrize("expression, message", [
    ("((((10**64)**64)**64)**64)**64", "too large"),
    ("2**63 * 2**63 * 2**63", "too large"),
    ("int(1e300)", "too large"),
    ("float('inf')", "not a finite number"),
    ("'%0999999999d' % 1", "string formatting"),
    ("round(5, -10**9)", "digits"),
    ("[" * 120 + "1" + "]" * 120, "nested"),
    ("-" * 400 + "1", "nested"),
])
def test_expression_values_are_bounded(expression: str, message: str) -> None:
    spec = _spec()
    spec["nodes"][0]["args"]["out_channels"] = expression
    err = _fails(spec, seconds=2)
    assert err.path == "nodes[0].args.out_channels" and err.node == "head" and message in str(err)


@pytest.mark.parametrize("chain, name, message", [
    ({"s0": "'abcdefghij'", **{f"s{i}": f"s{i - 1} + s{i - 1}" for i in range(1, 40)}}, "s10", "string of 10,240"),
    ({"l0": "[1, 2, 3]", **{f"l{i}": f"l{i - 1} + l{i - 1}" for i in range(1, 40)}}, "l12", "10,000 elements"),
    ({"l0": "[1, 2, 3]", **{f"l{i}": f"[l{i - 1}, l{i - 1}]" for i in range(1, 40)}}, "l11", "10,000 elements"),
    ({"i0": "2**60", **{f"i{i}": f"i{i - 1} * i{i - 1}" for i in range(1, 40)}}, "i2", "too large"),
])
def test_doubling_variable_chains_stop_at_the_limit(chain: dict, name: str, message: str) -> None:
    err = _fails(_spec(variables={**TINY_SPEC["variables"], **chain}), seconds=2)
    assert err.path == f"variables.{name}" and message in str(err)


def test_the_evaluator_keeps_working_for_real_expressions() -> None:
    assert evaluate("3 * scale ** 2", {"scale": 4}) == 48
    assert evaluate("int(dim * 1.5)", {"dim": 36}) == 54
    assert evaluate("[12, 16] + [20]", {}) == [12, 16, 20]
    assert evaluate("2**63", {}) == 2**63 and evaluate("10**38", {}) == 10**38
    assert render_template("feats.{n - 1}", {"n": 8}) == "feats.7"
    with pytest.raises(ExpressionError, match="more than 10,000 characters"):
        render_template("{s}{s}", {"s": "x" * 6000})


def test_repeat_counts_are_bounded_before_expanding() -> None:
    spec = _spec()
    spec["nodes"][1] = {"repeat": "2**63", "nodes": [{"repeat": 0, "nodes": [spec["nodes"][1]]}]}  # no node made
    err = _fails(spec, seconds=2)
    assert err.path == "nodes[1].repeat" and "larger than 10,000" in str(err)


def test_node_counts_are_bounded() -> None:
    spec = _spec()
    spec["nodes"][1] = {"repeat": 6000, "nodes": [{"id": "a{i}", "block": "act"}, {"id": "b{i}", "block": "act"}]}
    err = _fails(spec, seconds=10)
    assert "more than 10,000 nodes" in str(err)


def test_a_block_repeat_count_of_2_63_is_refused_as_an_argument() -> None:
    """rcan with n_resblocks 2**63: every numeric block argument is bounded by the registry's schema."""
    err = _fails("rcan", seconds=30, n_resblocks=2**63)
    assert err.node == "body.0" and err.path.endswith("args.n_resblocks") and "out of range" in str(err)


def test_a_large_in_range_repeat_count_stops_at_the_build_budget() -> None:
    """rcan with n_resblocks 10**6 (a valid int): the residual group's constructor loops; the element budget
    stops it."""
    err = _fails("rcan", seconds=30, n_resblocks=10**6)
    assert err.node == "body.0" and "the model is too large" in str(err)


def test_a_huge_tensor_is_refused_before_it_is_allocated() -> None:
    spec = _spec()
    spec["nodes"][0]["args"]["out_channels"] = 2**24  # a valid int argument; the weight would be 2**24 x C x 9
    err = _fails(spec, seconds=2)
    assert err.node == "head" and "too large" in str(err)


# ------------------------------------------------------------------------------------------------ alias bombs
BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)])


def test_a_500_byte_billion_laughs_is_refused_when_reading(tmp_path: Path) -> None:
    for where in ("variables: {v: *a8}", "notes: *a8", "nodes: *a8"):
        path = _write(tmp_path / "bomb.yaml", f"{BOMB}\nname: bomb\n{where}\n")
        assert path.stat().st_size < 600
        err = _fails(path, seconds=2)
        assert err.source == str(path) and "too large" in str(err) and "alias" in str(err)


def test_recursive_yaml_and_self_referencing_mappings_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "rec.yaml", "name: r\nvariables: &v {a: *v}\nnodes: [{id: a, block: conv}]\n")
    assert "refers to itself" in str(_fails(path))
    spec = _spec()
    spec["variables"]["loop"] = loop = []
    loop.append(loop)
    assert "refers to itself" in str(_fails(spec))


def test_a_python_alias_bomb_in_a_mapping_is_refused() -> None:
    value: list = ["x"] * 9
    for _ in range(8):
        value = [value] * 9
    err = _fails(_spec(notes=value), seconds=2)
    assert err.source == "<mapping>" and "too large" in str(err)


def test_messages_never_print_an_unbounded_value() -> None:
    value: list = ["x"] * 9
    for _ in range(30):
        value = [value] * 9  # 9**30 leaves
    loop: list = []
    loop.append(loop)
    start = time.perf_counter()
    for v in (value, loop, 10**5000, -(10**5000), "y" * 10**7, {"k" * 10**6: value}, b"z" * 10**6,
              torch.zeros(10**6)):
        assert len(brief(v)) <= 80
    assert time.perf_counter() - start < 1
    assert "5001 digits" in brief(10**5000)
    assert len(clip("m" * 10**6)) <= MAX_MESSAGE
    assert len(str(SpecError("x" * 10**6, source="s", path="p"))) <= MAX_MESSAGE


def test_override_values_are_bounded() -> None:
    value: list = [1]
    for _ in range(200):
        value = [value]
    err = _fails(TINY_SPEC, dim=value)
    assert err.path == "variables.dim" and "nested more than 64" in str(err)
    loop: list = []
    loop.append(loop)
    assert "refers to itself" in str(_fails(TINY_SPEC, dim=loop))


# ------------------------------------------------------------------------------------------------ deep nesting
@pytest.mark.parametrize("depth", [70, 300, 3000])
def test_deep_nesting_is_refused_in_files_and_mappings(tmp_path: Path, depth: int) -> None:
    flow = "[" * depth + "]" * depth
    path = _write(tmp_path / "deep.yaml", f"name: d\nvariables: {{v: {flow}}}\nnodes: [{{id: a, block: conv}}]\n")
    err = _fails(path, seconds=2)
    assert err.source == str(path) and "nest" in str(err)  # ours, or libyaml's own limit past 1,000 levels
    block = "name: d\nnodes: [{id: a, block: conv}]\nnotes:\n" + "".join(f"{'  ' * i}- \n" for i in range(1, 300))
    assert "nested more than 64 levels" in str(_fails(_write(tmp_path / "deep2.yaml", block + "  " * 300 + "- 1\n")))
    value: list = []
    for _ in range(depth):
        value = [value]
    assert "nested more than 64 levels" in str(_fails(_spec(notes=value)))


def test_deep_but_reasonable_nesting_still_loads() -> None:
    value: list = [1]
    for _ in range(limits.MAX_DEPTH - 4):
        value = [value]
    build_model(_spec(notes=[str(value)]))


# ------------------------------------------------------------------------------------------------ extends
def test_extends_cycles_through_unnormalised_paths_are_cycles(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "q.yaml", "extends: ./p.yaml\nname: q\n")
    p = _write(tmp_path / "d" / "p.yaml", "extends: ../d/q.yaml\nname: p\n")
    err = _fails(p)
    assert "extends cycle" in str(err) and err.source == str(p) and err.path == "extends"
    me = _write(tmp_path / "e" / "me.yaml", "extends: ../e/./me.yaml\nname: me\n")
    assert "extends cycle" in str(_fails(me))


def test_extends_chains_are_capped(tmp_path: Path) -> None:
    _write(tmp_path / "c0.yaml", yaml.safe_dump({**TINY_SPEC, "name": "c0"}))
    for i in range(1, 25):
        _write(tmp_path / f"c{i}.yaml", f"extends: c{i - 1}.yaml\nname: c{i}\n")
    assert build_model(tmp_path / f"c{limits.MAX_EXTENDS - 1}.yaml") is not None
    assert f"longer than {limits.MAX_EXTENDS}" in str(_fails(tmp_path / "c24.yaml"))


def test_extends_of_a_1_gb_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse: no disk space, no time
    p = _write(tmp_path / "p.yaml", "extends: big.yaml\nname: p\n")
    err = _fails(p, seconds=2)
    assert "larger than 1,048,576 bytes" in str(err) and err.path == "extends"
    assert "larger than" in str(_fails(big, seconds=2))


def test_extends_names_the_os_refuses_are_located(tmp_path: Path) -> None:
    for target in ["a" * 300, "a/" * 300 + "x.yaml", "x" * 5000 + ".yaml", "/dev/zero", ".", "\x00", "/"]:
        p = _write(tmp_path / "p.yaml", yaml.safe_dump({"extends": target, "name": "p"}))
        err = _fails(p)
        assert err.source == str(p) and err.path == "extends"


# ------------------------------------------------------------------------------------------------ checkpoints
def test_a_self_referencing_checkpoint_is_refused(tmp_path: Path) -> None:
    d: dict = {}
    d["params"] = d
    torch.save(d, tmp_path / "self.pth")
    start = time.perf_counter()
    with pytest.raises(srblocks.WeightsError, match="refer to themselves"):
        srblocks.read_state_dict(tmp_path / "self.pth")
    nested: dict = {"w": torch.zeros(1)}
    for _ in range(20):
        nested = {"params": nested, "meta": 1}
    with pytest.raises(srblocks.WeightsError, match="nested more than"):
        srblocks.read_state_dict(nested)
    assert time.perf_counter() - start < 2


# ------------------------------------------------------------------------------------------------ real specs
def test_the_limits_are_far_above_the_shipped_specs() -> None:
    from srblocks.spec import load_spec, shipped_spec_names

    for name in shipped_spec_names():
        raw = load_spec(name).raw
        assert limits.structure_problem(raw, max_nodes=limits.MAX_DOCUMENT_NODES // 100,
                                        max_depth=limits.MAX_DEPTH // 4) is None, name
    model = build_model("rcan")  # the largest shipped network: 16M parameters, 2,443 modules
    assert sum(p.numel() for p in model.parameters()) * 8 < limits.MAX_ELEMENTS
    assert len(list(model.modules())) * 8 < limits.MAX_MODULES


# ------------------------------------------------------------------------------------------------ key regexes
@pytest.mark.parametrize("pattern, message", [("(a*)*b", "exponential"), ("(x+y?)+z", "exponential"),
                                              ("(", "invalid regular expression")])
def test_checkpoint_key_regexes_cannot_hang_or_crash_loading(pattern: str, message: str) -> None:
    err = _fails(_spec(official_checkpoint={"drop": [pattern]}))
    assert err.path == "official_checkpoint.drop[0]" and message in str(err)
    err = _fails(_spec(official_checkpoint={"renames": [{"pattern": pattern, "replacement": "x"}]}))
    assert err.path == "official_checkpoint.renames[0].pattern" and message in str(err)


def test_rename_failures_and_huge_keys_are_weights_errors() -> None:
    model = build_model(_spec(official_checkpoint={"renames": [{"pattern": "^head", "replacement": r"\9"}]}))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(srblocks.WeightsError, match="fails on key"):
        srblocks.load_weights(model, state, official=True)
    with pytest.raises(srblocks.WeightsError, match="longer than 1000"):
        srblocks.load_weights(model, {"k" * 5000: torch.zeros(1)}, official=True)


def test_the_shipped_search_spaces_still_build_within_the_limits() -> None:
    """Every corner of search/*.yaml (each choice, both ends of each range) and every seed builds and passes the
    dry run with its output contract."""
    from srblocks.search.space import FixedSampler, load_search_space

    root = Path(__file__).resolve().parents[1] / "search"
    for path in sorted(root.glob("*.yaml")):
        space = load_search_space(path)
        space.check(lambda spec: build_model(spec))
        for params in space.settings.seeds.values():
            build_model(space.sample(FixedSampler(params, strict=False)))


def test_python_only_values_in_a_mapping_are_bounded_or_refused() -> None:
    """Found by the slow fuzz: pydantic expands a ``range`` (it aborted the process allocating for
    range(10**12)); iterators could be infinite; a tensor variable broke ``x if decomposed else y``."""
    import itertools

    assert "too large" in str(_fails(_spec(notes=range(10**12))))
    assert "iterator" in str(_fails(_spec(notes=itertools.count())))
    spec = _spec()
    spec["variables"]["flag"] = torch.zeros(3)
    spec["nodes"][1] = {"repeat": "1 if flag else 0", "nodes": [spec["nodes"][1]]}
    err = _fails(spec)
    assert err.path == "nodes[1].repeat" and "type Tensor cannot be used in an expression" in str(err)
    import numpy as np

    assert build_model(TINY_SPEC, dim=np.int64(8)) is not None  # numpy numbers still work as overrides
