"""The wheel holds every subpackage: pyproject's explicit package list must name each folder of ``srblocks/`` with an
``__init__.py`` (an editable install imports unlisted ones from the checkout and hides the omission)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+ (tomllib)")

REPO = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_in_the_wheel() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "srblocks").rglob("__init__.py")}
    assert on_disk - listed == set(), f"missing from [tool.setuptools] packages: {sorted(on_disk - listed)}"
    for name, folder in config["package-dir"].items():  # package data folders mapped from outside srblocks/
        assert name in listed and (REPO / folder).is_dir(), (name, folder)
        assert any((REPO / folder).glob("*.yaml")), f"{folder} ships no YAML"
