"""spandrel / chaiNNer interop (srblocks.interop.spandrel, ``srblocks export --format safetensors --keys official``).

Both directions for the two architectures spandrel 0.4.2 knows and srblocks ships, SAFMN and RCAN, with small
variables and random weights (fixed seeds): our weights under the official names are detected by spandrel with the
right architecture, scale and sizes, and spandrel's network gives our outputs; spandrel-format state dicts become
our models with the same outputs. "Agree" = max abs diff <= TOL on float32 RGB in [0, 1] (both take and return
[0, 1]; measured 0: the same operations in the same order). RCAN with the official mean shift (0..255 internally)
goes through RGBMeanShift and meets the same bound.
"""

from __future__ import annotations

import pytest
import torch

spandrel = pytest.importorskip("spandrel", reason="spandrel (chaiNNer's model loader) is not installed: "
                                                  "pip install spandrel")

import srblocks  # noqa: E402
from srblocks.interop.spandrel import (  # noqa: E402
    SUPPORTED_ARCHITECTURES,
    RGBMeanShift,
    SpandrelFormatError,
    detect_spandrel_architecture,
    from_spandrel,
    to_spandrel_state_dict,
)
from srblocks.weights import WeightsError, model_to_official_keys  # noqa: E402

#: max abs diff between our output and spandrel's, on the [0, 1] scale
TOL = 1e-5

#: (spec, overrides, spandrel id, spandrel hyperparameters that must be detected)
CASES = [
    ("safmn", {"scale": 2, "dim": 16, "n_blocks": 2}, "SAFMN", {"dim": 16, "n_blocks": 2, "upscaling_factor": 2}),
    ("safmn_l", {"scale": 4, "dim": 8, "n_blocks": 1, "ffn_scale": 1.5}, "SAFMN",
     {"dim": 8, "n_blocks": 1, "ffn_scale": 1.5, "upscaling_factor": 4}),
    ("rcan", {"scale": 3, "n_feats": 16, "n_groups": 2, "n_resblocks": 2, "reduction": 4}, "RCAN",
     {"scale": 3, "n_feats": 16, "n_resgroups": 2, "n_resblocks": 2, "reduction": 4, "norm": False}),
    ("rcan_b", {"scale": 4, "n_feats": 8, "n_resblocks": 1, "reduction": 2}, "RCAN",
     {"scale": 4, "n_feats": 8, "n_resgroups": 7, "n_resblocks": 1, "reduction": 2, "norm": False}),
]
IDS = [f"{spec}-x{o['scale']}" for spec, o, _, _ in CASES]


@pytest.fixture(autouse=True)
def _one_thread_and_own_rng():
    """One thread (small inputs), and the global RNG restored afterwards: the seeds here must not change the random
    weights and inputs of tests that run later in the same process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        yield
    torch.set_num_threads(threads)


def _random(spec: str, overrides: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    # NCHW like spandrel's code, for a comparison at float-exact tolerance (channels_last differs by rounding)
    model = srblocks.build_model(spec, memory_format="contiguous", **overrides).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


def _x(seed: int = 1, size: tuple[int, int] = (16, 24)) -> torch.Tensor:
    return torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("spec", "overrides", "arch", "hyper"), CASES, ids=IDS)
def test_ours_to_spandrel(spec: str, overrides: dict, arch: str, hyper: dict) -> None:
    """(a) to_spandrel_state_dict -> ModelLoader detects architecture, scale and sizes; outputs agree."""
    ours = _random(spec, overrides)
    state = to_spandrel_state_dict(ours)
    assert detect_spandrel_architecture(state) == arch
    descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    assert descriptor.architecture.id == arch and descriptor.scale == overrides["scale"]
    assert {k: descriptor.model.hyperparameters[k] for k in hyper} == hyper
    x = _x()
    with torch.no_grad():
        want = ours(x)
        raw = _diff(descriptor.model.eval()(x.clone()), want)  # spandrel's RCAN scales its input in place
        clamped = _diff(descriptor(x.clone()), want.clamp(0, 1))  # chaiNNer's call: padded as needed, clamped
    assert raw <= TOL and clamped <= TOL, (raw, clamped)
    # the converted state dict comes back as the same model (both directions compose to the identity)
    back = from_spandrel(state)
    assert back.spec == ("safmn" if arch == "SAFMN" else "rcan") and not back.mean_shift
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in back.model.state_dict().items())


def _spandrel_model(arch: str, hyper: dict, seed: int = 2, **extra) -> torch.nn.Module:
    torch.manual_seed(seed)
    if arch == "SAFMN":
        from spandrel.architectures.SAFMN import SAFMN

        model = SAFMN(**{**hyper, **extra})
    else:
        from spandrel.architectures.RCAN import RCAN

        model = RCAN(**{**hyper, **extra})
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.parametrize(("spec", "overrides", "arch", "hyper"), CASES, ids=IDS)
def test_spandrel_to_ours(spec: str, overrides: dict, arch: str, hyper: dict, tmp_path) -> None:
    """(b) a spandrel model's state_dict -> from_spandrel -> our model (spec and variables from shapes); agree."""
    peer = _spandrel_model(arch, hyper)
    got = from_spandrel(peer.state_dict())
    assert got.architecture == arch and got.scale == overrides["scale"] and not got.mean_shift
    base = "safmn" if arch == "SAFMN" else "rcan"
    assert got.spec == base
    assert srblocks.model_info(got.model).spec.name == base
    assert all(got.variables[k] == v for k, v in overrides.items()), got.variables
    x = _x(3)
    got.model.to(memory_format=torch.contiguous_format)  # NCHW like the peer (built channels_last by default)
    with torch.no_grad():
        diff = _diff(got.model(x), peer(x.clone()))
    assert diff <= TOL
    # a checkpoint file in chaiNNer's usual wrapping ({"params": ...}, BasicSR) reads the same
    path = tmp_path / "peer.pth"
    torch.save({"params": peer.state_dict()}, path)
    again = from_spandrel(path)
    again.model.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        assert torch.equal(again.model(x), got.model(x))


