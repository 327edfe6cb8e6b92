"""HPUN-S/M/L specs (arch_specs/hpun_{s,m,l}.yaml) against the reference assembly and the paper's Table 3.

HPUN has no official code or weights, so the references are: the test-only plain-torch assembly
``tests/_hpun_reference.py`` (same blocks, same module names: outputs must agree with identical weights), its
closed-form counts (exact), and the paper's Table 3 (params in K, conv-only Multi-Adds in G at 1280x720 HR).

Conventions: ``srblocks.profile`` runs a real LR tensor (x3: 240x427, so the PUDs pad 427 to 428; the paper's
analytic 1280*720/9 convention is checked in ``test_hpun_blocks.py``). Its total MACs add 4 MACs per bilinear
output element (fvcore) to the conv MACs; the paper's Multi-Adds are compared with
``macs_by_op["aten.convolution"]``. Tolerances: params within 2,500 of the paper (issue 6), conv MACs within 0.5%;
L x2 is a paper inconsistency (documented in hpun_l.yaml's notes): the model is +1.91% over the printed 151.1G,
checked to within the paper's print precision.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import srblocks
from srblocks import build_model
from srblocks.profile import Profile, profile
from srblocks.spec import load_spec
from srblocks.spec.schema import ArchSpec

try:
    import _hpun_reference as ref
except ImportError:  # tests/ imported as a package
    from tests import _hpun_reference as ref  # type: ignore[no-redef]

REPO_ROOT = Path(__file__).resolve().parents[1]
SPECS = {"S": "hpun_s", "M": "hpun_m", "L": "hpun_l"}
LR_SIZE = {2: (360, 640), 3: (240, 427), 4: (180, 320)}  # HR 1280x720 (x3: 427 = round(1280 / 3))
VARIANT_SCALES = [(v, s) for v in ref.VARIANTS for s in ref.SCALES]
#: Documented deviation of the measured conv MACs from the paper (hpun_l.yaml notes): L x2 153.99G vs 151.1G.
L_X2_DEVIATION = 0.0191


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    """Run this module single-threaded, restoring the setting afterwards: the forwards are tiny, and on a shared
    2-core machine two OpenMP threads spend most of their time at barriers (measured 4 s vs 0.04 s per forward)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_CACHE: dict[tuple[str, int], tuple[nn.Module, Profile]] = {}


def built(variant: str, scale: int) -> tuple[nn.Module, Profile]:
    """Spec-built model and its profile at the 1280x720-HR LR size (built once per file: ~2 s each; don't mutate)."""
    key = (variant, scale)
    if key not in _CACHE:
        model = build_model(SPECS[variant], scale=scale)
        _CACHE[key] = (model, profile(model, LR_SIZE[scale]))
    return _CACHE[key]


def _randomise(m: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.05)
    return m


# ------------------------------------------------------------------------------------------------ the spec files
def test_build_model_verbatim_from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The project description's example, from the repository root, and the shipped name."""
    monkeypatch.chdir(REPO_ROOT)
    model = srblocks.build_model("arch_specs/hpun_l.yaml")
    shipped = srblocks.build_model("hpun_l")
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in shipped.state_dict().items()}
    assert n_params(model) == ref.hpun_params("L", 4, ref.CHOSEN_POLICY)  # default scale 4
    with torch.no_grad():
        assert model(torch.rand(1, 3, 6, 10)).shape == (1, 3, 24, 40)


@pytest.mark.parametrize("variant", ref.VARIANTS)
def test_spec_metadata(variant: str) -> None:
    loaded = load_spec(SPECS[variant])
    spec: ArchSpec = loaded.spec
    assert spec.y_convention == "float" and spec.input_range == 1.0  # RCAN MATLAB evaluation, RGB in [0, 1]
    if variant != "M":
        assert loaded.raw["extends"] == "hpun_m"  # one graph for all three
    v = spec.variables
    assert (v["n_pub"], v["n_hpub"]) == ((8, 0) if variant == "S" else (0, ref.N_BLOCKS[variant]))
    policy = ref.CHOSEN_POLICY
    assert v["pub_bias"] == all(policy.pub) and not any(policy.pub)
    assert tuple(v["hpub_bias"]) == policy.hpub
    assert v["conv_bias"] == policy.head == policy.body_end == policy.tail
    assert tuple(v["pub_kernels"]) == ref.PUB_KERNELS and tuple(v["hpub_kernels"]) == ref.HPUB_KERNELS
    notes = " ".join(spec.notes if isinstance(spec.notes, list) else [spec.notes or ""]).lower()
    for topic in ("max-pool", "align_corners", "initialisation", "bias", "activation", "odd", "x3"):
        assert topic in notes, f"{SPECS[variant]} notes do not cover {topic!r}"
    # The informative paper figures in expected: are Table 3's, with the measured LR sizes.
    by_scale = {e.when["scale"]: e for e in spec.expected}
    assert sorted(by_scale) == [2, 3, 4]
    for s, entry in by_scale.items():
        assert entry.lr_size == LR_SIZE[s]
        assert entry.paper["params"] == f"{ref.PAPER_PARAMS_K[(variant, s)]}K"
        assert entry.paper["macs"] == f"{ref.PAPER_MACS_G[(variant, s)]}G"


