"""Shared test fixtures: locating ../shared (reference data) and skipping cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
