"""MGA blocks (mask predictor, top-K gather/scatter, mask_guided) and the backbone blocks it accelerates.

Reference numbers: docs/reference/mga.md (param counts of the official classes), the golden case
``rfdn_mga_x4_random`` (official RFDNMGA, K = 64), and the published param counts of PAN / RCAN / MSRResNet.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _mga_reference import RFDNBase, RFDNRefine, n_params, rfdn_mga
from conftest import require_shared_file
from srblocks.blocks.backbones import (
    ESA,
    PA,
    RCAB,
    RFDB,
    SCPA,
    AdderConv,
    ChannelAttention,
    ConvTranspose,
    ResidualGroup,
    SRResNetBlock,
)
from srblocks.blocks.common import Act, Conv, PixelShuffle
from srblocks.blocks.mga import (
    MaskGuided,
    MaskPredictor,
    crop_patches,
    error_mask_target,
    pad_to_multiple,
    paste_patches,
    resolve_k,
    select_topk,
)
from srblocks.registry import get_block

GOLDEN = "golden/rfdn_mga_x4_random"


@pytest.fixture(scope="module")
def golden_model() -> tuple[MaskGuided, torch.Tensor]:
    """Official RFDN-MGA x4 (random weights) with K = 64, loaded strictly from the golden state_dict."""
    weights = require_shared_file(f"{GOLDEN}.pth")
    model = rfdn_mga(4, k=64).eval()
    model.load_state_dict(torch.load(weights, map_location="cpu"), strict=True)
    x = torch.from_numpy(np.load(require_shared_file(f"{GOLDEN}.input.npy")))
    return model, x


def _golden(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(require_shared_file(f"{GOLDEN}.{name}.npy")))


# ------------------------------------------------------------------------------------------------ golden + params


def test_golden_rfdn_mga_x4(golden_model: tuple[MaskGuided, torch.Tensor]) -> None:
    model, x = golden_model
    with torch.no_grad():
        out = model(x)
    last = model.last
    assert last is not None and last.k == 64 and last.scale == 4
    # tolerance 1e-4 (issue); the official f32-vs-f64 noise floor is 3.2e-7
    assert (out - _golden("output")).abs().max().item() <= 1e-4
    assert (last.coarse - _golden("coarse")).abs().max().item() <= 1e-4
    assert last.mask is not None and last.mask.shape == (1, 1, 16, 16)
    assert (last.mask - _golden("mask")).abs().max().item() <= 1e-4
    assert last.idx is not None and torch.equal(last.idx, _golden("selected"))
    # paste-back overwrites: the output equals the coarse image outside the 64 selected 16x16 blocks
    changed = (out != last.coarse).reshape(1, 3, 16, 16, 16, 16).any(dim=(1, 3, 5))[0]
    selected = torch.zeros(16, 16, dtype=torch.bool)
    selected[last.idx[:, 1], last.idx[:, 2]] = True
    assert not changed[~selected].any()


@pytest.mark.parametrize(
    ("scale", "m_params", "d_params", "base_params", "refine_params"),
    [
        (2, 707_726, 684_224, 417_212, 267_012),
        (3, 721_256, 697_754, 423_977, 273_777),
        (4, 740_198, 716_696, 433_448, 283_248),
    ],
)
def test_rfdn_mga_param_counts(scale: int, m_params: int, d_params: int, base_params: int, refine_params: int) -> None:
    model = rfdn_mga(scale, k=50)
    assert n_params(model) == m_params  # RFDN-M (issue 7 / mga.md section 3)
    assert n_params(model.base) + n_params(model.refine) == d_params  # RFDN-D
    assert (n_params(model.base), n_params(model.refine), n_params(model.mask)) == (base_params, refine_params, 23_502)


def test_official_key_layout() -> None:
    keys = set(rfdn_mga(4, k=50).state_dict())
    for key in ("base.B4.esa.conv3_.weight", "base.c.0.weight", "base.upsampler.0.bias", "mask.spa_mask_1.2.weight",
                "mask.conv_kernel.bias", "refine.conv2.weight", "refine.c.0.bias"):
        assert key in keys
    assert len(keys) == 204  # the golden .pth has 204 tensors


# ------------------------------------------------------------------------------------------------ MP module


def test_mask_predictor_matches_formula() -> None:
    """The D-Conv as written in mga.md: M(p) = sum_j k_j(p) * m(p + o_j), offsets row-major over -2..2, zero pad."""
    torch.manual_seed(0)
    mp = MaskPredictor(8, patch_size=4).eval()
    assert n_params(MaskPredictor(50)) == 23_502 and n_params(MaskPredictor(12)) == 1_576
    x = torch.randn(2, 8, 12, 20)
    with torch.no_grad():
        got = mp(x)
        m = F.softmax(mp.spa_mask_1(x), dim=1)[:, 1:]
        m = m.reshape(2, 1, 3, 4, 5, 4).mean(dim=(3, 5))  # mean per 4x4 patch
        a, b = mp.conv_kernel.weight.view(25), mp.conv_kernel.bias
        want = torch.zeros(2, 1, 3, 5)
        mz = F.pad(m, (2, 2, 2, 2))
        for j, (dy, dx) in enumerate((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)):
            want += (a[j] * m + b[j]) * mz[:, :, 2 + dy : 5 + dy, 2 + dx : 7 + dx]
    assert got.shape == (2, 1, 3, 5)
    assert (got - want).abs().max().item() < 1e-6
    with pytest.raises(ValueError, match="multiple of patch_size"):
        mp(torch.randn(1, 8, 10, 12))
    with pytest.raises(ValueError, match="kernel_size"):
        MaskPredictor(8, kernel_size=4)


# ------------------------------------------------------------------------------------------------ top-K, gather/scatter


def test_resolve_k() -> None:
    assert resolve_k(0.1, 3600) == 360 and resolve_k(0.05, 3600) == 180 and resolve_k(0.25, 3600) == 900
    assert resolve_k(1.0, 3600) == 3600 and resolve_k(0.0, 3600) == 0
    assert resolve_k(64, 256) == 64 and resolve_k(1000, 256) == 256 and resolve_k(0, 5) == 0
    for bad in (-1, 1.5, -0.1, True, "3"):
        with pytest.raises(ValueError):
            resolve_k(bad, 10)  # type: ignore[arg-type]


def test_select_topk_matches_official() -> None:
    """Same rows as the official scatter(topk) -> nonzero, per image, raster order; K = 0 and K = all."""
    torch.manual_seed(1)
    mask = torch.randn(3, 1, 5, 7)
    for k in (0, 1, 9, 35):
        idx = select_topk(mask, k)
        ref = torch.zeros(3, 35)
        if k:
            ref.scatter_(1, mask.view(3, -1).topk(k, dim=1).indices, 1.0)
        assert torch.equal(idx, torch.nonzero(ref.view(3, 5, 7)))
    assert select_topk(mask, 0).shape == (0, 3)


def test_gather_scatter_round_trip() -> None:
    torch.manual_seed(2)
    img = torch.randn(2, 3, 12, 16)
    idx = select_topk(torch.randn(2, 1, 3, 4), 5)
    # halo 0: crop then paste into zeros restores exactly the selected blocks and nothing else
    back = paste_patches(torch.zeros_like(img), crop_patches(img, idx, 4, 0), idx)
    sel = torch.zeros(2, 1, 3, 4, dtype=torch.bool)
    sel[idx[:, 0], 0, idx[:, 1], idx[:, 2]] = True
    sel = sel.repeat_interleave(4, 2).repeat_interleave(4, 3).expand_as(img)
    assert torch.equal(back[sel], img[sel]) and not back[~sel].any()
    # all patches: identity
    all_idx = select_topk(torch.zeros(2, 1, 3, 4), 12)
    assert torch.equal(paste_patches(torch.zeros_like(img), crop_patches(img, all_idx, 4, 0), all_idx), img)
    # halo 1 = the official zero-padded 6x6 window, checked against explicit slicing
    crops = crop_patches(img, idx, 4, 1)
    padded = F.pad(img, (1, 1, 1, 1))
    assert crops.shape == (10, 3, 6, 6)
    for n, (b, r, c) in enumerate(idx.tolist()):
        assert torch.equal(crops[n], padded[b, :, 4 * r : 4 * r + 6, 4 * c : 4 * c + 6])
    # gradients reach both the image (outside the pasted blocks) and the patches
    img.requires_grad_(True)
    patches = torch.randn(10, 3, 4, 4, requires_grad=True)
    paste_patches(img, patches, idx).sum().backward()
    assert torch.equal(img.grad, (~sel).float()) and torch.equal(patches.grad, torch.ones_like(patches))


# ------------------------------------------------------------------------------------------------ mask_guided


@pytest.fixture(scope="module")
def small_model() -> MaskGuided:
    """A narrow RFDN-MGA x2 (nf = 8) with seeded random weights for shape/behaviour tests."""
    torch.manual_seed(3)
    return MaskGuided(in_channels=3, base=RFDNBase(8, 2, 2), refine=RFDNRefine(8, 2), dim=8, k=0.25).eval()


def test_k_zero_and_all(small_model: MaskGuided) -> None:
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        zero = small_model.run(x, k=0)
        assert zero.idx is not None and zero.idx.shape == (0, 3) and torch.equal(zero.sr, zero.coarse)
        every = small_model.run(x, k=1.0)
        as_count = small_model.run(x, k=10_000)
        all_mode = small_model.run(x, mode="all")
    assert every.k == as_count.k == all_mode.k == 24
    assert torch.equal(every.sr, as_count.sr) and torch.equal(every.sr, all_mode.sr)
    # every 8x8 HR block was replaced
    diff = (every.sr != every.coarse).reshape(1, 3, 4, 8, 6, 8).any(dim=(1, 3, 5))
    assert diff.all()


def test_odd_sizes_pad_and_crop_back(small_model: MaskGuided) -> None:
    for h, w in ((13, 18), (6, 5)):
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            res = small_model.run(x, k=0.5)
            coarse, feat = small_model.base(x)
            featp = pad_to_multiple(feat, 4)
            hr = small_model.refine(crop_patches(featp, res.idx, 4, 1))
        hp, wp = -(-h // 4), -(-w // 4)
        assert res.sr.shape == (1, 3, 2 * h, 2 * w) and res.mask.shape == (1, 1, hp, wp)
        assert res.k == int(np.floor(0.5 * hp * wp + 0.5))
        assert torch.equal(res.coarse, coarse)
        full = F.pad(coarse, (0, 2 * (4 * wp - w), 0, 2 * (4 * hp - h)))
        want = paste_patches(full, hr, res.idx)[..., : 2 * h, : 2 * w]
        assert torch.equal(res.sr, want)
    # the pitfalls of the official code (62x64; K > number of patches) just work
    with torch.no_grad():
        assert small_model.run(torch.rand(1, 3, 62, 64), k=50).sr.shape == (1, 3, 124, 128)
        assert small_model.run(torch.rand(1, 3, 24, 24), k=50).k == 36


def test_batch_equals_single(golden_model: tuple[MaskGuided, torch.Tensor]) -> None:
    model, x = golden_model
    # second image: the transposed crop (its 64th/65th mask margin is 2.4e-3, so selection is robust)
    x2 = torch.cat([x, x.transpose(-1, -2)], dim=0)
    with torch.no_grad():
        both = model.run(x2)
        one = [model.run(x2[i : i + 1]) for i in range(2)]
    for i in range(2):
        assert (both.sr[i] - one[i].sr[0]).abs().max().item() <= 1e-5
        rows = both.idx[both.idx[:, 0] == i]
        assert torch.equal(rows[:, 1:], one[i].idx[:, 1:]) and rows.shape[0] == 64


def test_dense_and_base_modes(small_model: MaskGuided) -> None:
    x = torch.rand(2, 3, 10, 14)
    with torch.no_grad():
        dense = small_model.run(x, mode="dense")
        base = small_model.run(x, mode="base")
        manual = small_model.refine(F.pad(small_model.base(x)[1], (1, 1, 1, 1)))
    assert dense.sr.shape == base.sr.shape == (2, 3, 20, 28)
    assert torch.equal(dense.sr, manual) and torch.equal(base.sr, base.coarse)
    assert dense.mask is None and base.idx is None


def test_refine_with_halo_output_and_extras() -> None:
    """A refine net that keeps the halo gets its HR halo cropped; extra base tensors are cropped alongside."""

    class Base(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return F.interpolate(x, scale_factor=2, mode="nearest"), x.repeat(1, 2, 1, 1), x

    class Refine(nn.Module):  # returns the (nearest) x2 upsampling of the LR window, halo included
        def forward(self, feat: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
            assert feat.shape[1:] == (6, 6, 6) and img.shape[1:] == (3, 6, 6)
            return F.interpolate(img + 1.0, scale_factor=2, mode="nearest")

    torch.manual_seed(4)
    model = MaskGuided(in_channels=3, base=Base(), refine=Refine(), dim=6, k=3)
    x = torch.rand(1, 3, 8, 12)
    sr = model(x)
    idx = model.last.idx
    assert idx.shape == (3, 3)
    for _, r, c in idx.tolist():  # refined block = (LR core + 1) upsampled: the halo was stripped correctly
        block = sr[0, :, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8]
        assert torch.equal(block, F.interpolate(x[:, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] + 1.0, scale_factor=2)[0])
    with pytest.raises(ValueError, match="dim=5"):
        model_bad = MaskGuided(in_channels=3, base=Base(), refine=Refine(), dim=5, k=3)
        model_bad(x)
    with pytest.raises(ValueError, match="k"):
        MaskGuided(in_channels=3, base=Base(), refine=Refine(), dim=6, k=-1)


def test_mask_predictor_training_step() -> None:
    """Paper step 3: base and refine frozen, only the MP module trained (L1 to the error target); the loss drops."""
    torch.manual_seed(5)
    model = MaskGuided(in_channels=3, base=RFDNBase(8, 1, 2), refine=RFDNRefine(8, 2), dim=8, k=0.25)
    for p in list(model.base.parameters()) + list(model.refine.parameters()):
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.mask.parameters(), lr=1e-2)
    x = torch.rand(2, 3, 16, 16)
    losses = []
    for _ in range(5):
        res = model.run(x, mode="all")
        target = error_mask_target(res.coarse, res.sr, patch_size=4, scale=2)
        assert target.shape == res.mask.shape == (2, 1, 4, 4) and 0 <= target.min() and target.max() <= 1
        loss = F.l1_loss(res.mask, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_registry_arguments() -> None:
    info = get_block("mask_guided")
    assert info.in_channels == "in_channels"
    args = info.args_model(in_channels=3, base=nn.Identity(), refine=nn.Identity(), dim=50, k=0.1)
    assert isinstance(args.k, float)
    assert isinstance(info.args_model(in_channels=3, base=nn.Identity(), refine=nn.Identity(), dim=50, k=64).k, int)
    assert info.schema()["properties"]["base"]["type"] == "object"
    for name in ("mask_predictor", "rfdb", "esa", "scpa", "pa", "pa_conv", "rcab", "residual_group",
                 "channel_attention", "srresnet_block", "conv_transpose", "adder_conv"):
        get_block(name).schema()


# ------------------------------------------------------------------------------------------------ backbone blocks


def test_rfdb_and_esa_variants() -> None:
    assert n_params(RFDB(50)) == 94_450 and n_params(RFDB(50, esa="mga")) == 94_450
    assert set(RFDB(50).state_dict()) == set(RFDB(50, esa="mga").state_dict())
    # E-RFDN (4 RFDBs, nf 50) with the original ESA: 433,448 params at x4, like the MGA base
    assert n_params(RFDNBase(50, 4, 4, esa="rfdn")) == 433_448
    torch.manual_seed(6)
    orig, mga = ESA(16, variant="rfdn"), ESA(16, variant="mga")
    mga.load_state_dict(orig.state_dict())
    x = torch.randn(1, 16, 24, 24)
    with torch.no_grad():
        assert not torch.allclose(orig(x), mga(x))  # different functions, same weights
        assert mga(torch.randn(3, 16, 6, 6)).shape == (3, 16, 6, 6)  # MGA ESA runs on 6x6 patches
    with pytest.raises(RuntimeError):
        orig(torch.randn(1, 16, 6, 6))  # the original max-pool cannot


def test_pan_blocks() -> None:
    assert n_params(SCPA(40)) == 14_420 and n_params(PA(24)) == 600
    assert set(SCPA(40).state_dict()) == {"conv1_a.weight", "conv1_b.weight", "k1.0.weight", "PAConv.k2.weight",
                                          "PAConv.k2.bias", "PAConv.k3.weight", "PAConv.k4.weight", "conv3.weight"}
    # official PAN x4 (nf 40, unf 24, 16 SCPA): 272,419 params
    parts = [Conv(3, 40, 3), *[SCPA(40) for _ in range(16)], Conv(40, 40, 3), Conv(40, 24, 3), PA(24), Conv(24, 24, 3),
             Conv(24, 24, 3), PA(24), Conv(24, 24, 3), Conv(24, 3, 3)]
    assert sum(n_params(p) for p in parts) == 272_419
    x = torch.randn(1, 40, 9, 11)
    assert SCPA(40)(x).shape == x.shape


def test_rcan_and_srresnet_blocks() -> None:
    ca = ChannelAttention(64, 16)
    x = torch.randn(2, 64, 5, 7)
    with torch.no_grad():
        want = x * torch.sigmoid(ca.conv_du[2](torch.relu(ca.conv_du[0](x.mean(dim=(2, 3), keepdim=True)))))
        assert (ca(x) - want).abs().max().item() < 1e-6
    assert "body.3.conv_du.0.weight" in RCAB(64).state_dict() and "body.20.weight" in ResidualGroup(64, 20).state_dict()
    # official RCAN x4 (10 groups x 20 RCABs, 64 ch, reduction 16): 15,592,379 params, which include the two
    # frozen MeanShift 1x1 convs (sub_mean / add_mean, 3*3 + 3 = 12 each)
    body = n_params(ResidualGroup(64, 20)) * 10 + n_params(Conv(64, 64, 3))
    head_tail = n_params(Conv(3, 64, 3)) + 2 * n_params(Conv(64, 256, 3)) + n_params(Conv(64, 3, 3))
    assert body + head_tail + 2 * 12 == 15_592_379
    # MSRResNet x4 (16 blocks, 64 ch): 1,517,571 params
    blocks = 16 * n_params(SRResNetBlock(64))
    assert blocks + n_params(Conv(3, 64, 3)) + 2 * n_params(Conv(64, 256, 3)) + n_params(Conv(64, 64, 3)) + n_params(
        Conv(64, 3, 3)
    ) == 1_517_571
    assert set(SRResNetBlock(64).state_dict()) == {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"}
    assert len(SRResNetBlock(64, batch_norm=True, act="prelu").state_dict()) == 4 + 2 * 5 + 1


def test_fsrcnn_mga_params_with_biased_convs() -> None:
    """FSRCNN-D / -M with ordinary biased convs: 41,694 / 43,270 (mga.md section 3), any scale."""
    for scale in (2, 3, 4):
        base = [Conv(3, 56, 5), Act(56, "prelu", per_channel=True), Conv(56, 12, 1), Act(12, "prelu", per_channel=True)]
        base += [m for _ in range(3) for m in (Conv(12, 12, 3), Act(12, "prelu", per_channel=True))]
        tail = [Conv(12, 56, 1), Act(56, "prelu", per_channel=True), ConvTranspose(56, 3, 9, stride=scale)]
        refine = [Conv(12, 12, 3), Act(12, "prelu", per_channel=True), Conv(12, 12, 3), Conv(12, 12, 3, padding=0)]
        d = sum(n_params(m) for m in base + tail + refine + tail)
        assert d == 41_694 and d + n_params(MaskPredictor(12)) == 43_270
        assert ConvTranspose(56, 3, 9, stride=scale)(torch.randn(1, 56, 5, 7)).shape == (1, 3, 5 * scale, 7 * scale)


def test_adder_conv() -> None:
    torch.manual_seed(7)
    layer = AdderConv(3, 4, 3, bias=True)
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    out = layer(x)
    xp = F.pad(x, (1, 1, 1, 1))
    want = torch.empty(2, 4, 5, 6)
    for i in range(5):
        for j in range(6):
            win = xp[:, None, :, i : i + 3, j : j + 3]  # (B, 1, C, 3, 3)
            want[:, :, i, j] = -(win - layer.adder[None]).abs().sum(dim=(2, 3, 4)) + layer.b
    assert (out - want).abs().max().item() < 1e-4
    out.sum().backward()
    assert x.grad is not None and layer.adder.grad is not None
    assert set(layer.state_dict()) == {"adder", "b"}