@pytest.mark.parametrize("variant, scale", [("S", 2), ("M", 3), ("L", 4)])
def test_spec_equals_reference_assembly(variant: str, scale: int) -> None:
    """Same state_dict keys; with the reference's (random, biases included) weights the outputs agree, even and odd."""
    reference = _randomise(ref.HPUNReference(variant, scale)).eval()
    # NCHW like the reference, for a comparison at float-exact tolerance (channels_last differs by rounding)
    model = copy.deepcopy(built(variant, scale)[0]).to(memory_format=torch.contiguous_format).eval()
    assert set(model.state_dict()) == set(reference.state_dict())
    model.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        for hw in ((8, 12), (7, 9)):
            x = torch.rand(2, 3, *hw)
            torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ params
@pytest.mark.parametrize("variant, scale", VARIANT_SCALES)
def test_params_vs_paper(variant: str, scale: int) -> None:
    """Exact closed form of the chosen bias policy; within 2,500 of the paper's rounded Table 3 figure."""
    model, prof = built(variant, scale)
    assert prof.params == n_params(model) == ref.hpun_params(variant, scale, ref.CHOSEN_POLICY)
    assert abs(prof.params - 1000 * ref.PAPER_PARAMS_K[(variant, scale)]) <= 2_500


# ------------------------------------------------------------------------------------------------ MACs
@pytest.mark.parametrize("variant, scale", VARIANT_SCALES)
def test_macs_closed_form(variant: str, scale: int) -> None:
    """Profiler total = conv MACs + bilinear MACs, each equal to the closed form at the real LR size (exact)."""
    _, prof = built(variant, scale)
    h, w = LR_SIZE[scale]
    assert set(prof.macs_by_op) == {"aten.convolution", "aten.upsample_bilinear2d"}
    assert prof.macs_by_op["aten.convolution"] == ref.hpun_conv_macs(variant, scale, h, w)
    if w % 2 == 0:  # even sizes: the paper's per-LR-pixel cost x pixels
        assert prof.macs_by_op["aten.convolution"] == ref.hpun_macs_per_lr_pixel(variant, scale) * h * w
    assert prof.macs_by_op["aten.upsample_bilinear2d"] == ref.hpun_bilinear_macs(variant, h, w)
    assert prof.macs == sum(prof.macs_by_op.values())


@pytest.mark.parametrize("variant, scale", VARIANT_SCALES)
def test_conv_macs_vs_paper(variant: str, scale: int) -> None:
    """Conv MACs (real LR tensor) within 0.5% of Table 3; L x2 at the documented +1.91% (paper's print precision)."""
    _, prof = built(variant, scale)
    conv = prof.macs_by_op["aten.convolution"]
    paper = ref.PAPER_MACS_G[(variant, scale)] * 1e9
    if (variant, scale) == ("L", 2):
        # 151.1G is printed to +-0.05G, i.e. +-0.033%: the deviation is 1.91% to that precision.
        assert abs(conv / paper - 1 - L_X2_DEVIATION) <= 0.0005, f"L x2: {conv / 1e9:.3f}G vs paper 151.1G"
    else:
        assert abs(conv / paper - 1) <= 0.005, f"{variant} x{scale}: {conv / 1e9:.3f}G vs paper {paper / 1e9}G"


def test_l_x2_paper_figure_is_inconsistent() -> None:
    """Per-HPUB cost = (L - M) / 4 per LR pixel: the model's is 51,904 at every scale; the paper's x2 rows imply 48.7K.

    The paper's x3 / x4 rows imply the model's cost within 0.5%, so its L x2 figure (not the model) is the outlier.
    """
    hpub = ref.hpub_macs_per_pixel(64, ref.HPUB_KERNELS)
    assert hpub == 51_904
    for s in (2, 4):  # even LR sizes: exact
        h, w = LR_SIZE[s]
        measured = built("L", s)[1].macs_by_op["aten.convolution"] - built("M", s)[1].macs_by_op["aten.convolution"]
        assert measured == 4 * hpub * h * w
    implied = {
        s: (ref.PAPER_MACS_G[("L", s)] - ref.PAPER_MACS_G[("M", s)]) * 1e9 / (4 * ref.LR_PIXELS[s]) for s in (2, 3, 4)
    }
    assert abs(implied[3] / hpub - 1) < 0.005 and abs(implied[4] / hpub - 1) < 0.005
    assert implied[2] / hpub - 1 < -0.06  # 48.7K: a per-pixel cost cannot depend on the scale


def test_profiler_total_equals_fvcore() -> None:
    """The fvcore convention: fvcore's total (conv + 4 per bilinear element) equals the profiler's, odd size included."""
    model = copy.deepcopy(built("M", 2)[0]).eval()
    x = torch.rand(1, 3, 10, 13)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        fca = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = int(fca.total())
    assert total == profile(model, (10, 13)).macs == ref.hpun_conv_macs("M", 2, 10, 13) + ref.hpun_bilinear_macs(
        "M", 10, 13
    )


# ------------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("variant, scale, hw", [("S", 3, (7, 9)), ("M", 2, (5, 4)), ("L", 4, (3, 3)), ("S", 4, (1, 1))])
def test_odd_lr_shapes(variant: str, scale: int, hw: tuple[int, int]) -> None:
    model = copy.deepcopy(built(variant, scale)[0]).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, *hw))
    assert y.shape == (1, 3, hw[0] * scale, hw[1] * scale) and torch.isfinite(y).all()
