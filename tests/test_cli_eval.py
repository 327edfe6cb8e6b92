"""``srblocks eval``, ``srblocks upscale`` and ``srblocks train`` as a user runs them (through ``srblocks.cli.main``).

Acceptance: ``srblocks eval fmen_s --weights fmen_s_x4_deploy.pth --official --deploy --data Set5 --data Set14``
reproduces the official per-image and mean PSNR (golden/psnr_reference.json, float Y) to 0.005 dB without any
range or convention flag (about 10 s on one CPU thread for both sets).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import srblocks
from conftest import TINY_SPEC as TINY, require_shared_file, synthetic_images
from srblocks.cli import main
from srblocks.data import read_image
from srblocks.evaluate import evaluate, upscale_image

PSNR_TOL_DB = 0.005



def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = [np.sin(2 * np.pi * (rng.uniform(0.5, 3) * xx + rng.uniform(0.5, 3) * yy) + rng.uniform(0, 6))
             for _ in range(3)]
    return np.clip(np.round(127.5 + 100 * np.stack(chans, -1) + rng.normal(0, 4, (h, w, 3))), 0, 255).astype(np.uint8)


@pytest.fixture()
def tiny(tmp_path):
    """A spec file and a random-weights checkpoint for it."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    torch.manual_seed(0)
    model = srblocks.build_model(spec)
    weights = srblocks.save_weights(model, tmp_path / "tiny.safetensors")
    return spec, weights, model


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([*argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------------------------


def test_eval_reproduces_official_fmen_psnr(capsys, shared_dir):
    weights = require_shared_file("weights/fmen_s_x4_deploy.pth")
    ref = json.loads(require_shared_file("golden/psnr_reference.json").read_text())["results"]["FMEN-S-x4-deploy"]
    sets = [require_shared_file("data/Set5"), require_shared_file("data/Set14")]
    code, out, err = _run(capsys, "eval", "fmen_s", "--weights", str(weights), "--official", "--deploy",
                          "--data", str(sets[0]), "--data", str(sets[1]), "--json", "--threads", "1")
    assert code == 0, err
    report = json.loads(out)
    assert report["spec"] == "fmen_s" and report["variables"]["deploy"] is True
    listed = {"Set5": 32.1153, "Set14": 28.5652}  # the numbers
    for result in report["results"]:
        entry = ref[result["dataset"]]
        assert result["scale"] == 4 and result["input_range"] == 255.0 and result["y_rounding"] == "float"
        assert len(result["images"]) == entry["n_images"]
        for image in result["images"]:
            assert abs(image["psnr"] - entry["per_image"][image["name"]]["psnr_y"]) <= PSNR_TOL_DB, image
        assert abs(result["mean_psnr"] - entry["mean"]["psnr_y"]) <= PSNR_TOL_DB
        assert abs(result["mean_psnr"] - listed[result["dataset"]]) <= PSNR_TOL_DB


def test_eval_reproduces_official_hpinet_psnr_with_rounded_y_and_no_flags(capsys, shared_dir):
    """HPINet-M x4 on Set5 as a new user runs it: the spec supplies the uint8-Y convention of HPINet's evaluation."""
    weights = require_shared_file("weights/hpinet_m_x4.pth")
    entry = json.loads(require_shared_file("golden/psnr_reference.json").read_text())["results"]["HPINet-M-x4"]["Set5"]
    code, out, err = _run(capsys, "eval", "hpinet_m", "--scale", "4", "--weights", str(weights), "--official",
                          "--data", str(require_shared_file("data/Set5")), "--json", "--threads", "1")
    assert code == 0, err
    (result,) = json.loads(out)["results"]
    assert result["y_rounding"] == "uint8" and result["input_range"] == 1.0
    assert abs(result["mean_psnr"] - 32.6006) <= PSNR_TOL_DB  # the number (paper: 32.60)
    assert abs(result["mean_psnr"] - entry["mean"]["psnr_y_u8"]) <= PSNR_TOL_DB
    assert abs(result["mean_ssim"] - entry["mean"]["ssim_y_u8"]) <= 5e-5  # paper 0.8986


def test_eval_of_deploy_weights_without_deploy_flag_explains(capsys, shared_dir):
    weights = require_shared_file("weights/fmen_s_x4_deploy.pth")
    code, _, err = _run(capsys, "eval", "fmen_s", "--weights", str(weights), "--official",
                        "--data", str(require_shared_file("data/Set5")))
    assert code == 2
    assert "deploy-form weights" in err and "--deploy" in err


def test_eval_table_and_json(capsys, tiny, tmp_path):
    spec, weights, model = tiny
    data = tmp_path / "set"
    data.mkdir()
    for i in range(2):
        Image.fromarray(_photo(36, 44, i)).save(data / f"p{i}.png")
    code, out, err = _run(capsys, "eval", str(spec), "--weights", str(weights), "--data", str(data))
    assert code == 0, err
    assert "p0" in out and "p1" in out and "mean" in out and "Y (float)" in out
    code, out, _ = _run(capsys, "eval", str(spec), "--weights", str(weights), "--data", str(data), "--json",
                        "--self-ensemble", "--y-rounding", "uint8")
    result = json.loads(out)["results"][0]
    expected = evaluate(model, data, self_ensemble=True, y_rounding="uint8")
    assert result["mean_psnr"] == pytest.approx(expected.mean_psnr, abs=1e-9)
    assert result["self_ensemble"] and result["metric"] == "Y (uint8)"
    code, _, err = _run(capsys, "eval", str(spec), "--weights", str(weights), "--data", str(tmp_path / "missing"))
    assert code == 2 and "does not exist" in err
    code, _, err = _run(capsys, "eval", str(spec), "--weights", str(weights), "--data", str(data), "--scale", "3")
    assert code == 2 and "weights do not fit" in err  # x3 tail conv has another shape


# ---------------------------------------------------------------------------------------------------------------
# upscale
# ---------------------------------------------------------------------------------------------------------------


def _write_inputs(folder) -> dict[str, str]:
    """Images of several kinds; returns {file name: kind}."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = _photo(20, 26, 1)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")  # mode L
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray((rgb[..., 1].astype(np.uint16) * 257)).save(folder / "deep16.png")  # mode I;16
    Image.fromarray(rgb).save(folder / "photo.jpg", quality=90)
    Image.fromarray(_photo(40, 40, 2)).save(folder / "cut.png")
    raw = (folder / "cut.png").read_bytes()
    (folder / "cut.png").write_bytes(raw[: len(raw) // 2])  # truncated
    (folder / "junk.png").write_bytes(b"this is not an image")
    return {"rgb.png": "ok", "gray.png": "ok", "rgba.png": "ok", "deep16.png": "ok", "photo.jpg": "ok",
            "cut.png": "bad", "junk.png": "bad"}


def test_upscale_writes_same_names_and_reports_bad_files(capsys, tiny, tmp_path):
    spec, weights, model = tiny
    kinds = _write_inputs(tmp_path / "in")
    out_dir = tmp_path / "out"
    code, _, err = _run(capsys, "upscale", str(spec), "--weights", str(weights), str(tmp_path / "in"),
                        "-o", str(out_dir))
    assert code == 1  # two unreadable files, the others written
    assert "cut.png" in err and "truncated" in err
    assert "junk.png" in err and "not a recognised image" in err
    assert "gray.png: grayscale" in err and "rgba.png: alpha channel dropped" in err and "deep16.png: 16-bit" in err
    assert "5 of 7 image(s) written" in err
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == sorted(n for n, k in kinds.items() if k == "ok")
    for name in ("rgb.png", "gray.png", "rgba.png", "deep16.png"):
        src = read_image(tmp_path / "in" / name)
        out = read_image(out_dir / name)
        assert out.shape == (40, 52, 3)
        assert np.array_equal(out, upscale_image(model, src))  # PNG: lossless, same as the Python API
    assert read_image(out_dir / "photo.jpg").shape == (40, 52, 3)


def test_upscale_refuses_to_overwrite(capsys, tiny, tmp_path):
    spec, weights, _ = tiny
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(_photo(16, 16, 3)).save(folder / "a.png")
    before = (folder / "a.png").read_bytes()
    code, _, err = _run(capsys, "upscale", str(spec), "--weights", str(weights), str(folder / "a.png"),
                        "-o", str(folder))
    assert code == 2 and "refusing to overwrite input" in err
    assert (folder / "a.png").read_bytes() == before
    out = tmp_path / "out"
    assert _run(capsys, "upscale", str(spec), "--weights", str(weights), str(folder), "-o", str(out))[0] == 0
    code, _, err = _run(capsys, "upscale", str(spec), "--weights", str(weights), str(folder), "-o", str(out))
    assert code == 2 and "already exists" in err
    assert _run(capsys, "upscale", str(spec), "--weights", str(weights), str(folder), "-o", str(out),
                "--overwrite")[0] == 0
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(_photo(16, 16, 4)).save(other / "a.png")
    code, _, err = _run(capsys, "upscale", str(spec), "--weights", str(weights), str(folder), str(other),
                        "-o", str(tmp_path / "out2"))
    assert code == 2 and "would both be written" in err
    code, _, err = _run(capsys, "upscale", str(spec), "--weights", str(weights), str(tmp_path / "nope.png"),
                        "-o", str(out))
    assert code == 2 and "does not exist" in err


def test_upscale_tiling_and_extension(capsys, tiny, tmp_path):
    spec, weights, model = tiny
    folder = tmp_path / "in"
    folder.mkdir()
    image = _photo(30, 34, 5)
    Image.fromarray(image).save(folder / "b.bmp")
    code, _, err = _run(capsys, "upscale", str(spec), "--weights", str(weights), str(folder / "b.bmp"),
                        "-o", str(tmp_path / "out"), "--tile", "12", "--tile-overlap", "4", "--ext", "png")
    assert code == 0, err
    out = read_image(tmp_path / "out" / "b.png")
    assert np.array_equal(out, upscale_image(model, image))  # receptive radius 2 <= overlap 4: identical


# ---------------------------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------------------------


def test_train_cli_run_folder_and_resume(capsys, tiny, tmp_path):
    spec, _, _ = tiny
    data = tmp_path / "hr"
    data.mkdir()
    for i in range(3):
        Image.fromarray(_photo(40, 40, 10 + i)).save(data / f"t{i}.png")
    run = tmp_path / "run"
    args = ["train", str(spec), "--data", str(data), "--scale", "2", "--iters", "6", "-o", str(run),
            "--batch-size", "4", "--patch-size", "12", "--val", str(data), "--val-every", "3", "--threads", "1",
            "--no-progress"]
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    assert "6 iterations" in out
    assert {"checkpoint.pth", "model.safetensors", "log.jsonl", "run.json"} <= {p.name for p in run.iterdir()}
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    final_psnr = [e["validation"]["psnr"] for e in log if "validation" in e][-1]
    code, _, err = _run(capsys, *args)
    assert code == 2 and "--resume" in err
    assert args[7] == "6"
    with pytest.warns(UserWarning, match="changed settings"):
        code, out, err = _run(capsys, *args[:7], "12", *args[8:], "--resume")  # extend the run to 12 iterations
    assert code == 0, err
    assert "12 iterations" in out
    code, out, _ = _run(capsys, "eval", str(spec), "--weights", str(run / "model.safetensors"), "--data", str(data),
                        "--json")
    assert code == 0
    assert json.loads(out)["results"][0]["mean_psnr"] != final_psnr  # trained further
    code, _, err = _run(capsys, "train", str(spec), "--data", str(data), "--iters", "5", "-o", str(tmp_path / "r2"))
    assert code == 2 and "--scale" in err