def test_rcan_with_the_official_mean_shift() -> None:
    """The official 0..255 RCAN (sub_mean/add_mean): refused by default (another function), exact when wrapped."""
    hyper = {"scale": 2, "n_feats": 16, "n_resgroups": 2, "n_resblocks": 1, "reduction": 4}
    peer = _spandrel_model("RCAN", hyper, seed=4, norm=True)
    state = peer.state_dict()
    assert "sub_mean.weight" in state and "add_mean.bias" in state
    with pytest.raises(SpandrelFormatError, match="mean shift.*mean_shift='wrap'"):
        from_spandrel(state)
    got = from_spandrel(state, mean_shift="wrap")
    assert got.mean_shift and isinstance(got.model, RGBMeanShift) and got.spec == "rcan"
    assert srblocks.model_info(got.model.model).variables["n_groups"] == 2
    descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    assert descriptor.model.hyperparameters["norm"] is True
    x = _x(5)
    with torch.no_grad():
        want = descriptor.model.eval()(x.clone())
        diff = _diff(got.model(x), want)
        # without the mean shift the same weights compute something else: that is why the default refuses
        plain = _diff(got.model.model(x), want)
    assert diff <= TOL and plain > 100 * TOL, (diff, plain)


def _export(tmp_path, spec: str, overrides: dict, model: torch.nn.Module, keys: str | None) -> tuple[int, object]:
    from srblocks.cli import main

    weights = tmp_path / f"{spec}.safetensors"
    srblocks.save_weights(model, weights)
    out = tmp_path / f"{spec}-{keys}.safetensors"
    argv = ["export", spec, "--weights", str(weights), "--format", "safetensors", "-o", str(out)]
    for k, v in overrides.items():
        argv += ["--scale", str(v)] if k == "scale" else ["--set", f"{k}={v}"]
    if keys:
        argv += ["--keys", keys]
    return main(argv), out


