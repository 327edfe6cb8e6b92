"""Issue 11, section 2: no silently wrong results (non-finite weights and outputs, ids that collide with module
attributes, models that break the output contract). One regression per example."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import srblocks
from conftest import TINY_SPEC, spec_with, synthetic_images
from srblocks import SpecError, build_model
from srblocks.cli import main
from srblocks.data import SRSample
from srblocks.errors import NonFiniteError


def _error(spec, **overrides) -> SpecError:
    with pytest.raises(SpecError) as info:
        build_model(spec, **overrides)
    return info.value


@pytest.fixture()
def tiny(tmp_path: Path):
    """TINY as a spec file, a folder of 2 HR images, and checkpoints: finite, with a NaN, with +Inf, overflowing."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY_SPEC))
    torch.manual_seed(0)
    model = build_model(spec)
    data = tmp_path / "set"
    data.mkdir()
    for name, image in synthetic_images(2, (24, 20)):
        Image.fromarray(image).save(data / f"{name}.png")
    files = {"good": srblocks.save_weights(model, tmp_path / "good.safetensors")}
    for kind, value in (("nan", float("nan")), ("inf", float("inf"))):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state["tail.bias"][1] = value
        torch.save(state, tmp_path / f"{kind}.pth")
        files[kind] = tmp_path / f"{kind}.pth"
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for key in ("head.weight", "tail.weight"):
        state[key].fill_(1e30)  # finite weights whose products overflow float32
    torch.save(state, tmp_path / "overflow.pth")
    files["overflow"] = tmp_path / "overflow.pth"
    return spec, data, files


# ------------------------------------------------------------------------------------------------ non-finite weights
@pytest.mark.parametrize("kind, what", [("nan", "1 NaN and 0 infinite"), ("inf", "0 NaN and 1 infinite")])
def test_non_finite_weights_are_refused_at_load_naming_the_tensor(tiny, kind: str, what: str) -> None:
    spec, _, files = tiny
    model = build_model(spec)
    with pytest.raises(srblocks.WeightsError, match=f"tensor 'tail.bias' has {what} value") as info:
        srblocks.load_weights(model, files[kind])
    assert str(files[kind]) in str(info.value)
    state = torch.load(files[kind])
    with pytest.raises(srblocks.WeightsError, match="tail.bias"):
        srblocks.load_weights(model, state)


@pytest.mark.parametrize("command", ["eval", "upscale"])
def test_the_cli_refuses_non_finite_weights(tiny, tmp_path: Path, capsys, command: str) -> None:
    spec, data, files = tiny
    where = ["--data", str(data)] if command == "eval" else [str(data), "-o", str(tmp_path / "out")]
    assert main([command, str(spec), "--weights", str(files["nan"]), *where]) == 2
    err = capsys.readouterr().err.strip()
    assert "tail.bias" in err and "NaN" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no black images written


