"""Blocks used on their own: direct construction is validated by the registry's schema, and one channel name.

The fuzz starts from small valid arguments for every registered block and replaces one numeric argument at a time
by a hostile value (wrong type, zero, negative, fractional, NaN/Inf, huge).
"""

from __future__ import annotations

import random
import typing

import pytest
from torch import nn

from srblocks import build_model
from srblocks.blocks import CPD, HFAB, RRRB, SAFM, MaskPredictor
from srblocks.errors import SpecError
from srblocks.registry import BlockArgumentError, _REGISTRY, get_block

#: the names channel arguments had before they became ``dim``
FORMER_NAMES = ("n_feats", "nf", "channels", "channel", "num_feat", "n_feat", "num_channels")

#: small valid keyword arguments for every registered block (the fuzz starts from these; a new block must be added)
VALID_ARGS: dict[str, dict] = {
    "act": {"in_channels": 8}, "add": {"in_channels": [8, 8]}, "mul": {"in_channels": [8, 8]},
    "concat": {"in_channels": [8, 4]}, "identity": {"in_channels": 8},
    "adder_conv": {"in_channels": 8, "out_channels": 4}, "conv": {"in_channels": 8, "out_channels": 4},
    "conv_transpose": {"in_channels": 8, "out_channels": 3, "kernel_size": 9, "stride": 4},
    "project": {"in_channels": 8, "out_channels": 4}, "channel_slice": {"in_channels": 8, "start": 0, "stop": 4},
    "pixel_shuffle": {"in_channels": 16, "scale": 2}, "pixel_unshuffle": {"in_channels": 4, "scale": 2},
    "resize": {"in_channels": 8, "scale": 2.0}, "layernorm2d": {"dim": 8},
    "safm": {"dim": 8}, "ccm": {"dim": 8, "ffn_scale": 2.0}, "fmm": {"dim": 8},
    "rrrb": {"dim": 8}, "erb": {"dim": 8}, "hfab": {"dim": 8, "mid_feats": 4, "n_erbs": 1},
    "cpd": {"dim": 8, "patch_size": 4}, "gpa": {"dim": 8, "patch_size": 6, "qk_dim": 4, "mlp_dim": 8},
    "ipsa": {"dim": 8, "patch_size": 6, "qk_dim": 4, "mlp_dim": 8},
    "hpi_block": {"dim": 8, "patch_size": 6, "qk_dim": 4, "mlp_dim": 8},
    "sr_dsc": {"dim": 8}, "pud": {"dim": 8}, "pub": {"dim": 8}, "hpub": {"dim": 8},
    "esa": {"dim": 16}, "rfdb": {"dim": 8}, "pa": {"dim": 8}, "pa_conv": {"dim": 8}, "scpa": {"dim": 8},
    "srresnet_block": {"dim": 8}, "channel_attention": {"dim": 16, "reduction": 4},
    "rcab": {"dim": 16, "reduction": 4}, "residual_group": {"dim": 16, "n_resblocks": 2, "reduction": 4},
    "mask_predictor": {"dim": 8, "patch_size": 4},
    "mask_guided": {"in_channels": 3, "base": nn.Identity(), "refine": nn.Identity(), "dim": 8, "k": 0.25},
}


def _shipped_blocks() -> dict:
    """The registry without blocks other tests register."""
    return {n: i for n, i in _REGISTRY.items() if i.cls.__module__.startswith("srblocks.")}


def test_the_issue_examples_are_refused_with_the_argument_named() -> None:
    with pytest.raises(BlockArgumentError, match=r"SAFM \('safm'\): invalid arguments: dim: .*valid integer.*'a'"):
        SAFM(dim="a")
    with pytest.raises(BlockArgumentError, match=r"dim: Input should be greater than 0 \(got 0\)"):
        SAFM(dim=0)
    with pytest.raises(BlockArgumentError, match="fractional part"):
        SAFM(dim=32.5)
    # a whole float is the integer it spells: the same block as dim=32
    a, b = SAFM(dim=32.0), SAFM(dim=32)
    assert a.out_channels == 32 and isinstance(a.out_channels, int)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


def test_missing_and_unknown_arguments_name_the_class() -> None:
    with pytest.raises(BlockArgumentError, match=r"SAFM \('safm'\): missing a required argument: 'dim'"):
        SAFM()
    with pytest.raises(BlockArgumentError, match="unexpected keyword argument 'width'"):
        SAFM(dim=8, width=3)
    with pytest.raises(BlockArgumentError, match="too many positional"):
        SAFM(8, 4, 2)
    # positional arguments are bound by name and validated the same way
    with pytest.raises(BlockArgumentError, match="n_levels"):
        SAFM(8, "four")


def test_block_argument_error_is_a_type_and_value_error() -> None:
    """Callers that catch what Python or pydantic would raise keep working."""
    for exc_type in (TypeError, ValueError):
        with pytest.raises(exc_type):
            SAFM(dim="a")


