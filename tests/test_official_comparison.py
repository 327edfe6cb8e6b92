"""The comparison scripts stay runnable against the official code as published (issue 13 §3): the official HPINet
constructor changed from ``HPINet(dim, block_num, heads, qk_dim, mlp_dim, upscale, patch_size)`` to
``HPINet(model_type, upscale)`` with the sizes in ``HPINet.model_settings`` (passerer/HPINet, commit bfc39ec).
Stand-in classes with each published signature check that ``benchmarks/hpinet_latency.py`` builds either."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from hpinet_latency import official_hpinet  # noqa: E402

import srblocks  # noqa: E402

#: the published settings of the current HPINet.py (sizes only; the class itself is not shipped here)
SETTINGS = {
    "M": dict(dim=56, block_num=8, qk_dim=32, mlp_dim=100, patch_size=[12, 16, 20, 24, 12, 16, 20, 24]),
    "S": dict(dim=40, block_num=8, qk_dim=24, mlp_dim=72, patch_size=[12, 16, 20, 24, 12, 16, 20, 24]),
    "L": dict(dim=64, block_num=10, qk_dim=36, mlp_dim=128, patch_size=[12, 14, 16, 20, 24, 12, 14, 16, 20, 24]),
}


class CurrentHPINet:
    model_settings = SETTINGS

    def __init__(self, model_type: str, upscale: int) -> None:
        self.args = (model_type, upscale)


class EarlierHPINet:
    def __init__(self, dim, block_num, heads, qk_dim, mlp_dim, upscale, patch_size) -> None:
        self.args = (dim, block_num, heads, qk_dim, mlp_dim, upscale, patch_size)


@pytest.mark.parametrize("spec,model_type", [("hpinet_s", "S"), ("hpinet_m", "M"), ("hpinet_l", "L")])
def test_the_current_constructor_gets_the_model_type_whose_settings_match_the_spec(spec, model_type) -> None:
    variables = srblocks.model_info(srblocks.build_model(spec, scale=4)).variables
    assert official_hpinet(CurrentHPINet, variables, 4).args == (model_type, 4)


def test_the_earlier_constructor_gets_the_sizes() -> None:
    variables = srblocks.model_info(srblocks.build_model("hpinet_m", scale=2)).variables
    assert official_hpinet(EarlierHPINet, variables, 2).args == (56, 8, 1, 32, 100, 2, SETTINGS["M"]["patch_size"])


def test_a_spec_the_official_code_has_no_type_for_is_named() -> None:
    variables = {**srblocks.model_info(srblocks.build_model("hpinet_s", scale=4)).variables, "dim": 44}
    with pytest.raises(ValueError, match="no model type with .*'dim': 44"):
        official_hpinet(CurrentHPINet, variables, 4)