@pytest.mark.parametrize(("spec", "overrides", "arch", "hyper"), [CASES[0], CASES[2]], ids=[IDS[0], IDS[2]])
def test_cli_export_official_keys_load_in_spandrel(spec, overrides, arch, hyper, tmp_path, capsys) -> None:
    """(c) srblocks export --format safetensors --keys official -> spandrel.ModelLoader().load_from_file agrees."""
    from safetensors import safe_open

    ours = _random(spec, overrides, seed=6)
    code, out = _export(tmp_path, spec, overrides, ours, "official")
    assert code == 0, capsys.readouterr().err
    assert "official key map" in capsys.readouterr().err
    with safe_open(str(out), "pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert keys == set(to_spandrel_state_dict(ours)) and meta["state_dict_keys"] == "official"
    assert meta["spec_hash"] == srblocks.model_info(ours).content_hash()
    descriptor = spandrel.ModelLoader().load_from_file(str(out))
    assert descriptor.architecture.id == arch and descriptor.scale == overrides["scale"]
    x = _x(7)
    with torch.no_grad():
        assert _diff(descriptor.model.eval()(x.clone()), ours(x)) <= TOL
    # and srblocks reads the file back with --official, like any official checkpoint
    again = srblocks.load_weights(srblocks.build_model(spec, memory_format="contiguous", **overrides), out,
                                  official=True).eval()
    with torch.no_grad():
        assert torch.equal(again(x), ours(x))
    # the default key names are unchanged (model.state_dict(), no state_dict_keys entry)
    code, plain = _export(tmp_path, spec, overrides, ours, None)
    assert code == 0
    with safe_open(str(plain), "pt") as f:
        assert set(f.keys()) == set(ours.state_dict()) and "state_dict_keys" not in f.metadata()


def test_cli_export_official_keys_errors(tmp_path, capsys) -> None:
    """--keys official for a spec without an official layout, or for a non-safetensors format: one clear line."""
    code, out = _export(tmp_path, "srresnet", {"scale": 2, "nf": 8, "n_blocks": 1},
                        srblocks.build_model("srresnet", scale=2, nf=8, n_blocks=1), "official")
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "srresnet" in err and "no official key layout" in err and "Traceback" not in err
    from srblocks.cli import main

    code = main(["export", "safmn", "--scale", "2", "--set", "dim=8", "--set", "n_blocks=1", "--format", "onnx",
                 "--keys", "official", "-o", str(tmp_path / "m.onnx")])
    assert code == 2 and "--keys official applies to --format safetensors only" in capsys.readouterr().err


def test_garbage_and_unsupported_state_dicts_are_clear_errors() -> None:
    """(d) what is not a SAFMN/RCAN state dict srblocks can build: SpandrelFormatError naming what was found."""
    with pytest.raises(SpandrelFormatError, match=r"1 key\(s\) \('foo'\).*SAFMN, RCAN"):
        from_spandrel({"foo": torch.zeros(3)})
    with pytest.raises(WeightsError):  # not a state dict at all: a clear WeightsError, no KeyError traceback
        from_spandrel({"foo": "bar"})
    safmn = to_spandrel_state_dict(_random("safmn", {"scale": 2, "dim": 8, "n_blocks": 1}))
    broken = {**safmn, "to_feat.weight": torch.zeros(8)}
    with pytest.raises(SpandrelFormatError, match="'to_feat.weight' should be a 4-D tensor"):
        from_spandrel(broken)
    with pytest.raises(SpandrelFormatError, match="does not fit srblocks' safmn"):
        from_spandrel({**safmn, "feats.0.extra.weight": torch.zeros(1)})
    rcan = _spandrel_model("RCAN", {"scale": 2, "n_feats": 8, "n_resgroups": 1, "n_resblocks": 1, "reduction": 2},
                           norm=False, unshuffle_mod=True)
    with pytest.raises(SpandrelFormatError, match="pixel-unshuffle head"):
        from_spandrel(rcan.state_dict())
    assert set(SUPPORTED_ARCHITECTURES) == {"SAFMN", "RCAN"}


def test_specs_spandrel_does_not_know_are_refused_by_name() -> None:
    with pytest.raises(SpandrelFormatError, match="spec 'pan': spandrel has no architecture"):
        to_spandrel_state_dict(srblocks.build_model("pan", scale=2, nf=8, unf=8, n_blocks=1))
    with pytest.raises(SpandrelFormatError, match="spec 'srresnet'.*no official key layout"):
        to_spandrel_state_dict("srresnet")
    # rcan_d: RCAN's key map, but the mask-guided D-Net is another network
    with pytest.raises(SpandrelFormatError, match="spec 'rcan_d'"):
        to_spandrel_state_dict(srblocks.build_model("rcan_d", scale=2, n_feats=8, n_groups=1, n_resblocks=1,
                                                    refine_groups=1, reduction=2))
    # weights that do not fit the spec they are said to be
    with pytest.raises(SpandrelFormatError, match="does not fit the model"):
        to_spandrel_state_dict("safmn", {"to_feat.weight": torch.zeros(36, 3, 3, 3)})


def test_a_spec_variant_spandrel_would_misread_is_refused() -> None:
    """A spec with SAFMN's key names and shapes but another layer is not written for spandrel (it would load it
    into the official SAFMN and compute something else)."""
    from srblocks.spec import load_spec

    raw = load_spec("safmn").spec.model_dump(mode="json", exclude_none=True, exclude={"extends", "expected"})
    raw["name"] = "safmn_tail_variant"
    raw["nodes"].insert(-1, {"id": "tail_act", "block": "act", "args": {"kind": "relu"}})
    model = srblocks.build_model(raw, scale=2, dim=8, n_blocks=1)
    with pytest.raises(SpandrelFormatError, match="safmn_tail_variant.*not the network spandrel builds"):
        to_spandrel_state_dict(model)


def test_official_key_inverse_mechanism() -> None:
    """model_to_official_keys inverts the specs' rename maps (prefix maps too) and refuses a many-to-one map."""
    with torch.device("meta"):
        rfdn_b = srblocks.build_model("rfdn_b", check_shapes=False)
        hpinet = srblocks.build_model("hpinet_m", scale=4, check_shapes=False)
    official = model_to_official_keys(rfdn_b)
    assert all(k.startswith("base.") for k in official) and len(official) == len(rfdn_b.state_dict())
    with pytest.raises(WeightsError, match="not one-to-one.*'upconv.weight' and 'upconv1.weight'"):
        model_to_official_keys(hpinet)
