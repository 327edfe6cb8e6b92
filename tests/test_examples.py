"""Every example parses ``--help`` (prints its usage and exits 0 without running), in this process."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses_help(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = runpy.run_path(str(path), run_name="srblocks_example")
    with pytest.raises(SystemExit) as done:
        module["main"](["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "--help" in out


def test_a_single_number_size_is_square() -> None:
    """``examples/mga_wrap_safmn.py --size 48`` crashed unpacking "48"; sizes are parsed by the CLI's parse_size."""
    import argparse

    from srblocks.cli import parse_size

    assert parse_size("48") == (48, 48) and parse_size("180x320") == (180, 320)
    for bad in ("0", "48x", "axb", "1x2x3"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)
