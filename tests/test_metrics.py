"""PSNR / SSIM: the official RCAN MATLAB numbers, the bicubic baseline, and the protocol details."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srblocks.imresize import imresize
from srblocks.metrics import gaussian_window, psnr, rgb_to_y, ssim, to_uint8_image


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))  # grayscale -> 3 identical channels


# ---------------------------------------------------------------------------------------------------------------
# acceptance: the official RCAN outputs and MATLAB evaluation file (float Y)
# ---------------------------------------------------------------------------------------------------------------
RCAN_MEAN_PSNR = {  # official RCAN Set5 means (RCAN_TestCode, MATLAB), conventions.md section 1
    ("RCAN", 2): 38.274168, ("RCAN", 3): 34.742155, ("RCAN", 4): 32.633562, ("RCAN", 8): 27.307985,
    ("RCANplus", 2): 38.331898, ("RCANplus", 3): 34.852748, ("RCANplus", 4): 32.732010, ("RCANplus", 8): 27.466569,
}


def _matlab_results(path: Path) -> dict[str, tuple[float, float]]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"x\d+ \d+ (\S+): PSNR= (\S+) SSIM= (\S+)", line.strip())
        if m:
            out[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return out


@pytest.mark.parametrize("method", ["RCAN", "RCANplus"])
@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_rcan_fixture_reproduces_official_psnr_ssim(shared_dir: Path, method: str, scale: int) -> None:
    fixture = shared_dir / "data" / "fixtures" / "RCAN_Set5_SR"
    if not fixture.is_dir():
        pytest.skip(f"{fixture} missing")
    matlab = _matlab_results(fixture / "PSNR_SSIM_Results_BI_model.txt")
    psnrs = []
    for sr_path in sorted((fixture / method / f"x{scale}").glob("*.png")):
        hr = _rgb(shared_dir / "data" / "Set5" / "HR" / f"{sr_path.name.split('_')[0]}.png")  # uncropped HR
        sr = _rgb(sr_path)
        p, s = psnr(sr, hr, scale=scale), ssim(sr, hr, scale=scale)
        ref_p, ref_s = matlab[sr_path.name]
        # the MATLAB file prints 6 decimals: per-image agreement to print precision (+ float64 noise)
        assert abs(p - ref_p) < 1e-5, (sr_path.name, p, ref_p)
        assert abs(s - ref_s) < 1e-6, (sr_path.name, s, ref_s)
        psnrs.append(p)
    assert len(psnrs) == 5
    assert abs(float(np.mean(psnrs)) - RCAN_MEAN_PSNR[(method, scale)]) < 1e-4


# ---------------------------------------------------------------------------------------------------------------
# acceptance: MATLAB-bicubic upsampling baseline (float Y, shave = s)
# ---------------------------------------------------------------------------------------------------------------
BICUBIC_BASELINE = {"Set5": (33.67, 30.40, 28.43), "Set14": (30.32, 27.63, 26.09)}  # conventions.md section 2


@pytest.mark.parametrize("set_name", ["Set5", "Set14"])
def test_bicubic_upsampling_baseline(shared_dir: Path, set_name: str) -> None:
    root = shared_dir / "data" / set_name
    if not root.is_dir():
        pytest.skip(f"{root} missing")
    for scale, expected in zip((2, 3, 4), BICUBIC_BASELINE[set_name]):
        values = []
        for hr_path in sorted((root / "HR").glob("*.png")):
            lr = _rgb(root / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png")
            sr = imresize(lr, scale)  # uint8 MATLAB path
            values.append(psnr(sr, _rgb(hr_path), scale=scale))
        assert abs(float(np.mean(values)) - expected) <= 0.01, (set_name, scale, np.mean(values))


# ---------------------------------------------------------------------------------------------------------------
# protocol details
# ---------------------------------------------------------------------------------------------------------------
def test_rgb_to_y_bt601() -> None:
    colours = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    y = rgb_to_y(colours)
    expected = 16 + (65.481 * colours[..., 0] + 128.553 * colours[..., 1] + 24.966 * colours[..., 2]) / 255
    np.testing.assert_allclose(y, expected, atol=1e-12)
    np.testing.assert_allclose(y[0, :5], [16.0, 235.0, 81.481, 144.553, 40.966], atol=1e-12)
    yu = rgb_to_y(colours, rounding="uint8")
    np.testing.assert_array_equal(yu[0, :5], [16, 235, 81, 145, 41])
    with pytest.raises(ValueError, match="y_rounding"):
        rgb_to_y(colours, rounding="nearest")  # type: ignore[arg-type]


def _pair(seed: int = 0, size: tuple[int, int] = (40, 52)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    noise = rng.normal(0, 6, hr.shape)
    sr = np.clip(hr.astype(np.float64) + noise, 0, 255).round().astype(np.uint8)
    return sr, hr


def test_psnr_definition_crop_and_shave() -> None:
    sr, hr = _pair()
    scale = 4
    # manual: Y float, shave 4, 10 log10(255^2 / mse)
    d = rgb_to_y(sr)[4:-4, 4:-4] - rgb_to_y(hr)[4:-4, 4:-4]
    expected = 10 * math.log10(255**2 / np.mean(d**2))
    assert psnr(sr, hr, scale=scale) == pytest.approx(expected, abs=1e-12)
    # an uncropped HR (up to scale-1 extra pixels, bottom/right) is mod-cropped, top-left anchored
    hr_big = np.pad(hr, ((0, 3), (0, 2), (0, 0)), constant_values=7)
    assert psnr(sr, hr_big, scale=scale) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="does not match"):
        psnr(sr, np.pad(hr, ((0, 4), (0, 0), (0, 0))), scale=scale)
    with pytest.raises(ValueError, match="does not match"):
        psnr(sr, hr[:-1], scale=scale)
    # RGB option and explicit border
    rgb = sr[2:-2, 2:-2].astype(np.float64) - hr[2:-2, 2:-2]
    assert psnr(sr, hr, scale=scale, y_channel=False, crop_border=2) == pytest.approx(
        10 * math.log10(255**2 / np.mean(rgb**2)), abs=1e-12)
    # uint8-Y convention: Y rounded before the difference, so the value changes (slightly)
    du = rgb_to_y(sr, rounding="uint8")[4:-4, 4:-4] - rgb_to_y(hr, rounding="uint8")[4:-4, 4:-4]
    u8 = psnr(sr, hr, scale=scale, y_rounding="uint8")
    assert u8 == pytest.approx(10 * math.log10(255**2 / np.mean(du**2)), abs=1e-12)
    assert 0 < abs(u8 - expected) < 0.5
    assert psnr(hr, hr, scale=scale) == math.inf
    assert ssim(hr, hr, scale=scale) == pytest.approx(1.0, abs=1e-12)


def test_sr_is_quantised_and_tensor_inputs() -> None:
    sr, hr = _pair(1)
    ref = psnr(sr, hr, scale=2)
    t = torch.from_numpy(sr).permute(2, 0, 1).double() / 255
    # float inputs in [0, 1]: tiny perturbations vanish in the uint8 rounding; out-of-range values are clamped
    assert psnr(t + 0.4 / 255, hr, scale=2) == ref
    assert psnr((t[None] * 255).float(), hr, scale=2, value_range=255.0) == ref
    assert psnr(sr.astype(np.float32) / 255, torch.from_numpy(hr).permute(2, 0, 1), scale=2) == pytest.approx(ref, abs=1e-12)
    over = t.clone()
    over[0, 5, 5] = 3.0
    clamped = sr.copy()
    clamped[5, 5, 0] = 255
    assert psnr(over, hr, scale=2) == psnr(clamped, hr, scale=2)
    # grayscale HR expands to 3 identical channels: a gray SR against (H, W) HR == against the RGB-expanded HR
    gray = hr[:, :, 0]
    assert psnr(sr, gray, scale=2) == psnr(sr, np.repeat(gray[:, :, None], 3, 2), scale=2)
    with pytest.raises(ValueError, match="batch"):
        to_uint8_image(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="scale"):
        psnr(sr, hr, scale=0)


def _ssim_direct(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook SSIM with a full 2-D window and explicit valid-mode sliding windows (independent of the
    separable implementation)."""
    g = gaussian_window()
    w = np.outer(g, g)
    win_a = np.lib.stride_tricks.sliding_window_view(a, (11, 11))
    win_b = np.lib.stride_tricks.sliding_window_view(b, (11, 11))
    mu_a = np.einsum("ijkl,kl->ij", win_a, w)
    mu_b = np.einsum("ijkl,kl->ij", win_b, w)
    var_a = np.einsum("ijkl,kl->ij", win_a**2, w) - mu_a**2
    var_b = np.einsum("ijkl,kl->ij", win_b**2, w) - mu_b**2
    cov = np.einsum("ijkl,kl->ij", win_a * win_b, w) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(m.mean())


def test_ssim_matches_direct_2d_window() -> None:
    sr, hr = _pair(2, (37, 45))
    np.testing.assert_allclose(gaussian_window().sum(), 1.0, atol=1e-15)
    assert gaussian_window()[5] == gaussian_window().max()
    ya, yb = rgb_to_y(sr)[3:-3, 3:-3], rgb_to_y(hr)[3:-3, 3:-3]
    assert ssim(sr, hr, scale=3) == pytest.approx(_ssim_direct(ya, yb), abs=1e-12)
    rgb = np.mean([_ssim_direct(sr[3:-3, 3:-3, c].astype(float), hr[3:-3, 3:-3, c].astype(float)) for c in range(3)])
    assert ssim(sr, hr, scale=3, y_channel=False) == pytest.approx(rgb, abs=1e-12)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(sr[:16, :16], hr[:16, :16], scale=3)
