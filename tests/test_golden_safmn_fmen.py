"""SAFMN and FMEN reproduce the official implementations' outputs (golden files in shared/golden)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import srblocks
from conftest import require_shared_file

# Tolerance: max abs diff <= 1e-5 relative to the output range (FMEN's shipped weights work on 0..255).
CASES = [
    ("safmn_x4_random", "safmn", {"scale": 4}),
    ("safmn_x2_random", "safmn", {"scale": 2}),
    ("fmen_s_x4_deploy", "fmen_s", {"scale": 4, "deploy": True}),
    ("fmen_s_x4_train_random", "fmen_s", {"scale": 4, "deploy": False}),
]


def _golden(case: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    weights = require_shared_file(f"golden/{case}.pth")
    x = torch.from_numpy(np.load(require_shared_file(f"golden/{case}.input.npy")))
    y = torch.from_numpy(np.load(require_shared_file(f"golden/{case}.output.npy")))
    return x, y, str(weights)


def _assert_close_relative(out: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5) -> None:
    value_range = float(ref.max() - ref.min())
    diff = float((out - ref).abs().max())
    assert diff <= rel * value_range, f"max abs diff {diff:.3g} > {rel} x output range {value_range:.3g}"


@pytest.mark.parametrize("case,spec,overrides", CASES, ids=[c[0] for c in CASES])
def test_official_weights_reproduce_official_output(case: str, spec: str, overrides: dict) -> None:
    x, y, weights = _golden(case)
    model = srblocks.load_weights(srblocks.build_model(spec, **overrides), weights, official=True).eval()
    with torch.no_grad():
        _assert_close_relative(model(x), y)


def test_deploy_of_train_form_reproduces_official_output_and_official_merge() -> None:
    x, y, weights = _golden("fmen_s_x4_train_random")
    official_deploy = srblocks.read_state_dict(require_shared_file("golden/fmen_s_x4_train_random.deploy.pth"))
    model = srblocks.load_weights(srblocks.build_model("fmen_s", scale=4), weights, official=True)
    deployed = srblocks.deploy(model)
    assert not any("bn" in k or "expand_conv" in k for k in deployed.state_dict())
    assert set(deployed.state_dict()) == set(official_deploy), "deploy form keys differ from the official deploy keys"
    with torch.no_grad():
        _assert_close_relative(deployed(x), y)
    for key, value in official_deploy.items():
        assert torch.allclose(deployed.state_dict()[key], value, atol=1e-5, rtol=1e-5), key


def test_fmen_s_official_checkpoint_loads_strictly(shared_dir) -> None:
    path = require_shared_file("weights/fmen_s_x4_deploy.pth")
    model = srblocks.load_weights(srblocks.build_model("fmen_s", scale=4, deploy=True), path, official=True)
    assert sum(p.numel() for p in model.parameters()) == 341066


def test_safmn_equals_spandrel_for_random_weights() -> None:
    spandrel = pytest.importorskip("spandrel")
    torch.manual_seed(0)
    ours = srblocks.build_model("safmn", scale=4, memory_format="contiguous").eval()  # NCHW like the peer
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    descriptor = spandrel.ModelLoader().load_from_state_dict(ours.state_dict())  # detects SAFMN by its official keys
    assert type(descriptor.model).__name__ == "SAFMN" and descriptor.scale == 4
    peer = descriptor.model.eval()
    x = torch.rand(1, 3, 29, 35)
    with torch.no_grad():
        diff = float((ours(x) - peer(x)).abs().max())
    assert diff <= 1e-6