def test_non_finite_outputs_are_refused_in_evaluate_and_upscale(tiny, capsys) -> None:
    spec, data, files = tiny
    model = srblocks.load_weights(build_model(spec), files["overflow"])
    images = synthetic_images(1, (12, 10))
    samples = [SRSample("bird", image[::2, ::2].copy(), image) for _, image in images]
    with pytest.raises(NonFiniteError, match="bird: the model output has .* NaN and .* infinite"):
        srblocks.evaluate(model, samples)
    with pytest.raises(NonFiniteError, match="photo.png: the model output"):
        srblocks.upscale_image(model, images[0][1], name="photo.png")
    with pytest.raises(NonFiniteError, match="img0.png"):
        srblocks.upscale_image(model, data / "img0.png")
    assert main(["eval", str(spec), "--weights", str(files["overflow"]), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "img0" in err and "non-finite" in err and "Traceback" not in err


def test_finite_weights_still_evaluate(tiny) -> None:
    spec, data, files = tiny
    model = srblocks.load_weights(build_model(spec), files["good"])
    assert np.isfinite(srblocks.evaluate(model, data).mean_psnr)


# ------------------------------------------------------------------------------------------------ ids
@pytest.mark.parametrize("bad_id, part", [
    ("__class__", "__class__"), ("self", "self"), ("meta", "meta"), ("training", "training"), ("graph", "graph"),
    ("half", "half"), ("__init__", "__init__"), ("forward", "forward"), ("code", "code"), ("_modules", "_modules"),
    ("to", "to"), ("state_dict", "state_dict"), ("class", "class"), ("body.training", "training"),
    ("body.__dict__", "__dict__"), ("x.float.y", "float"),
])
def test_ids_that_collide_with_module_attributes_are_refused(bad_id: str, part: str) -> None:
    spec = spec_with()
    spec["nodes"][1]["id"] = bad_id  # the act after head; tail takes it as its (default) input
    err = _error(spec)
    assert err.path == "nodes[1]" and err.node == bad_id and f"(got {part!r})" in str(err)


@pytest.mark.parametrize("bad_id", ["head.weight", "head.weight.lrelu", "head.x"])
def test_an_id_inside_another_nodes_block_is_refused(bad_id: str) -> None:
    """``head.weight`` would replace the conv's weight; ``head.weight.lrelu`` failed later with "'Tensor' object
    has no attribute 'lrelu'"."""
    spec = spec_with()
    spec["nodes"][1]["id"] = bad_id  # the act after head; tail takes it as its (default) input
    err = _error(spec)
    assert err.path == "nodes[1]" and err.node == bad_id and "inside node 'head'" in str(err)


@pytest.mark.parametrize("name", ["self", "class", "__class__", "forward", ""])
def test_graph_input_names_follow_the_same_rule(name: str) -> None:
    spec = spec_with(inputs={name: 3})
    spec["nodes"][4]["inputs"] = [name]  # up: the bilinear skip
    err = _error(spec)
    assert err.path == f"inputs.{name}" and "cannot name" in str(err)


def test_real_ids_still_build() -> None:
    for name in srblocks.spec.shipped_spec_names():
        build_model(name, check_shapes=False)


# ------------------------------------------------------------------------------------------------ output contract
def test_an_output_at_the_wrong_scale_is_refused() -> None:
    spec = spec_with(variables={"scale": 4, "dim": 8})
    spec["nodes"][2]["args"]["out_channels"] = 12  # tail
    spec["nodes"][3]["args"]["scale"] = 2  # shuffle
    spec["nodes"][4]["args"]["scale"] = 2  # up
    err = _error(spec)
    assert err.path == "output" and "(1, 3, 128, 128)" in str(err) and "(1, 3, 256, 256)" in str(err)
    assert "scale 4" in str(err)


def test_an_output_with_48_channels_is_refused() -> None:
    head = {"id": "head", "block": "conv", "args": {"out_channels": 48}}
    spec = spec_with(variables={"scale": 4, "dim": 8}, nodes=[head])
    err = _error(spec)
    assert err.path == "output" and err.node == "head" and "(1, 48, 64, 64)" in str(err)


def test_the_contract_checks_only_what_is_declared() -> None:
    no_scale = spec_with(variables={"dim": 8}, nodes=[{"id": "head", "block": "conv", "args": {"out_channels": 3}}])
    assert build_model(no_scale)(torch.rand(1, 3, 5, 6)).shape == (1, 3, 5, 6)  # no `scale`: any size
    gray = spec_with(inputs={"image": 1}, nodes=[
        {"id": "head", "block": "conv", "args": {"out_channels": 4}},
        {"id": "shuffle", "block": "pixel_shuffle", "args": {"scale": 2}}])
    assert build_model(gray)(torch.rand(1, 1, 5, 6)).shape == (1, 1, 10, 12)  # channels of its own input
    assert "(1, 1, 10, 12)" not in str(_error(spec_with(inputs={"image": 1}, nodes=gray["nodes"][:1])))
    unchecked = spec_with(dry_run_size=None, nodes=[{"id": "head", "block": "conv", "args": {"out_channels": 48}}])
    assert build_model(unchecked)(torch.rand(1, 3, 4, 4)).shape == (1, 48, 4, 4)  # dry_run_size: null opts out


def test_sub_graphs_with_several_outputs_keep_working() -> None:
    from srblocks.build import _subgraph_builder

    inner = {"inputs": {"x": 8}, "nodes": [{"id": "a", "block": "conv", "args": {"out_channels": 16}},
                                           {"id": "b", "block": "conv", "args": {"out_channels": 8}}],
             "output": ["b", "a"]}
    module = _subgraph_builder(inner, {}, "<test>", "inner")
    b, a = module(torch.rand(1, 8, 4, 4))
    assert (b.shape[1], a.shape[1]) == (8, 16)


@pytest.mark.parametrize("name", ["fsrcnn_m", "rfdn_m", "fsrcnn_d"])
@pytest.mark.parametrize("mode", ["mask", "all", "dense", "base"])
def test_mask_guided_specs_keep_the_contract_in_every_mode(name: str, mode: str) -> None:
    """MGA models return the SR image from forward in every mode (coarse image, mask and patches are in
    ``model.mga.last``), so the contract holds; -D specs have no mask predictor and cannot run mode 'mask'."""
    spec = dict(srblocks.spec.load_spec(name).raw)
    spec["mask_guided"] = {**spec["mask_guided"], "mode": mode}
    if name.endswith("_d") and mode == "mask":
        assert _error(spec, scale=2).path == "mask_guided"
        return
    if mode in ("mask",) and spec["mask_guided"].get("k") is None:
        spec["mask_guided"]["k"] = 4
    model = build_model(spec, scale=2).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 12, 16)).shape == (1, 3, 24, 32)
    assert model.mga.last.coarse.shape == (1, 3, 24, 32)


def test_a_huge_declared_scale_is_checked_not_skipped() -> None:
    """Found by the slow fuzz: ``scale`` overridden to 2**64 while the graph upsamples x2."""
    spec = spec_with()
    spec["nodes"][2]["args"]["out_channels"] = 12
    spec["nodes"][3]["args"]["scale"] = 2
    spec["nodes"][4]["args"]["scale"] = 2
    err = _error(spec, scale=2**64)
    assert err.path == "output" and "broken" in str(err) and len(str(err)) < 400
