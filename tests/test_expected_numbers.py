"""Every shipped spec hits the numbers under its ``expected:`` block (params, MACs, activations, convs)."""

from __future__ import annotations

import pytest

from srblocks.reproduce import check_entry, parse_target
from srblocks.spec import load_spec, shipped_spec_names
from srblocks.spec.schema import ExpectedValue

CASES = [
    pytest.param(name, index, id=f"{name}-{index}")
    for name in shipped_spec_names()
    for index in range(len(load_spec(name).spec.expected))
]


@pytest.mark.parametrize("name,index", CASES)
def test_spec_hits_expected_numbers(name: str, index: int) -> None:
    loaded = load_spec(name)
    rows = check_entry(loaded, loaded.spec.expected[index])
    assert rows, "an expected entry must state at least one number"
    failures = [f"{r.metric}: expected {r.target.written}, measured {r.actual:,.0f}" for r in rows if not r.ok]
    assert not failures, f"{name} {loaded.spec.expected[index].when}: " + "; ".join(failures)


def test_every_shipped_spec_states_expected_numbers() -> None:
    for name in shipped_spec_names():
        assert load_spec(name).spec.expected, f"{name} has no expected: block"


@pytest.mark.parametrize(
    "raw,value,tolerance",
    [("13.555G", 13.555e9, 0.0005e9), ("748K", 748e3, 500), ("76.70M", 76.7e6, 0.005e6), (239520, 239520, 0)],
)
def test_paper_precision_targets(raw: str | int, value: float, tolerance: float) -> None:
    target = parse_target(raw)
    assert target.value == pytest.approx(value)
    assert target.tolerance == pytest.approx(tolerance)


def test_targets_reject_values_outside_their_precision() -> None:
    assert parse_target("13.555G").accepts(13.5549e9)
    assert not parse_target("13.555G").accepts(13.5556e9)
    assert not parse_target(227820).accepts(227821)
    assert parse_target(ExpectedValue(value=100.0, rel=0.01)).accepts(100.9)
    assert not parse_target(ExpectedValue(value=100.0, rel=0.01)).accepts(101.1)
    with pytest.raises(ValueError, match="cannot read expected value"):
        parse_target("about 12G")
