"""MATLAB-bicubic imresize: bit-exact EDSR benchmark LR files, and agreement with an independent dense reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srblocks.imresize import _pass_rows, bicubic_degrade, contributions, imresize, mod_crop


# --------------------------------------------------------------------------------------------------------------
# independent reference: a literal per-pixel transcription of MATLAB's imresize.m (contributions + symmetric
# boundary), assembled into dense matrices, so the vectorised implementation is checked against separate code.
# --------------------------------------------------------------------------------------------------------------
def _ref_cubic(x: float) -> float:
    ax = abs(x)
    if ax <= 1:
        return 1.5 * ax**3 - 2.5 * ax**2 + 1
    if ax <= 2:
        return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    return 0.0


def _ref_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    width = 4.0 / scale if scale < 1 else 4.0
    m = np.zeros((out_len, in_len))
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [left + k for k in range(math.ceil(width) + 2)]
        w = [scale * _ref_cubic(scale * (u - j)) if scale < 1 else _ref_cubic(u - j) for j in taps]
        total = sum(w)
        for j, wj in zip(taps, w):
            jj = j - 1  # 0-based, then mirror (symmetric: edge pixel repeated)
            period = 2 * in_len
            jj %= period
            if jj >= in_len:
                jj = period - 1 - jj
            m[x - 1, jj] += wj / total
    return m


def _ref_resize(img: np.ndarray, out_h: int, out_w: int, uint8: bool) -> np.ndarray:
    h, w = img.shape[:2]
    mh, mw = _ref_matrix(h, out_h, out_h / h), _ref_matrix(w, out_w, out_w / w)
    x = img.astype(np.float64)
    y = np.einsum("oh,hwc->owc", mh, x)  # height first
    if uint8:
        y = np.clip(np.floor(y + 0.5), 0, 255)
    y = np.einsum("pw,owc->opc", mw, y)
    if uint8:
        y = np.clip(np.floor(y + 0.5), 0, 255)
    return y


@pytest.mark.parametrize(
    ("in_hw", "out_hw"),
    [((24, 36), (12, 18)), ((30, 21), (10, 7)), ((32, 20), (8, 5)), ((9, 7), (18, 14)), ((7, 5), (28, 20)),
     ((10, 13), (7, 9))],
)
def test_float_path_matches_dense_reference(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    img = rng.random((*in_hw, 3))
    got = imresize(img, output_size=out_hw)
    ref = _ref_resize(img, *out_hw, uint8=False)
    assert got.dtype == np.float64 and got.shape == (*out_hw, 3)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_uint8_path_rounds_each_pass(scale: int) -> None:
    rng = np.random.default_rng(scale)
    img = rng.integers(0, 256, (12 * scale, 10 * scale, 3), dtype=np.uint8)
    down = imresize(img, 1 / scale)
    assert down.dtype == np.uint8 and down.shape == (12, 10, 3)
    ref = _ref_resize(img, 12, 10, uint8=True)
    # max |diff| 0: both round every pass; float sums may differ in the last ulp, never across a .5 boundary here
    assert np.array_equal(down.astype(np.float64), ref)
    up = imresize(down, scale)
    assert up.shape == img.shape
    assert np.array_equal(up.astype(np.float64), _ref_resize(down, *img.shape[:2], uint8=True))
    # the float (double) path keeps the fractions between the passes: rounding it at the end differs from the
    # uint8 path on some pixels (the BasicSR-vs-EDSR LR difference), by at most a few grey levels on this noise
    flt = np.clip(np.round(imresize(img.astype(np.float64), 1 / scale)), 0, 255)
    diff = np.abs(flt - down)
    assert 0 < np.count_nonzero(diff) and diff.max() <= 2


def test_constant_image_and_weights() -> None:
    for in_len, out_len in [(100, 50), (99, 33), (40, 160), (17, 5)]:
        w, idx = contributions(in_len, out_len, out_len / in_len)
        np.testing.assert_allclose(w.sum(1).numpy(), 1.0, atol=1e-14)
        assert int(idx.min()) >= 0 and int(idx.max()) < in_len
    img = np.full((30, 40, 3), 77, np.uint8)
    for s in (1 / 2, 1 / 3, 2, 3):
        assert (imresize(img, s) == 77).all()


def test_layouts_and_backends_agree() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (45, 33, 3), dtype=np.uint8)
    ref = imresize(img, 1 / 3)
    assert ref.shape == (15, 11, 3)
    chw = imresize(torch.from_numpy(img).permute(2, 0, 1), 1 / 3)
    assert chw.dtype == torch.uint8 and torch.equal(chw.permute(1, 2, 0), torch.from_numpy(ref))
    bchw = imresize(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, 1 / 3)
    assert bchw.dtype == torch.float32 and bchw.shape == (1, 3, 15, 11)
    gray = imresize(img[:, :, 0], 1 / 3)
    assert np.array_equal(gray, ref[:, :, 0])
    # the torch kernel (used for non-CPU tensors) performs the same float64 operations as the numpy one
    rows = rng.random((45, 99))
    np.testing.assert_array_equal(_pass_rows(torch.from_numpy(rows), 15, 1 / 3, True).numpy(), _pass_rows(rows, 15, 1 / 3, True))
    assert imresize(img, output_size=(45, 33)).tolist() == img.tolist()


def test_argument_errors() -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img, 0.5, output_size=(4, 4))
    with pytest.raises(ValueError, match="scale must be > 0"):
        imresize(img, -1.0)
    with pytest.raises(TypeError, match="unsupported dtype"):
        imresize(torch.zeros(4, 4, dtype=torch.int32), 0.5)
    with pytest.raises(ValueError, match="smaller than scale"):
        bicubic_degrade(np.zeros((3, 3, 3), np.uint8), 4)
    assert mod_crop(np.zeros((13, 10, 3)), 4).shape == (12, 8, 3)
    assert mod_crop(torch.zeros(1, 3, 13, 10), 3).shape == (1, 3, 12, 9)


def _load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_reproduces_edsr_benchmark_lr_bit_exactly(shared_dir: Path) -> None:
    """Acceptance: imresize(uint8 HR mod-cropped, 1/s) == every Set5 + Set14 LR_bicubic/X{2,3,4} file (57 files)."""
    checked = 0
    for set_name in ("Set5", "Set14"):
        hr_dir = shared_dir / "data" / set_name / "HR"
        if not hr_dir.is_dir():
            pytest.skip(f"{hr_dir} missing")
        for hr_path in sorted(hr_dir.glob("*.png")):
            hr = _load_rgb(hr_path)
            for s in (2, 3, 4):
                lr_file = _load_rgb(shared_dir / "data" / set_name / "LR_bicubic" / f"X{s}" / f"{hr_path.stem}x{s}.png")
                lr = bicubic_degrade(hr, s)
                assert lr.shape == lr_file.shape, (set_name, hr_path.stem, s)
                diff = np.abs(lr.astype(int) - lr_file.astype(int))
                assert diff.max() == 0, f"{set_name}/{hr_path.stem} x{s}: {np.count_nonzero(diff)} pixels differ"
                checked += 1
    assert checked == 57
