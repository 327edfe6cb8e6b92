"""Memory and files on real workloads (issue 11, section 3).

* Atomic writes: every output (images, exported specs, search reports, checkpoints, weights) goes through
  :mod:`srblocks.fileio`; an interrupted write leaves no partial target and no temporary file, and an existing
  target keeps its content until the final rename. ``kill -9`` during ``srblocks upscale`` leaves no truncated PNG.
* Bounded upscaling memory: tiles are rounded to uint8 straight into row bands (no full-size float SR tensor, no
  full-size float64 copies in :mod:`srblocks.metrics`), PNGs are streamed band by band, and results that cannot fit
  are refused before allocating, naming the image and the limit. The pixels equal the previous float path exactly.
* One bad image in a batch: reported with its file name and reason, the others processed, non-zero exit status;
  images below a model's minimum size get a message stating the minimum, derived on the meta device.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import srblocks
from conftest import BoxChain, REPO_ROOT, TINY_SPEC, synthetic_images
from srblocks.cli import main
from srblocks.data import read_image, tensor_to_image
from srblocks.data.io import PngRowWriter, write_image, write_png_rows
from srblocks.evaluate import (
    ImageTooLargeError,
    InputTooSmallError,
    TiledUpscale,
    evaluate,
    minimum_input_size,
    upscale_image,
    upscale_tensor,
)
from srblocks.fileio import atomic_path, atomic_write, write_text_atomic



class Boom(RuntimeError):
    """The interruption the tests inject."""


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------------ atomic writes


@pytest.mark.parametrize("kind", ["file", "path"])
def test_an_interrupted_write_leaves_no_partial_target_and_no_temporary_file(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "out.png"
    with pytest.raises(Boom):
        if kind == "file":
            with atomic_write(target) as f:
                f.write(b"\x89PNG half of an image")
                raise Boom
        else:
            with atomic_path(target) as tmp:
                assert tmp.name == target.name and tmp.parent != target.parent
                tmp.write_bytes(b"\x89PNG half of an image")
                raise Boom
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("kind", ["file", "path"])
def test_an_existing_target_is_untouched_until_the_replace(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "best.yaml"
    target.write_text("old: 1\n")
    os.chmod(target, 0o640)
    with pytest.raises(Boom):
        with atomic_write(target, "w") as f:
            f.write("new: ")
            raise Boom
    assert target.read_text() == "old: 1\n" and _listing(tmp_path) == ["best.yaml"]
    if kind == "file":
        with atomic_write(target, "w") as f:
            f.write("new: 2\n")
            f.flush()
            assert target.read_text() == "old: 1\n"  # still the old content while writing
    else:
        with atomic_path(target) as tmp:
            tmp.write_text("new: 2\n")
            assert target.read_text() == "old: 1\n"
    assert target.read_text() == "new: 2\n" and _listing(tmp_path) == ["best.yaml"]
    assert os.stat(target).st_mode & 0o777 == 0o640  # the replaced file's permissions are kept


def test_new_files_get_the_usual_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
        (tmp_path / "b.json").write_text("{}")
    finally:
        os.umask(umask)
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == os.stat(tmp_path / "b.json").st_mode & 0o777 == 0o644


def test_weights_and_checkpoints_are_written_atomically(tmp_path: Path, monkeypatch) -> None:
    from srblocks.train import _atomic_save

    model = srblocks.build_model(TINY_SPEC)
    for name in ("w.safetensors", "w.pth"):
        path = srblocks.save_weights(model, tmp_path / name)
        srblocks.load_weights(srblocks.build_model(TINY_SPEC), path)  # a complete, loadable file
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def interrupted_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 a few bytes of a checkpoint")
        raise Boom

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(Boom):
        srblocks.save_weights(model, tmp_path / "w.pth")
    with pytest.raises(Boom):
        _atomic_save({"iteration": 3}, tmp_path / "checkpoint.pth")
    import safetensors.torch

    def interrupted_serialize(*args, **kwargs):
        raise Boom

    monkeypatch.setattr(safetensors.torch, "save", interrupted_serialize)
    with pytest.raises(Boom):
        srblocks.save_weights(model, tmp_path / "w.safetensors")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # untouched, no checkpoint, no temp


def test_search_reports_are_written_atomically(tmp_path: Path) -> None:
    from srblocks.search.report import _write_csv

    target = tmp_path / "trials.csv"
    _write_csv([{"number": 0, "value": 1.5}], target)
    before = target.read_bytes()

    class Unprintable:
        def __str__(self) -> str:
            raise Boom

    with pytest.raises(Boom):
        _write_csv([{"number": 1, "value": 2.5}] * 1000 + [{"number": 2, "value": Unprintable()}], target)
    assert target.read_bytes() == before and _listing(tmp_path) == ["trials.csv"]
    assert list(csv.DictReader(target.open())) == [{"number": "0", "value": "1.5"}]


def test_images_are_written_atomically(tmp_path: Path) -> None:
    image = synthetic_images(1, (20, 24))[0][1]
    write_image(tmp_path / "a.png", image)
    before = (tmp_path / "a.png").read_bytes()

    def bands():
        yield image[:10]
        raise Boom

    with pytest.raises(Boom):
        write_png_rows(tmp_path / "a.png", 20, 24, bands())
    with pytest.raises(Boom):
        write_png_rows(tmp_path / "b.png", 20, 24, bands())
    with pytest.raises(ValueError, match="only 10 of the PNG's 20 rows"):
        write_png_rows(tmp_path / "c.png", 20, 24, [image[:10]])
    with pytest.raises(ValueError, match="not an image format"):
        write_image(tmp_path / "d.xyz", image)
    assert (tmp_path / "a.png").read_bytes() == before and _listing(tmp_path) == ["a.png"]


def test_kill_9_during_upscale_leaves_no_truncated_image_and_the_rerun_writes_it(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY_SPEC))
    weights = srblocks.save_weights(srblocks.build_model(spec), tmp_path / "tiny.safetensors")
    src = tmp_path / "big.png"
    Image.fromarray(synthetic_images(1, (1200, 1200))[0][1]).save(src)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "srblocks", "upscale", str(spec), "--weights", str(weights), str(src),
               "-o", str(out), "--tile", "48", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and any(p.name.endswith(".tmp") and p.stat().st_size > 0 for p in out.iterdir()):
                break  # the PNG is being written
            time.sleep(0.005)
        assert proc.poll() is None, "upscale finished before it could be interrupted: use a larger image"
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "big.png").exists()  # no truncated output under the final name
    assert all(p.name.startswith(".big.png.") for p in out.iterdir())  # at most a hidden temporary file
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert read_image(out / "big.png").shape == (2400, 2400, 3)


# ------------------------------------------------------------------------------------------------ bounded memory


def _models() -> dict[str, tuple[torch.nn.Module, float]]:
    torch.manual_seed(0)
    return {
        "tiny": (srblocks.build_model(TINY_SPEC), 1.0),
        "fmen_s": (srblocks.build_model("fmen_s", scale=2, deploy=True), 255.0),
        "safmn": (srblocks.build_model("safmn", scale=2), 1.0),
        "box": (BoxChain(depth=4, gain=1.3, offset=-0.1), 1.0),
    }


def _float_path(model, image, vr, **kw) -> np.ndarray:
    """The previous inference path: a full-size float SR tensor, then one whole-image conversion to uint8."""
    from srblocks.data import image_to_tensor

    x = image_to_tensor(image, value_range=vr)[None].contiguous()
    return tensor_to_image(upscale_tensor(model, x, **kw).float(), value_range=vr)


@pytest.mark.parametrize("name", ["tiny", "fmen_s", "safmn", "box"])
def test_the_uint8_band_path_equals_the_float_path_exactly(name: str) -> None:
    model, vr = _models()[name]
    image = synthetic_images(1, (37, 53), seed=3)[0][1]
    for tile, overlap in [(None, 0), (16, 4), (16, 0), (20, 32), (1000, 8), (13, 3)]:
        kw = dict(tile=tile, tile_overlap=overlap)
        expected = _float_path(model, image, vr, **kw)
        job = TiledUpscale(model, image, input_range=vr if name == "box" else None, **kw)
        got = job.to_array()
        assert got.dtype == np.uint8 and np.array_equal(got, expected), (name, tile, overlap)
        bands = list(job.bands())
        assert np.array_equal(np.concatenate(bands), expected)
        if tile == 16:
            assert len(bands) == 3 and max(b.shape[0] for b in bands) <= 2 * 13  # one row of tiles per band
    # self-ensemble: untiled, and tiled on a mirror-symmetric grid (48 = 3 x 16, 64 = 4 x 16), exactly
    image = synthetic_images(1, (48, 64), seed=4)[0][1]
    for tile in (None, 16):
        kw = dict(tile=tile, tile_overlap=4, self_ensemble=True)
        assert np.array_equal(TiledUpscale(model, image, input_range=vr if name == "box" else None, **kw).to_array(),
                              _float_path(model, image, vr, **kw)), (name, tile)


def test_evaluate_scores_are_unchanged_by_the_band_path() -> None:
    from srblocks.data import PairedImageDataset
    from srblocks.metrics import psnr, ssim

    model, _ = _models()["tiny"]
    images = synthetic_images(2, (48, 60))
    for tile in (None, 12):
        result = evaluate(model, images, tile=tile, tile_overlap=4)
        for sample, got in zip(PairedImageDataset(images, 2), result.images):
            sr = _float_path(model, sample.lr, 1.0, tile=tile, tile_overlap=4)
            assert got.psnr == psnr(sr, sample.hr, scale=2) and got.ssim == ssim(sr, sample.hr, scale=2)


def test_uint8_conversion_needs_no_full_size_float64_copy() -> None:
    from srblocks.metrics import rgb_to_y, to_uint8_image

    sr = torch.rand(1, 3, 1500, 2000) * 1.2 - 0.1  # 36 MB of float32; a float64 copy would be 72 MB
    tracemalloc.start()
    try:
        out = to_uint8_image(sr)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        y = rgb_to_y(out)
        _, peak_y = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < out.nbytes + 40e6, peak  # the 9 MB output and a few 8 MB bands (whole-image: about 150 MB)
    assert peak_y < y.nbytes + 40e6, peak_y  # the 24 MB Y and bands (whole-image: a 72 MB (H, W, 3) copy more)
    arr = sr[0].permute(1, 2, 0).numpy()
    assert np.array_equal(out, np.round(np.clip(arr.astype(np.float64), 0, 1) * 255.0).astype(np.uint8))
    assert np.array_equal(y, (out.astype(np.float64) / 255.0) @ np.array([65.481, 128.553, 24.966]) + 16.0)


def test_streamed_png_decodes_to_the_same_pixels(tmp_path: Path, monkeypatch) -> None:
    import srblocks.data.io as io

    rng = np.random.default_rng(0)
    smooth = synthetic_images(1, (90, 70))[0][1]
    for h, w, image in [(1, 1, None), (1, 9, None), (9, 1, None), (31, 17, None), (90, 70, smooth)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if image is None else image
        for block in (1, 100, 1 << 20):  # filter blocks of one row, a few rows, whole bands
            monkeypatch.setattr(io, "_PNG_BLOCK_BYTES", block)
            path = write_png_rows(tmp_path / f"{h}x{w}.png", h, w, [image[r : r + 4] for r in range(0, h, 4)])
            with Image.open(path) as im:
                assert im.mode == "RGB" and im.size == (w, h)
                assert np.array_equal(np.asarray(im), image), (h, w, block)
    with pytest.raises(ValueError, match="expected uint8 rows"):
        PngRowWriter(open(os.devnull, "wb"), 4, 4).write(np.zeros((2, 5, 3), np.uint8))


def test_results_that_cannot_fit_are_refused_before_allocating(monkeypatch) -> None:
    import importlib

    ev = importlib.import_module("srblocks.evaluate")
    model, _ = _models()["tiny"]
    image = synthetic_images(1, (40, 50))[0][1]
    job = TiledUpscale(model, image, tile=16, name="photo.png")
    monkeypatch.setattr(ev, "available_memory", lambda device=None: 10_000)
    with pytest.raises(ImageTooLargeError, match=r"photo.png: the 80x100 uint8 SR image needs 0.0 MiB, more than "
                                                 r"the 0.0 MiB of memory available: write it in row bands"):
        job.to_array()
    assert sum(b.nbytes for b in job.bands()) == 80 * 100 * 3  # the bands are still computed, one at a time
    monkeypatch.setattr(ev, "_CHECKED_PIXELS", 16 * 16)  # "large" image without tiling: checked with a meta estimate
    monkeypatch.setattr(ev, "AUTO_TILE", 16)
    with pytest.raises(ImageTooLargeError, match=r"photo.png: running the model on the whole 40x50 image \(no "
                                                 r"tiling\) .* needs .* available: tile it"):
        TiledUpscale(model, image, tile=None, name="photo.png")
    TiledUpscale(model, image, tile="auto", name="photo.png")  # auto tiles it instead


def test_upscale_streams_png_and_refuses_formats_that_cannot_fit(tmp_path: Path, capsys, monkeypatch) -> None:
    import importlib

    ev = importlib.import_module("srblocks.evaluate")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY_SPEC))
    model = srblocks.build_model(spec)
    weights = srblocks.save_weights(model, tmp_path / "tiny.safetensors")
    folder = tmp_path / "in"
    folder.mkdir()
    image = synthetic_images(1, (40, 52))[0][1]
    Image.fromarray(image).save(folder / "a.png")
    Image.fromarray(image).save(folder / "b.jpg", quality=95)
    limit = 40 * 52 * 4 * 3 + 5000  # one uint8 output, not Pillow's 4-byte copy on top
    monkeypatch.setattr(ev, "available_memory", lambda device=None: limit)
    code = main(["upscale", str(spec), "--weights", str(weights), str(folder), "-o", str(tmp_path / "out"),
                 "--tile", "16"])
    err = capsys.readouterr().err
    assert code == 1 and "1 of 2 image(s) written" in err
    assert "b.jpg: writing the 80x104 output as JPEG" in err and "MiB of memory available: PNG outputs" in err
    assert "Traceback" not in err
    assert _listing(tmp_path / "out") == ["a.png"]
    monkeypatch.undo()
    assert np.array_equal(read_image(tmp_path / "out" / "a.png"), upscale_image(model, image, tile=16))
    code = main(["upscale", str(spec), "--weights", str(weights), str(folder), "-o", str(tmp_path / "o2"),
                 "--ext", "xyz"])
    assert code == 2 and "--ext xyz" in capsys.readouterr().err  # refused before any work


# ------------------------------------------------------------------------------------------------ bad images


def test_minimum_input_sizes_are_derived_on_the_meta_device() -> None:
    from srblocks.evaluate import _MIN_SIZES

    safmn = srblocks.build_model("safmn", scale=4)
    rfdn = srblocks.build_model("rfdn", scale=4)
    assert minimum_input_size(safmn) == (8, 8)  # adaptive max-pooling to H/8 x W/8
    assert minimum_input_size(rfdn) == (15, 15)  # ESA: stride-2 3x3 conv, then 7x7 max-pool with stride 3
    assert minimum_input_size(srblocks.build_model("fsrcnn", scale=4)) == (1, 1)
    assert minimum_input_size(BoxChain(depth=4, gain=1.3, offset=-0.1)) == (1, 1)
    assert _MIN_SIZES[safmn] == (8, 8)  # cached per model
    with torch.no_grad():  # the derived minimum is the real one
        for model, (h, w) in ((safmn, (8, 8)), (rfdn, (15, 15))):
            assert model(torch.rand(1, 3, h, w)).shape[-2:] == (4 * h, 4 * w)
            for small in ((h - 1, w + 5), (h + 5, w - 1)):
                with pytest.raises(Exception):
                    model(torch.rand(1, 3, *small))


def test_images_and_tiles_below_the_minimum_are_refused_stating_it() -> None:
    safmn = srblocks.build_model("safmn", scale=4)
    with pytest.raises(InputTooSmallError, match=r"dot.png: the image is 1x1 pixels, smaller than the 8x8 LR pixels "
                                                 r"\(height x width\) the model 'safmn' needs"):
        upscale_image(safmn, np.zeros((1, 1, 3), np.uint8), name="dot.png")
    with pytest.raises(InputTooSmallError, match=r"strip.png: the image is 40x5 pixels, smaller than the 8x8"):
        upscale_image(safmn, np.zeros((40, 5, 3), np.uint8), name="strip.png")
    with pytest.raises(InputTooSmallError, match=r"a 4x4 tile is smaller than the 8x8 .* use a larger tile"):
        upscale_image(safmn, np.zeros((16, 16, 3), np.uint8), tile=4, tile_overlap=0)
    rfdn = srblocks.build_model("rfdn", scale=4)
    with pytest.raises(InputTooSmallError, match=r"the 14x30 image: the image is 14x30 pixels, smaller than the "
                                                 r"15x15 LR pixels"):
        upscale_image(rfdn, np.zeros((14, 30, 3), np.uint8))
    assert upscale_image(rfdn, np.zeros((15, 15, 3), np.uint8)).shape == (60, 60, 3)


@pytest.fixture()
def safmn_files(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    spec = REPO_ROOT / "arch_specs" / "safmn.yaml"
    weights = srblocks.save_weights(srblocks.build_model(spec, scale=4), tmp_path / "safmn_x4.safetensors")
    return spec, weights


def test_upscale_reports_each_bad_image_and_processes_the_others(tmp_path: Path, capsys, safmn_files) -> None:
    spec, weights = safmn_files
    folder = tmp_path / "in"
    folder.mkdir()
    images = dict(synthetic_images(2, (20, 24)))
    for name, image in images.items():
        Image.fromarray(image).save(folder / f"{name}.png")
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(folder / "dot.png")  # the 1x1 PNG of the issue
    (folder / "junk.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = main(["upscale", str(spec), "--weights", str(weights), "--scale", "4", str(folder), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{folder / 'dot.png'}: the image is 1x1 pixels, smaller than the 8x8 LR pixels" in err
    assert "junk.png" in err and "not a recognised image" in err
    assert "2 of 4 image(s) written" in err and "2 failed" in err and "Traceback" not in err
    assert _listing(out) == ["img0.png", "img1.png"]
    model = srblocks.load_weights(srblocks.build_model(spec, scale=4), weights)
    assert np.array_equal(read_image(out / "img1.png"), upscale_image(model, images["img1"]))


def test_eval_reports_each_bad_image_scores_the_others_and_fails(tmp_path: Path, capsys, safmn_files) -> None:
    import json

    spec, weights = safmn_files
    data = tmp_path / "set"
    data.mkdir()
    for name, image in synthetic_images(2, (48, 56)):
        Image.fromarray(image).save(data / f"{name}.png")
    Image.fromarray(synthetic_images(1, (20, 20), seed=5)[0][1]).save(data / "small.png")  # LR 5x5 < 8x8
    (data / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    argv = ["eval", str(spec), "--weights", str(weights), "--scale", "4", "--data", str(data)]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    assert "set/small: the image is 5x5 pixels, smaller than the 8x8 LR pixels" in err
    assert "cut.png" in err and "srblocks eval: 2 image(s) could not be scored" in err
    assert "img0" in out and "img1" in out and "2 image(s) failed and are not in the mean: " in out
    code = main([*argv, "--json"])
    out, _ = capsys.readouterr()
    result = json.loads(out)["results"][0]
    assert code == 2 and [r["name"] for r in result["images"]] == ["img0", "img1"]
    assert sorted(f["name"] for f in result["failures"]) == ["cut", "small"]
    model = srblocks.load_weights(srblocks.build_model(spec, scale=4), weights)
    expected = evaluate(model, data, errors="skip")
    assert result["mean_psnr"] == pytest.approx(expected.mean_psnr, abs=1e-12)
    with pytest.raises(ValueError, match="cut.png"):
        evaluate(model, data)  # the library raises by default (at the first bad image)
