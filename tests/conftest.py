"""Shared test fixtures: locating ../shared (reference data) and skipping cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """The shared reference folder: $SRBLOCKS_SHARED, else ../shared beside the repository root."""
    return Path(os.environ.get("SRBLOCKS_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = shared_root()
    if not root.is_dir():
        pytest.skip(f"reference data not found at {root} (set SRBLOCKS_SHARED to the shared/ folder)")
    return root


def require_shared_file(relative: str) -> Path:
    """Path of a file under shared/, or skip the test naming what is missing."""
    path = shared_root() / relative
    if not path.exists():
        pytest.skip(f"reference file {relative} not found under {shared_root()} (set SRBLOCKS_SHARED)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    """Tests use small tensors: one intra-op thread is fastest and immune to oversubscribed machines."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


#: A tiny x2 network used by tests that need any model: conv -> act -> conv -> pixel shuffle (+ bilinear skip).
TINY_SPEC = {
    "name": "tiny",
    "variables": {"scale": 2, "dim": 8},
    "inputs": {"image": 3},
    "nodes": [
        {"id": "head", "block": "conv", "args": {"out_channels": "dim"}},
        {"id": "act", "block": "act"},
        {"id": "tail", "block": "conv", "args": {"out_channels": "3 * scale ** 2"}},
        {"id": "shuffle", "block": "pixel_shuffle", "args": {"scale": "scale"}},
        {"id": "up", "block": "resize", "inputs": ["image"], "args": {"scale": "scale", "mode": "bilinear"}},
        {"id": "out", "block": "add", "inputs": ["shuffle", "up"]},
    ],
}


def synthetic_images(n: int = 2, size: tuple[int, int] = (48, 60), seed: int = 0, noise: float = 6.0):
    """Smooth-ish synthetic RGB photos [(name, uint8 (H, W, 3))]: low-frequency patterns plus a little noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for i in range(n):
        chans = [np.sin(2 * np.pi * (rng.uniform(0.5, 3) * xx + rng.uniform(0.5, 3) * yy) + rng.uniform(0, 6))
                 for _ in range(3)]
        img = 127.5 + 100 * np.stack(chans, -1) + rng.normal(0, noise, (h, w, 3))
        out.append((f"img{i}", np.clip(np.round(img), 0, 255).astype(np.uint8)))
    return out


def spec_with(**changes) -> dict:
    """A deep copy of TINY_SPEC with top-level keys replaced."""
    import copy

    spec = copy.deepcopy(TINY_SPEC)
    spec.update(changes)
    return spec


class BoxChain(torch.nn.Module):
    """Test model: ``depth`` 3x3 box filters (zero padding), nearest x2, then ``gain * y + offset``: receptive-field
    radius exactly ``depth`` pixels, with strong long-range influence (unlike a randomly initialised network). Not
    built from a spec (its scale is measured on the first tile)."""

    def __init__(self, depth: int = 10, gain: float = 1.0, offset: float = 0.0) -> None:
        super().__init__()
        self.depth, self.gain, self.offset = depth, gain, offset
        self.register_buffer("kernel", torch.full((3, 1, 3, 3), 1 / 9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.depth):
            x = torch.nn.functional.conv2d(x, self.kernel, padding=1, groups=3)
        y = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return y if (self.gain, self.offset) == (1.0, 0.0) else y * self.gain + self.offset
