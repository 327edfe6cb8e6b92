"""Image reading (conversions and clear errors) and the SR datasets."""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srblocks.data import (
    ImagePair,
    ImageReadError,
    PairedImageDataset,
    TrainPatchDataset,
    detect_layout,
    discover_pairs,
    embedded_default,
    embedded_default_options,
    image_to_tensor,
    lr_crop_from_hr,
    read_image,
    tensor_to_image,
    write_image,
)
from srblocks.imresize import bicubic_degrade


# ---------------------------------------------------------------------------------------------------------------
# reading: conversions
# ---------------------------------------------------------------------------------------------------------------
def _png16(path: Path, arr: np.ndarray) -> Path:
    """Write a 16-bit PNG (gray (H, W) or RGB (H, W, 3) uint16) by hand: Pillow cannot write 48-bit RGB."""
    h, w = arr.shape[:2]
    colour_type = 2 if arr.ndim == 3 else 0
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)


def test_rgb_and_grayscale(tmp_path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    out = read_image(tmp_path / "rgb.png")
    assert out.dtype == np.uint8 and out.shape == (20, 24, 3) and np.array_equal(out, rgb)
    Image.fromarray(rgb[:, :, 1]).save(tmp_path / "gray.png")  # mode L
    g = read_image(tmp_path / "gray.png")
    assert g.shape == (20, 24, 3) and all(np.array_equal(g[:, :, c], rgb[:, :, 1]) for c in range(3))
    Image.fromarray(rgb[:, :, 0] > 127).save(tmp_path / "bw.png")  # mode 1
    bw = read_image(tmp_path / "bw.png")
    assert set(np.unique(bw)) <= {0, 255} and np.array_equal(bw[:, :, 0] == 255, rgb[:, :, 0] > 127)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert read_image(tmp_path / "cmyk.jpg").shape == (20, 24, 3)


def test_alpha_dropped_or_refused(tmp_path: Path, rgb: np.ndarray) -> None:
    alpha = np.full((20, 24, 1), 0, np.uint8)  # fully transparent: colours must still be the stored ones
    Image.fromarray(np.concatenate([rgb, alpha], axis=2)).save(tmp_path / "rgba.png")
    assert Image.open(tmp_path / "rgba.png").mode == "RGBA"
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)
    with pytest.raises(ImageReadError, match="alpha"):
        read_image(tmp_path / "rgba.png", alpha="error")
    Image.fromarray(np.stack([rgb[:, :, 2], alpha[:, :, 0]], axis=2)).save(tmp_path / "la.png")
    la = read_image(tmp_path / "la.png")
    assert np.array_equal(la, np.repeat(rgb[:, :, 2:3], 3, axis=2))
    pal = Image.fromarray(rgb).convert("P")
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    p = read_image(tmp_path / "pal.png")
    assert np.array_equal(p, np.asarray(Image.open(tmp_path / "pal.png").convert("RGBA"))[:, :, :3])


def test_16bit_keeps_high_byte_for_gray_and_colour(tmp_path: Path) -> None:
    vals = np.array([[0, 255, 256, 1000], [257 * 7, 40000, 65280, 65535]], dtype=np.uint16)
    gray = read_image(_png16(tmp_path / "g16.png", vals))
    assert Image.open(tmp_path / "g16.png").mode in ("I;16", "I;16B", "I")  # Pillow version dependent
    np.testing.assert_array_equal(gray[:, :, 0], vals >> 8)
    colour = read_image(_png16(tmp_path / "c16.png", np.stack([vals, vals[::-1], vals], axis=2)))
    np.testing.assert_array_equal(colour[:, :, 0], vals >> 8)  # Pillow's own 48-bit decode: same rule
    np.testing.assert_array_equal(colour[:, :, 1], vals[::-1] >> 8)
    # 8-bit content stored as 16 bit (v * 257) comes back exactly
    v8 = np.arange(256, dtype=np.uint16).reshape(16, 16)
    np.testing.assert_array_equal(read_image(_png16(tmp_path / "s.png", v8 * 257))[:, :, 0], v8)