def test_former_channel_names_point_to_dim() -> None:
    with pytest.raises(BlockArgumentError, match="argument 'n_feats' is now called 'dim'"):
        HFAB(n_feats=48, mid_feats=16)
    with pytest.raises(BlockArgumentError, match="argument 'channels' is now called 'dim'"):
        CPD(channels=4, patch_size=4)
    with pytest.raises(BlockArgumentError, match="argument 'nf' is now called 'dim'"):
        MaskPredictor(nf=8)
    assert HFAB(dim=48, mid_feats=16).out_channels == 48 and RRRB(dim=8).out_channels == 8


def test_former_name_in_a_spec_is_a_located_error() -> None:
    spec = {
        "name": "renamed", "variables": {"scale": 2}, "inputs": {"image": 3},
        "nodes": [
            {"id": "head", "block": "conv", "args": {"out_channels": 16}},
            {"id": "att", "block": "hfab", "args": {"n_feats": 16, "mid_feats": 8}},
            {"id": "tail", "block": "conv", "args": {"out_channels": 12}},
            {"id": "up", "block": "pixel_shuffle", "args": {"scale": 2}},
        ],
    }
    with pytest.raises(SpecError) as err:
        build_model(spec)
    assert err.value.path == "nodes[1].args.n_feats" and err.value.node == "att"
    assert "argument 'n_feats' is now called 'dim'" in str(err.value)


def test_one_channel_name_everywhere() -> None:
    """A block that keeps its width calls it ``dim``; only torch-like layers keep ``in_channels``; no registered
    constructor takes any of the former names."""
    torch_like = {"conv", "conv_transpose", "adder_conv", "project", "pixel_shuffle", "pixel_unshuffle", "resize",
                  "act", "identity", "channel_slice", "add", "mul", "concat", "mask_guided"}
    for name, info in _shipped_blocks().items():
        fields = set(info.args_model.model_fields)
        assert not fields & set(FORMER_NAMES), (name, fields & set(FORMER_NAMES))
        if info.in_channels is not None:
            expected = "in_channels" if name in torch_like else "dim"
            assert info.in_channels == expected, (name, info.in_channels)


def test_subclass_of_a_block_is_validated_against_the_parents_schema() -> None:
    class Wide(SAFM):
        def __init__(self, width: int) -> None:
            super().__init__(dim=width * 4)

    assert Wide(2).out_channels == 8
    with pytest.raises(BlockArgumentError, match="dim"):
        Wide(0)


def _int_like(annotation: typing.Any) -> bool:
    text = str(annotation)
    return "int" in text or "float" in text


def _mutations(rng: random.Random) -> list[typing.Any]:
    return ["a", "", None, -1, 0, -2.5, 1.5, float("nan"), float("inf"), [], {}, [1, 2], True, object(),
            rng.randint(-10, 0), 2**70]


def test_fuzz_direct_construction() -> None:
    """Every block the shipped specs use, built directly with one argument replaced by a hostile value, either
    builds a module or raises a ValueError/TypeError with a message (BlockArgumentError or the block's own check)
    - never a torch internal error, an OverflowError or a hang."""
    assert sorted(VALID_ARGS) == sorted(_shipped_blocks()), "every shipped block needs small valid arguments here"
    rng = random.Random(0)
    outcomes = {"built": 0, "BlockArgumentError": 0, "block's own ValueError": 0}
    for name, args in sorted(VALID_ARGS.items()):
        info = get_block(name)
        assert isinstance(info.cls(**args), nn.Module)
        for field, annotation in info.field_types().items():
            if not _int_like(annotation):
                continue
            for value in _mutations(rng):
                try:
                    module = info.cls(**{**args, field: value})
                except BlockArgumentError as exc:
                    assert info.cls.__name__ in str(exc), (name, field, value, exc)
                    outcomes["BlockArgumentError"] += 1
                except ValueError as exc:  # the block's own consistency checks (divisibility, odd kernels, ...)
                    assert str(exc), (name, field, value)
                    outcomes["block's own ValueError"] += 1
                else:
                    assert isinstance(module, nn.Module)
                    outcomes["built"] += 1
    print("direct-construction fuzz:", outcomes)
    assert outcomes["BlockArgumentError"] > 100


@pytest.mark.parametrize("affine", [True, False])
def test_layernorm2d_is_the_official_formula_in_nchw_and_fused_in_channels_last(affine: bool) -> None:
    import torch

    from srblocks.blocks.common import LayerNorm2d

    torch.manual_seed(0)
    norm = LayerNorm2d(8, affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 8, 5, 7) * 3 + 1
    mean = x.mean(1, keepdim=True)  # the official SAFMN LayerNorm, channels_first
    var = (x - mean).pow(2).mean(1, keepdim=True)
    official = (x - mean) / torch.sqrt(var + 1e-6)
    if affine:
        official = norm.weight[:, None, None] * official + norm.bias[:, None, None]
    with torch.no_grad():
        assert torch.equal(norm(x), official)  # NCHW: bit-identical
        nhwc = norm(x.contiguous(memory_format=torch.channels_last))
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    assert float((nhwc - official).abs().max()) <= 1e-5  # NHWC: fused F.layer_norm, float rounding
