"""Issue 11, section 4: failures caused by user input are srblocks errors naming what and where, and the CLI prints
them in one line with exit status 2 (a traceback only with ``--debug``). One regression per example."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import srblocks
from conftest import TINY_SPEC, spec_with, synthetic_images
from srblocks import SpecError, build_model
from srblocks.cli import main
from srblocks.errors import MAX_MESSAGE, SrblocksError
from srblocks.registry import register_block


def _error(spec, **overrides) -> SpecError:
    with pytest.raises(SpecError) as info:
        build_model(spec, **overrides)
    assert len(str(info.value)) <= MAX_MESSAGE
    return info.value


def test_each_of_a_non_list_is_located() -> None:
    spec = spec_with()
    head = {"id": "head{i}", "block": "conv", "args": {"out_channels": {"each": 5}}}
    spec["nodes"][0] = {"repeat": 2, "nodes": [head]}
    spec["nodes"][1]["inputs"] = ["head1"]
    err = _error(spec)
    assert err.path == "nodes[0].nodes[0].args.out_channels.each" and err.node == "head0"
    assert "valid list" in str(err)


@pytest.mark.parametrize("size", [[-1, -1], [0, 64], [64], "64x64", [2**63, 1], [5000, 5]])
def test_bad_dry_run_sizes_are_located(size) -> None:
    assert _error(spec_with(dry_run_size=size)).path.startswith("dry_run_size")


def test_an_empty_inputs_mapping_is_located() -> None:
    assert _error(spec_with(inputs={})).path == "inputs"


def test_huge_integers_never_break_message_formatting() -> None:
    """Python refuses to print integers of more than 4300 digits; messages describe them instead."""
    spec = spec_with()
    spec["nodes"][1] = {"repeat": 10**5000, "nodes": [spec["nodes"][1]]}
    err = _error(spec)
    assert err.path == "nodes[1].repeat" and "5001 digits" in str(err)
    spec = spec_with()
    spec["nodes"][0]["args"]["out_channels"] = 10**5000
    assert _error(spec).node == "head"
    assert "digits" in str(_error(spec_with(dry_run_size=[10**5000, 1])))
    assert _error(TINY_SPEC, dim=-(10**5000)).node == "head"


def test_an_extends_name_too_long_for_the_os_is_located(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"extends": "a" * 300, "name": "p"}))
    err = _error(path)
    assert err.source == str(path) and err.path == "extends"
    with pytest.raises(SpecError, match="no such spec file"):
        srblocks.spec.load_spec("b" * 300)
    with pytest.raises(SpecError, match="no such spec file"):
        srblocks.spec.load_spec("c/" * 3000 + "x.yaml")
    with pytest.raises(SpecError):
        srblocks.spec.load_spec(42)  # type: ignore[arg-type]


class _Boom(nn.Module):
    """Test block: its constructor raises the exception named by ``kind`` (what third-party blocks may do)."""

    def __init__(self, in_channels: int, kind: str = "overflow") -> None:
        super().__init__()
        errors = {"overflow": lambda: int(float("inf")), "zero": lambda: 1 // 0, "key": lambda: {}["x"],
                  "attribute": lambda: None.x, "index": lambda: [][1], "memory": lambda: (_ for _ in ()).throw(
                      MemoryError()), "assert": lambda: (_ for _ in ()).throw(AssertionError("no")),
                  "notimpl": lambda: (_ for _ in ()).throw(NotImplementedError("later")),
                  "long": lambda: (_ for _ in ()).throw(ValueError("bad " + "x" * 10**6))}
        errors[kind]()


register_block("test_hardening_boom", in_channels="in_channels")(_Boom)


@pytest.mark.parametrize("kind, name", [("overflow", "OverflowError"), ("zero", "ZeroDivisionError"),
                                        ("key", "KeyError"), ("attribute", "AttributeError"), ("index", "IndexError"),
                                        ("memory", "MemoryError"), ("assert", "AssertionError"),
                                        ("notimpl", "NotImplementedError"), ("long", "bad x")])
def test_any_exception_of_a_block_constructor_is_located(kind: str, name: str) -> None:
    spec = spec_with()
    spec["nodes"][1] = {"id": "act", "block": "test_hardening_boom", "args": {"kind": kind}}
    err = _error(spec)
    assert err.node == "act" and err.path == "nodes[1].args" and "rejected its arguments" in str(err)
    assert name in str(err)


def test_an_overflowing_argument_is_located() -> None:
    """2**70 output channels once overflowed inside torch's Conv2d; the block schema now bounds every number."""
    spec = spec_with()
    spec["nodes"][0]["args"]["out_channels"] = 2**70
    err = _error(spec)
    assert err.node == "head" and err.path.endswith("args.out_channels") and "out of range" in str(err)


