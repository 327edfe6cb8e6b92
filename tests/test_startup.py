"""First contact: ``import srblocks`` and ``srblocks --help`` import no heavy dependency; the API loads on use.

Wall times are measured in ``benchmarks/startup.py``, not here; this checks the mechanism that makes them small
(:mod:`srblocks._lazy`): which modules a fresh interpreter has loaded.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "numpy", "optuna", "timm", "torchvision", "pydantic", "PIL", "scipy", "onnx", "onnxruntime")


def _loaded_after(code: str) -> list[str]:
    probe = code + f"\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own printed list


def test_import_srblocks_loads_nothing_heavy() -> None:
    assert _loaded_after("import srblocks") == []


@pytest.mark.parametrize("argv", [["--help"], ["search", "--help"], ["train", "--help"], ["upscale", "--help"],
                                  ["export", "--help"], ["latency", "--help"]])
def test_help_loads_nothing_heavy(argv: list[str]) -> None:
    code = f"from srblocks.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert _loaded_after(code) == []


def test_the_api_is_there_on_first_use() -> None:
    import srblocks

    assert "build_model" in dir(srblocks) and "blocks" not in srblocks.__all__
    from srblocks import build_model, get_block

    assert get_block("safm").name == "safm"  # the registry registers srblocks' own blocks when first read
    import torch

    assert build_model("safmn", scale=2, n_blocks=1)(torch.rand(1, 3, 16, 16)).shape == (1, 3, 32, 32)
    assert srblocks.blocks.SAFM is get_block("safm").cls  # submodules resolve as if imported
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        srblocks.no_such_name  # noqa: B018


def test_functions_named_like_their_module_stay_functions() -> None:
    """Importing ``srblocks.profile`` (the module) binds it on the package; the package keeps the function."""
    code = ("import srblocks, srblocks.profile, srblocks.train, srblocks.deploy, srblocks.evaluate\n"
            "print([callable(getattr(srblocks, n)) and not hasattr(getattr(srblocks, n), '__file__')"
            " for n in ('profile', 'train', 'deploy', 'evaluate')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[True, True, True, True]"
