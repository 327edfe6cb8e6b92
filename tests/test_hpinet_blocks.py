"""HPINet blocks (cpd, gpa, ipsa, hpi_block) and the whole network assembled from them.

Reference numbers: docs/reference/hpinet.md (parameter counts, CPD rule and its 3/4-weight quirk, GPA/IPSA
equations) and the golden cases ``hpinet_*`` (official code outputs and GPA argmax partners, manifest.md §2.1).
Golden tolerance: max abs diff <= 1e-4 (the manifest expects ~1e-6 for a faithful float32 re-implementation).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _hpinet_reference import VARIANTS, HPINetReference, load_official, remap_official
from conftest import require_shared_file
from srblocks.blocks.hpinet import (
    CPD,
    GPA,
    IPSA,
    HPIAttention,
    HPIBlock,
    HPILayer,
    PatchMatch,
    cpd_divide,
    cpd_geometry,
    cpd_merge,
    hpi_attention,
)
from srblocks.registry import get_block

GOLDEN_CASES = {  # case -> (variant, scale, weights file)
    "hpinet_m_x4": ("M", 4, "hpinet_m_x4"),
    "hpinet_m_x2": ("M", 2, "hpinet_m_x2"),
    "hpinet_s_x4": ("S", 4, "hpinet_s_x4"),
    "hpinet_s_x4_quirk": ("S", 4, "hpinet_s_x4"),  # same weights, 43x59 crop
    "hpinet_l_x4_random": ("L", 4, "hpinet_l_x4_random"),
}


def _golden(case: str, suffix: str) -> torch.Tensor:
    return torch.from_numpy(np.load(require_shared_file(f"golden/{case}.{suffix}.npy")))


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    """Run this module single-threaded, restoring the setting afterwards: the 64x64 forwards are tiny, and on a
    shared 2-core machine two OpenMP threads spend most of the time waiting at barriers (measured 6x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run_with_partners(model: HPINetReference, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Network output and the eval-mode GPA partners (B, n) of every block, in one pass."""
    with torch.no_grad():
        f = model.first_conv(x)
        partners = []
        for block in model.body:
            partners.append(block.partners(f))
            f = block(f)
        return model.skip(x) + model.last_conv(model.upsampler(f)), partners


def _golden_model(variant: str, scale: int, weights: str) -> HPINetReference:
    path = require_shared_file(f"golden/{weights}.pth")
    model = HPINetReference(variant, scale).eval()
    load_official(model, torch.load(path, map_location="cpu"))
    return model


# ------------------------------------------------------------------------------------- loop reference of the CPD


def _official_windows(length: int, ps: int) -> list[int]:
    """Window starts along one axis, written as the official loops (range with step ps-2, clamp the last)."""
    step = ps - 2
    return [min(i, length - ps) for i in range(0, length + step - ps, step)]


def _loop_merge(patches: torch.Tensor, h: int, w: int, ps: int) -> torch.Tensor:
    """Official patch_reverse rule restated with loops: (B, n, C, ps, ps) -> (B, C, h, w)."""
    b, _, c = patches.shape[:3]
    step = ps - 2
    out = torch.zeros(b, c, h, w, dtype=patches.dtype)
    idx = 0
    for top in _official_windows(h, ps):
        for left in _official_windows(w, ps):
            out[:, :, top : top + ps, left : left + ps] += patches[:, idx]
            idx += 1
    for i in range(step, h + step - ps, step):
        out[:, :, (h - ps if i + ps > h else i) : i + 2, :] /= 2
    for j in range(step, w + step - ps, step):
        out[:, :, :, (w - ps if j + ps > w else j) : j + 2] /= 2
    return out


def _loop_divide(x: torch.Tensor, ps: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, n, C, ps, ps), row-major windows."""
    h, w = x.shape[-2:]
    crops = [x[:, :, t : t + ps, l : l + ps] for t in _official_windows(h, ps) for l in _official_windows(w, ps)]
    return torch.stack(crops, dim=1)


def _to_tokens(patches: torch.Tensor) -> torch.Tensor:
    b, n, c, p, _ = patches.shape
    return patches.permute(0, 1, 3, 4, 2).reshape(b * n, p * p, c)


def _from_tokens(tokens: torch.Tensor, b: int, ps: int) -> torch.Tensor:
    bn, _, c = tokens.shape
    return tokens.view(b, bn // b, ps, ps, c).permute(0, 1, 4, 2, 3)


# ------------------------------------------------------------------------------------------------------ registry


def test_blocks_registered_with_channel_argument() -> None:
    for name, arg in (("cpd", "dim"), ("gpa", "dim"), ("ipsa", "dim"), ("hpi_block", "dim")):
        info = get_block(name)
        assert info.in_channels == arg
        assert "patch_size" in info.args_model.model_fields
    block = get_block("hpi_block").cls(**get_block("hpi_block").args_model(dim=16, patch_size=8).model_dump())
    assert block.out_channels == 16
    assert CPD(dim=5, patch_size=4).out_channels == 5
    assert GPA(dim=8, patch_size=6, qk_dim=4, mlp_dim=8).out_channels == 8
    assert IPSA(dim=8, patch_size=6, qk_dim=4, mlp_dim=8).out_channels == 8


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(dim=8, patch_size=2), "patch_size"),
        (dict(dim=8, patch_size=8, heads=3), "heads"),
        (dict(dim=8, patch_size=8, qk_dim=6, heads=4), "heads"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        HPIBlock(**kwargs)
    with pytest.raises(ValueError, match="patch_size"):
        CPD(dim=3, patch_size=1)


def test_input_smaller_than_patch_raises() -> None:
    block = HPIBlock(dim=8, patch_size=12, qk_dim=4, mlp_dim=8)
    with pytest.raises(ValueError, match=r"patch_size.*11x30"):
        block(torch.randn(1, 8, 11, 30))
    with pytest.raises(ValueError, match="patch_size"):
        GPA(dim=8, patch_size=12, qk_dim=4, mlp_dim=8)(torch.randn(1, 8, 30, 5))
    assert block(torch.randn(1, 8, 12, 12)).shape == (1, 8, 12, 12)  # exactly one patch is fine


def test_official_key_structure() -> None:
    """Keys of one hpi_block = the official per-block keys (doc §3 table) after the spec's renames."""
    c, qk, hid = 56, 32, 100
    shapes = {k: tuple(v.shape) for k, v in HPIBlock(dim=c, patch_size=12, qk_dim=qk, mlp_dim=hid).state_dict().items()}
    expected = {"match.norm.weight": (c,), "match.norm.bias": (c,), "conv.weight": (c, c, 3, 3), "conv.bias": (c,)}
    for j in range(3):
        p = f"layers.{j}."
        expected |= {
            p + "0.norm.weight": (c,), p + "0.norm.bias": (c,),
            p + "0.fn.to_q.weight": (qk, c), p + "0.fn.to_k.weight": (qk, c), p + "0.fn.to_v.weight": (c, c),
            p + "1.norm.weight": (c,), p + "1.norm.bias": (c,),
            p + "1.fn.fc1.weight": (hid, c), p + "1.fn.fc1.bias": (hid,),
            p + "1.fn.fc2.weight": (c, hid), p + "1.fn.fc2.bias": (c,),
        }  # fmt: skip
    assert shapes == expected  # 33 block tensors + 2 mid_conv + 2 cross_match = 37 keys (doc §3)
    assert len(shapes) == 37
    renamed = remap_official({"blocks.3.layers.2.1.fn.fc1.weight": 0, "cross_match.3.norm.bias": 0,
                              "mid_convs.3.weight": 0, "module.upconv2.bias": 0})  # fmt: skip
    assert set(renamed) == {"body.3.layers.2.1.fn.fc1.weight", "body.3.match.norm.bias", "body.3.conv.weight",
                            "upsampler.3.bias"}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------- CPD


def test_cpd_geometry_64x64_matches_manifest() -> None:
    """manifest.md §2.1: window starts for a 64x64 map and the patch counts."""
    expected = {
        12: ((0, 10, 20, 30, 40, 50, 52), 49),
        14: ((0, 12, 24, 36, 48, 50), 36),
        16: ((0, 14, 28, 42, 48), 25),
        20: ((0, 18, 36, 44), 16),
        24: ((0, 22, 40), 9),
    }
    for ps, (starts, n) in expected.items():
        geo = cpd_geometry(64, 64, ps)
        assert geo.row_starts == starts and geo.col_starts == starts and geo.n_patches == n
        assert torch.equal(geo.divisor, cpd_geometry(64, 64, ps, exact_average=True).divisor)  # no quirk at 64x64


@pytest.mark.parametrize("h, w, ps", [(43, 59, 12), (43, 59, 16), (23, 31, 12), (31, 31, 16), (14, 14, 12),
                                      (12, 12, 12), (12, 40, 12), (37, 25, 3), (64, 64, 24), (57, 69, 20)])  # fmt: skip
def test_cpd_divide_and_merge_equal_loop_reference(h: int, w: int, ps: int) -> None:
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    tokens, geo = cpd_divide(x, ps)
    patches = _loop_divide(x, ps)
    assert torch.equal(tokens, _to_tokens(patches))
    assert geo.row_starts == tuple(_official_windows(h, ps)) and geo.col_starts == tuple(_official_windows(w, ps))
    y = torch.randn_like(patches)
    merged = cpd_merge(_to_tokens(y), geo)
    torch.testing.assert_close(merged, _loop_merge(y, h, w, ps), rtol=0, atol=1e-12)


def test_cpd_compiles_without_graph_breaks_and_equals_eager() -> None:
    """The cached geometry's int() of tensors broke the compiled graph (3 breaks here, 13 in HPINet-S)."""
    def divide_merge(x: torch.Tensor) -> torch.Tensor:
        tokens, geo = cpd_divide(x, 12)
        return cpd_merge(tokens * 2.0, geo)

    x = torch.randn(1, 3, 43, 59)
    torch._dynamo.reset()
    assert torch._dynamo.explain(divide_merge)(x).graph_break_count == 0
    compiled = torch.compile(divide_merge, backend="eager")
    assert torch.equal(compiled(x), divide_merge(x))


def test_cpd_quirk_weights_on_golden_quirk_geometry() -> None:
    """manifest §2.1: on 43x59, row 31 (ps 12) and column 43 (ps 16) get weight 3/4; everything else 1."""
    ones = torch.ones(1, 1, 43, 59)
    w12 = CPD(dim=1, patch_size=12)(ones)[0, 0]
    assert torch.equal(w12[31], torch.full((59,), 0.75))
    assert torch.equal(w12[torch.arange(43) != 31], torch.ones(42, 59))
    w16 = CPD(dim=1, patch_size=16)(ones)[0, 0]
    assert torch.equal(w16[:, 43], torch.full((43,), 0.75))
    assert torch.equal(w16[:, torch.arange(59) != 43], torch.ones(43, 58))
    corner = CPD(dim=1, patch_size=12)(torch.ones(1, 1, 43, 43))[0, 0]  # row and column 31: 3/4 * 3/4
    assert corner[31, 31].item() == 0.5625 and corner[31, 0].item() == 0.75 and corner[30, 30].item() == 1.0
    assert (len(cpd_geometry(43, 59, 12).row_starts), cpd_geometry(43, 59, 12).row_starts[-1]) == (5, 31)


@pytest.mark.parametrize("h, w, ps", [(43, 59, 12), (43, 59, 16), (23, 31, 12), (64, 64, 12), (93, 93, 20), (5, 9, 3)])
def test_cpd_exact_average_round_trip_is_identity(h: int, w: int, ps: int) -> None:
    x = torch.randn(2, 4, h, w)
    cpd = CPD(dim=4, patch_size=ps, exact_average=True)
    torch.testing.assert_close(cpd(x), x, rtol=0, atol=1e-6)
    count = torch.zeros(1, 1, h, w)  # coverage count, brute force
    for t in _official_windows(h, ps):
        for l in _official_windows(w, ps):
            count[..., t : t + ps, l : l + ps] += 1
    merged = cpd.merge(*cpd.divide(torch.ones(1, 1, h, w)))
    assert torch.equal(merged, torch.ones_like(merged))
    if count.max() > 4:  # three windows overlap: the official weighting differs exactly there
        quirk = CPD(dim=1, patch_size=ps)(torch.ones(1, 1, h, w))
        assert not torch.equal(quirk, merged)


def test_cpd_round_trip_default_is_identity_on_standard_sizes() -> None:
    """Doc §2: standard sizes are unaffected by the quirk (checked on two of them with every HPINet patch size)."""
    for h, w in ((48, 48), (64, 64)):
        x = torch.randn(1, 2, h, w)
        for ps in (12, 14, 16, 20, 24):
            assert torch.equal(CPD(dim=2, patch_size=ps)(x), x)


# --------------------------------------------------------------------------------------------- attention, GPA, IPSA


@pytest.mark.parametrize("heads, qk_dim, dim", [(1, 32, 56), (1, 24, 40), (2, 36, 64), (1, 64, 48)])
def test_sdpa_equals_explicit_softmax(heads: int, qk_dim: int, dim: int) -> None:
    """The fused SDPA path (zero-padded q/k or v) equals the official explicit softmax attention to <= 1e-5."""
    torch.manual_seed(0)
    attn = HPIAttention(dim, qk_dim, heads)
    x, y = torch.randn(3, 144, dim), torch.randn(3, 144, dim)  # 3 patches of 12x12 tokens
    with torch.no_grad():
        fused_self, fused_cross = attn(x), attn(x, y)
        attn.use_sdpa = False
        explicit_self, explicit_cross = attn(x), attn(x, y)
    assert (fused_self - explicit_self).abs().max().item() <= 1e-5
    assert (fused_cross - explicit_cross).abs().max().item() <= 1e-5
    q, k, v = torch.randn(4, 100, 8), torch.randn(4, 100, 8), torch.randn(4, 100, 20)
    d = (hpi_attention(q, k, v, 0.3) - hpi_attention(q, k, v, 0.3, use_sdpa=False)).abs().max().item()
    assert d <= 1e-5


def _manual_layer(layer: HPILayer, t: torch.Tensor, partner: torch.Tensor | None) -> torch.Tensor:
    """Doc §2 equations for one patch (single head): pre-LN attention (K/V from raw partner) + FFN."""
    attn, ff = layer[0], layer[1]
    z = F.layer_norm(t, t.shape[-1:], attn.norm.weight, attn.norm.bias)
    kv_src = z if partner is None else partner
    a = attn.fn
    q, k, v = z @ a.to_q.weight.T, kv_src @ a.to_k.weight.T, kv_src @ a.to_v.weight.T
    t = t + torch.softmax(q @ k.T * a.qk_dim**-0.5, dim=-1) @ v
    z = F.layer_norm(t, t.shape[-1:], ff.norm.weight, ff.norm.bias)
    h = F.gelu(z @ ff.fn.fc1.weight.T + ff.fn.fc1.bias)
    return t + h @ ff.fn.fc2.weight.T + ff.fn.fc2.bias


def test_gpa_and_ipsa_equal_the_documented_equations() -> None:
    """Per-patch loop restatement of GPA matching + cross-attention and IPSA (doc §2), on a 2-image batch."""
    torch.manual_seed(1)
    c, ps = 8, 6
    gpa = GPA(dim=c, patch_size=ps, qk_dim=4, mlp_dim=12).eval()
    ipsa = IPSA(dim=c, patch_size=ps, qk_dim=4, mlp_dim=12).eval()
    for p in list(gpa.parameters()) + list(ipsa.parameters()):
        p.data.add_(0.1 * torch.randn_like(p))  # no LayerNorm left at its default
    x = torch.randn(2, c, 13, 17, dtype=torch.float64)
    gpa.double(), ipsa.double()
    patches = _loop_divide(x, ps)  # (B, n, C, ps, ps)
    b, n = patches.shape[:2]
    gpa_out, ipsa_out = torch.empty_like(patches), torch.empty_like(patches)
    for i in range(b):
        tok = patches[i].flatten(2).transpose(1, 2)  # (n, L, C)
        q = F.layer_norm(tok.mean(1), (c,), gpa.match.norm.weight, gpa.match.norm.bias)
        sim = q @ q.T * c**-0.5 - 100 * torch.eye(n, dtype=q.dtype)
        partner = sim.argmax(-1)
        assert (partner != torch.arange(n)).all()  # self-exclusion
        for j in range(n):
            g = _manual_layer(gpa.layer, tok[j], tok[partner[j]])
            s = _manual_layer(ipsa.layer, tok[j], None)
            gpa_out[i, j] = g.T.reshape(c, ps, ps)
            ipsa_out[i, j] = s.T.reshape(c, ps, ps)
    with torch.no_grad():
        torch.testing.assert_close(gpa(x), _loop_merge(gpa_out, 13, 17, ps), rtol=0, atol=1e-10)
        torch.testing.assert_close(ipsa(x), _loop_merge(ipsa_out, 13, 17, ps), rtol=0, atol=1e-10)


def test_gpa_training_uses_hard_gumbel_partners_with_gradient() -> None:
    torch.manual_seed(2)
    match = PatchMatch(8).train()
    tokens = torch.randn(2 * 6, 16, 8, requires_grad=True)
    partner = match(tokens, 6)
    # every partner row is (to float rounding of the straight-through one-hot) one patch of the same image
    flat = tokens.detach().view(2, 6, -1)
    for i, rows in enumerate(partner.detach().view(2, 6, -1)):
        dist = (rows[:, None] - flat[i][None]).abs().amax(-1)  # (6, 6)
        assert (dist.min(-1).values <= 1e-6).all()
    partner.sum().backward()
    assert match.norm.weight.grad is not None and match.norm.weight.grad.abs().sum() > 0  # straight-through
    assert tokens.grad is not None
    block = HPIBlock(dim=8, patch_size=6, qk_dim=4, mlp_dim=8).train()
    x = torch.randn(1, 8, 13, 13, requires_grad=True)
    block(x).square().mean().backward()  # the library returns the image in training mode
    assert all(p.grad is not None for p in block.parameters())


# ---------------------------------------------------------------------------------------- the network (golden)


@pytest.mark.parametrize("variant, counts", [("S", (405_371, 477_571, 463_131)), ("M", (782_539, 923_939, 895_659)),
                                             ("L", (1_287_875, 1_472_515, 1_435_587))])  # fmt: skip
def test_parameter_counts(variant: str, counts: tuple[int, int, int]) -> None:
    """Doc §1: exact parameter counts of the official definitions at x2 / x3 / x4."""
    got = tuple(sum(p.numel() for p in HPINetReference(variant, s).parameters()) for s in (2, 3, 4))
    assert got == counts


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden_output_and_partners(case: str) -> None:
    variant, scale, weights = GOLDEN_CASES[case]
    model = _golden_model(variant, scale, weights)
    x, expected = _golden(case, "input"), _golden(case, "output")
    records = json.loads(require_shared_file(f"golden/{case}.match.json").read_text())
    out, partners = _run_with_partners(model, x)
    with torch.no_grad():
        torch.testing.assert_close(out, model(x), rtol=0, atol=0)  # the helper is the model's forward
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() <= 1e-4
    assert len(records) == len(model.body) == len(VARIANTS[variant].patch_sizes)
    for block, p, rec in zip(model.body, partners, records):
        assert block.patch_size == rec["patch_size"]
        assert p.shape == (1, rec["n_patches"])
        assert p[0].tolist() == rec["argmax"]


def test_batch_matches_each_image_alone() -> None:
    """Batch > 1: each image matches patches within itself (the official eval gather bug is not reproduced)."""
    model = _golden_model("S", 4, "hpinet_s_x4")
    a, b = _golden("hpinet_s_x4", "input"), _golden("hpinet_m_x4", "input")  # two different 64x64 crops
    both, p_both = _run_with_partners(model, torch.cat([a, b]))
    alone_a, p_a = _run_with_partners(model, a)
    alone_b, p_b = _run_with_partners(model, b)
    assert (both[0:1] - alone_a).abs().max().item() <= 1e-5
    assert (both[1:2] - alone_b).abs().max().item() <= 1e-5
    assert (both[0:1] - _golden("hpinet_s_x4", "output")).abs().max().item() <= 1e-4  # batch item 0 = official
    for pb, pa, pbb in zip(p_both, p_a, p_b):
        assert torch.equal(pb[0], pa[0]) and torch.equal(pb[1], pbb[0])
    # the official bug (partners of image 1 taken from image 0) would matter here: the partner lists differ
    assert any(not torch.equal(p[0], p[1]) for p in p_both)


def test_exact_average_option_changes_the_quirk_crop() -> None:
    """exact_average=True changes the output on the 43x59 quirk crop (on 64x64 both weightings are identical, see
    test_cpd_geometry_64x64_matches_manifest); the default reproduces the official output there (golden test)."""
    sd = torch.load(require_shared_file("golden/hpinet_s_x4.pth"), map_location="cpu")
    exact = HPINetReference("S", 4, exact_average=True).eval()
    load_official(exact, sd)
    with torch.no_grad():
        d = (exact(_golden("hpinet_s_x4_quirk", "input")) - _golden("hpinet_s_x4_quirk", "output")).abs().max().item()
    assert d > 1e-3 and math.isfinite(d)


@pytest.mark.parametrize("variant, scale, lr, total, conv, linear, attn", [
    ("M", 4, (180, 320), 135.81, 47.00, 33.25, 55.56),
    ("S", 3, (240, 427), 126.79, 26.19, 30.33, 70.27),
])  # fmt: skip
def test_macs_equal_official_flop_counter(
    variant: str, scale: int, lr: tuple[int, int], total: float, conv: float, linear: float, attn: float
) -> None:
    """Doc §4 table (official code, FlopCounterMode / 2, G, 1280x720 output): counted on the meta device, where the
    attention runs with the official matmul shapes (no CPU zero-padding)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = HPINetReference(variant, scale).eval()
        x = torch.empty(1, 3, *lr)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    by_op = {str(k): v / 2e9 for k, v in counter.get_flop_counts()["Global"].items()}
    assert counter.get_total_flops() / 2e9 == pytest.approx(total, abs=0.005)
    assert by_op["aten.convolution"] == pytest.approx(conv, abs=0.005)
    assert by_op["aten.mm"] + by_op["aten.addmm"] == pytest.approx(linear, abs=0.005)
    assert by_op["aten.bmm"] == pytest.approx(attn, abs=0.005)  # attention and GPA matching matmuls