# ------------------------------------------------------------------------------------------------ the CLI
def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def test_cli_user_errors_are_one_line_with_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec_with(dry_run_size=[-1, -1])))
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: d\nnodes: " + "[" * 400 + "]" * 400 + "\n")
    cases = [
        (["summary", str(bad)], "dry_run_size"),
        (["summary", str(deep)], "nested more than"),
        (["summary", "nonexistent_spec"], "no such spec"),
        (["summary", "x" * 5000], "no such spec"),
        (["summary", str(tmp_path / "missing.yaml")], "not found"),
        (["summary", "safmn", "--set", "bogus=1"], "unknown variable override 'bogus'"),
        (["summary", "safmn", "--set", "dim=" + "[" * 3000], "--set dim"),
        (["summary", "safmn", "--set", "dim=&a [*a]"], "--set dim"),
        (["summary", "safmn", "--set", "noequals"], "--set expects NAME=VALUE"),
        (["blocks", "no_such_block"], "unknown block"),
    ]
    for argv, expected in cases:
        code, err = _cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert err.startswith(f"srblocks {argv[0]}: error: ") and expected in err, (argv, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_path_errors_are_one_line_with_exit_2(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY_SPEC))
    weights = srblocks.save_weights(build_model(spec), tmp_path / "w.safetensors")
    images = tmp_path / "in"
    images.mkdir()
    from PIL import Image

    Image.fromarray(synthetic_images(1, (12, 10))[0][1]).save(images / "a.png")
    for out in ["/proc/x", "/proc/x/y", str(tmp_path / ("o" * 300))]:
        code, err = _cli(capsys, "upscale", str(spec), "--weights", str(weights), str(images), "-o", out)
        assert code == 2 and err.startswith("srblocks upscale: error: ") and len(err.splitlines()) == 1, err
    code, err = _cli(capsys, "eval", str(spec), "--weights", str(tmp_path / "none.pth"), "--data", str(images))
    assert code == 2 and "none.pth" in err


def test_cli_debug_shows_the_traceback_and_internal_errors_are_two_lines(tmp_path: Path, capsys, monkeypatch) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec_with(inputs={})))
    with pytest.raises(SpecError):
        main(["--debug", "summary", str(bad)])
    with pytest.raises(SpecError):
        main(["summary", str(bad), "--debug"])
    capsys.readouterr()

    import importlib

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(importlib.import_module("srblocks.profile"), "profile", broken)
    code, err = _cli(capsys, "summary", "fsrcnn", "--lr-size", "8x8")
    assert code == 1 and "internal error: RuntimeError: a bug" in err and "--debug" in err
    assert len(err.splitlines()) == 2


def test_every_user_error_class_is_an_srblocks_error() -> None:
    from srblocks.cli import CliError
    from srblocks.errors import NonFiniteError
    from srblocks.registry import UnknownBlockError
    from srblocks.spec.expr import ExpressionError

    for cls in (SpecError, srblocks.WeightsError, UnknownBlockError, CliError, NonFiniteError, ExpressionError):
        assert issubclass(cls, SrblocksError)
    assert issubclass(SpecError, ValueError) and issubclass(UnknownBlockError, KeyError)
    with pytest.raises(srblocks.WeightsError, match="keys must be strings"):
        srblocks.read_state_dict({1: torch.zeros(1)})


def test_cli_model_failures_on_the_given_input_name_the_node(tmp_path: Path, capsys) -> None:
    """A model that passed its dry run but cannot process the input a command gives it (too small an --lr-size or
    image) fails because of that input: exit 2 naming the node, not an internal error."""
    code, err = _cli(capsys, "summary", "safmn", "--set", "n_blocks=1", "--set", "dim=8", "--lr-size", "1x1")
    assert code == 2 and "the model cannot process this input at node 'feats.0'" in err and len(err.splitlines()) == 1
    spec = tmp_path / "small.yaml"
    spec.write_text(yaml.safe_dump({"extends": "safmn", "name": "small", "variables": {"n_blocks": 1, "dim": 8}}))
    weights = srblocks.save_weights(build_model(spec), tmp_path / "w.safetensors")
    images = tmp_path / "in"
    images.mkdir()
    from PIL import Image

    Image.fromarray(synthetic_images(1, (1, 1))[0][1]).save(images / "dot.png")
    code, err = _cli(capsys, "upscale", str(spec), "--weights", str(weights), str(images), "-o", str(tmp_path / "o"))
    # a batch goes on past a bad image and exits 1 at the end, naming the file and the model's derived minimum
    assert code == 1 and "dot.png: the image is 1x1 pixels, smaller than the 8x8 LR pixels" in err
    assert "Traceback" not in err