def test_float_image_refused(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).random((8, 8)).astype(np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(ImageReadError, match="float"):
        read_image(tmp_path / "f.tif")


def test_corrupt_truncated_missing(tmp_path: Path, rgb: np.ndarray) -> None:
    big = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "ok.png")
    Image.fromarray(big).save(tmp_path / "ok.jpg", quality=90)
    data_png, data_jpg = (tmp_path / "ok.png").read_bytes(), (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data_png[: len(data_png) // 2])
    (tmp_path / "trunc.jpg").write_bytes(data_jpg[: len(data_jpg) // 2])
    (tmp_path / "garbage.png").write_bytes(np.random.default_rng(2).bytes(500))
    (tmp_path / "empty.png").write_bytes(b"")
    bad_idat = bytearray(data_png)
    i = bad_idat.find(b"IDAT") + 20
    bad_idat[i : i + 50] = b"\x00" * 50  # corrupt compressed data, CRC now wrong
    (tmp_path / "badcrc.png").write_bytes(bytes(bad_idat))
    cases = {
        "trunc.png": "truncated",
        "trunc.jpg": "truncated",
        "garbage.png": "not a recognised image",
        "empty.png": "empty",
        "missing.png": "not found",
        "badcrc.png": "corrupt",
    }
    for name, reason in cases.items():
        with pytest.raises(ImageReadError, match=reason) as info:
            read_image(tmp_path / name)
        err = info.value
        assert err.path == tmp_path / name and name in str(err) and isinstance(err, ValueError)
        assert pickle.loads(pickle.dumps(err)).reason == err.reason
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)


def test_write_and_tensor_conversions(tmp_path: Path, rgb: np.ndarray) -> None:
    t = image_to_tensor(rgb)
    assert t.shape == (3, 20, 24) and t.dtype == torch.float32
    # true division: bit-identical to the official pipelines' np.float32(img / 255.)
    assert torch.equal(t, torch.from_numpy((rgb / 255.0).astype(np.float32)).permute(2, 0, 1))
    assert torch.equal(image_to_tensor(rgb, value_range=255.0), torch.from_numpy(rgb).permute(2, 0, 1).float())
    assert np.array_equal(tensor_to_image(t), rgb)
    path = write_image(tmp_path / "sub" / "out.png", t[None])
    assert np.array_equal(read_image(path), rgb)


# ---------------------------------------------------------------------------------------------------------------
# layouts and evaluation pairs
# ---------------------------------------------------------------------------------------------------------------
def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    hrs = {n: rng.integers(0, 256, (26, 31, 3), dtype=np.uint8) for n in ("a", "b")}
    for n, hr in hrs.items():
        _save(tmp_path / "basic" / "GTmod12" / f"{n}.png", hr[:24, :30])
        _save(tmp_path / "basic" / "LRbicx2" / f"{n}.png", bicubic_degrade(hr[:24, :30], 2))
        _save(tmp_path / "edsr" / "HR" / f"{n}.png", hr)
        _save(tmp_path / "edsr" / "LR_bicubic" / "X2" / f"{n}x2.png", bicubic_degrade(hr, 2))
        _save(tmp_path / "plain" / f"{n}.png", hr)
    assert detect_layout(tmp_path / "edsr", 2) == "edsr"
    assert detect_layout(tmp_path / "edsr" / "HR", 2) == "edsr"  # pointing at HR/ finds the LR beside it
    assert detect_layout(tmp_path / "edsr", 3) == "edsr-hr-only"
    assert detect_layout(tmp_path / "basic", 2) == "basicsr"
    assert detect_layout(tmp_path / "basic", 4) == "basicsr-hr-only"
    assert detect_layout(tmp_path / "plain", 2) == "hr-only"
    pairs = discover_pairs(tmp_path / "edsr", 2)
    assert [p.name for p in pairs] == ["a", "b"] and pairs[1].lr == tmp_path / "edsr" / "LR_bicubic" / "X2" / "bx2.png"
    assert all(p.lr_generated for p in discover_pairs(tmp_path / "plain", 2))
    with pytest.raises(FileNotFoundError, match="require_lr"):
        discover_pairs(tmp_path / "plain", 2, require_lr=True)
    # every layout yields the samples of its HR (cropped to LR x 2); GTmod12 holds HR already cropped to mod 12
    for root, (h, w) in (("edsr", (26, 30)), ("basic", (24, 30)), ("plain", (26, 30))):
        ds = PairedImageDataset(tmp_path / root, 2)
        assert ds.names == ["a", "b"]
        for sample in ds:
            assert sample.hr.shape == (h, w, 3) and np.array_equal(sample.hr, hrs[sample.name][:h, :w])
            assert np.array_equal(sample.lr, bicubic_degrade(hrs[sample.name][:h, :w], 2))
    # missing LR file, empty folder, mismatched sizes
    (tmp_path / "edsr" / "LR_bicubic" / "X2" / "bx2.png").unlink()
    with pytest.raises(FileNotFoundError, match="bx2"):
        discover_pairs(tmp_path / "edsr", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        discover_pairs(tmp_path / "empty", 2)
    with pytest.raises(ValueError, match="does not match"):
        PairedImageDataset([ImagePair("x", hrs["a"], bicubic_degrade(hrs["a"], 3))], 2)[0]


def test_benchmark_sets(shared_dir: Path) -> None:
    root = shared_dir / "data" / "Set14"
    if not root.is_dir():
        pytest.skip(f"{root} missing")
    ds = PairedImageDataset(root, 3)
    assert len(ds) == 14 and detect_layout(root, 3) == "edsr"
    bridge = ds[ds.names.index("bridge")]  # the grayscale HR: 3 identical channels
    assert bridge.hr.shape == (510, 510, 3) and bridge.lr.shape == (170, 170, 3)
    assert np.array_equal(bridge.hr[:, :, 0], bridge.hr[:, :, 2])
    # an HR-only source reproduces the benchmark LR file
    hr_only = PairedImageDataset([ImagePair("bridge", root / "HR" / "bridge.png")], 3)[0]
    assert hr_only.lr_generated and np.array_equal(hr_only.lr, bridge.lr) and np.array_equal(hr_only.hr, bridge.hr)


# ---------------------------------------------------------------------------------------------------------------
# training patches
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lr_crop_from_hr_is_exact(scale: int) -> None:
    rng = np.random.default_rng(scale)
    hr = rng.integers(0, 256, (23 * scale + scale - 1, 19 * scale, 3), dtype=np.uint8)
    full = bicubic_degrade(hr, scale)
    for top, left, h, w in [(0, 0, 5, 7), (3, 4, 8, 8), (23 - 6, 19 - 5, 6, 5), (1, 17, 22, 2), (0, 0, 23, 19)]:
        assert np.array_equal(lr_crop_from_hr(hr, scale, top, left, h, w), full[top : top + h, left : left + w])


def _hr_images(n: int = 3, size: tuple[int, int] = (40, 52)) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    return [(f"img{i}", rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for i in range(n)]


def test_train_patches_deterministic_and_aligned() -> None:
    images = _hr_images()
    ds = TrainPatchDataset(images, 2, 8, length=12, seed=7, augment=False)
    assert len(ds) == 12
    lr, hr = ds[4]
    assert lr.shape == (3, 8, 8) and hr.shape == (3, 16, 16) and lr.dtype == torch.float32
    assert 0.0 <= float(lr.min()) and float(hr.max()) <= 1.0
    # same seed -> same samples in any access order; other seed / epoch -> different crops
    again = TrainPatchDataset(images, 2, 8, length=12, seed=7, augment=False)
    for i in reversed(range(12)):
        assert all(torch.equal(a, b) for a, b in zip(again[i], ds[i]))
    assert not torch.equal(TrainPatchDataset(images, 2, 8, length=12, seed=8, augment=False)[4][1], hr)
    again.set_epoch(1)
    assert not all(torch.equal(again[i][1], ds[i][1]) for i in range(12))
    # alignment: the LR patch is the matching region of the full-image LR of its HR image (image 4 % 3 = 1)
    hr_img = (hr.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    full_hr = images[1][1]
    full_lr = bicubic_degrade(full_hr, 2)
    positions = [(t, l) for t in range(0, 40 - 15, 2) for l in range(0, 52 - 15, 2)
                 if np.array_equal(full_hr[t : t + 16, l : l + 16], hr_img)]
    assert len(positions) == 1
    t, l = positions[0]
    assert torch.equal(lr, image_to_tensor(np.ascontiguousarray(full_lr[t // 2 : t // 2 + 8, l // 2 : l // 2 + 8])))


def test_train_patches_augmentation_and_files(tmp_path: Path) -> None:
    # image exactly one patch large: the crop is fixed, so each sample is one of the 8 dihedral transforms
    (name, hr), = _hr_images(1, (24, 24))
    lr = bicubic_degrade(hr, 3)
    _save(tmp_path / "set" / "HR" / "p.png", hr)
    _save(tmp_path / "set" / "LR_bicubic" / "X3" / "px3.png", lr)
    ds = TrainPatchDataset(tmp_path / "set", 3, 8, length=64, seed=0, value_range=255.0)

    def transforms(a: np.ndarray) -> list[np.ndarray]:
        outs = []
        for k in range(4):
            r = np.rot90(a, k)
            outs += [r, r[:, ::-1]]
        return outs

    seen = set()
    for i in range(64):
        lr_t, hr_t = ds[i]
        lr_np = lr_t.permute(1, 2, 0).numpy().astype(np.uint8)
        hr_np = hr_t.permute(1, 2, 0).numpy().astype(np.uint8)
        hr_match = [k for k, t in enumerate(transforms(hr)) if np.array_equal(t, hr_np)]
        lr_match = [k for k, t in enumerate(transforms(lr)) if np.array_equal(t, lr_np)]
        assert hr_match and set(hr_match) & set(lr_match)  # LR and HR got the same transform
        seen.add(hr_match[0])
    assert seen == set(range(8))


def test_train_patch_size_checks() -> None:
    images = _hr_images(2, (40, 52)) + [("tiny", np.zeros((10, 10, 3), np.uint8))]
    with pytest.warns(UserWarning, match="tiny"):
        ds = TrainPatchDataset(images, 2, 16)
    assert len(ds.pairs) == 2
    with pytest.raises(ValueError, match="no image is large enough"), pytest.warns(UserWarning, match="tiny"):
        TrainPatchDataset(images[2:], 2, 16)
    with pytest.raises(ValueError, match="lr_patch_size"):
        TrainPatchDataset(images, 2, 0)
    with pytest.raises(IndexError):
        ds[len(ds)]


# ---------------------------------------------------------------------------------------------------------------
# embedded default images
# ---------------------------------------------------------------------------------------------------------------
def test_embedded_default() -> None:
    options = embedded_default_options()
    if not options:
        pytest.skip("neither matplotlib nor scikit-image is installed")
    images = embedded_default()
    assert images and all(img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 for _, img in images)
    if "matplotlib" in options:
        (name, img), = embedded_default("matplotlib")
        assert name == "grace_hopper" and img.shape == (600, 512, 3)
    with pytest.raises(ValueError, match="source"):
        embedded_default("internet")
    ds = PairedImageDataset(images, 4)
    sample = ds[0]
    assert sample.lr_generated and sample.hr.shape[0] == sample.lr.shape[0] * 4
