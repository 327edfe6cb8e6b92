"""--backend onnxruntime|openvino for srblocks eval / upscale: the same tiling, self-ensemble and PSNR code as torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import srblocks
from conftest import TINY_SPEC, synthetic_images
from srblocks.backends import BackendModule, make_backend
from srblocks.cli import main
from srblocks.evaluate import evaluate, upscale_image
from srblocks.export import ExportError

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'srblocks[export]')")
pytest.importorskip("onnxscript", reason="onnxscript is not installed (pip install 'srblocks[export]')")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    spec = folder / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY_SPEC))
    torch.manual_seed(0)
    model = srblocks.build_model(spec).eval()
    weights = srblocks.save_weights(model, folder / "tiny.safetensors")
    data = folder / "set"
    data.mkdir()
    for name, image in synthetic_images(2, (36, 44)):
        Image.fromarray(image).save(data / f"{name}.png")
    return spec, weights, model, data


def test_backend_module_drives_tiling_and_self_ensemble_like_torch(tiny) -> None:
    _, _, model, data = tiny
    backend = make_backend(model, "onnxruntime")
    assert isinstance(backend, BackendModule) and backend.backend == "onnxruntime"
    image = synthetic_images(1, (50, 70), seed=3)[0][1]
    # tiles of 24 LR pixels with 8 overlap: tiles of several sizes go through the one dynamic ONNX graph
    ours = upscale_image(backend, image, tile=24, tile_overlap=8, self_ensemble=True)
    ref = upscale_image(model, image, tile=24, tile_overlap=8, self_ensemble=True)
    assert ours.shape == ref.shape == (100, 140, 3)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1  # uint8 rounding of values 1e-6 apart
    a, b = evaluate(backend, data), evaluate(model, data)
    assert a.mean_psnr == pytest.approx(b.mean_psnr, abs=1e-3)


def test_cli_eval_backend_matches_torch(capsys, tiny) -> None:
    spec, weights, _, data = tiny
    psnr = {}
    for backend in ("torch", "onnxruntime"):
        assert main(["eval", str(spec), "--weights", str(weights), "--data", str(data), "--json", "--no-ssim",
                     "--backend", backend, "--device", "cpu"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["backend"] == backend
        psnr[backend] = out["results"][0]["mean_psnr"]
    assert psnr["onnxruntime"] == pytest.approx(psnr["torch"], abs=1e-3)


def test_backend_refusals(capsys, tiny, tmp_path) -> None:
    spec, weights, model, data = tiny
    with pytest.raises(ExportError, match="bf16 is available on the openvino backend only"):
        make_backend(model, "onnxruntime", precision="bf16")
    with pytest.raises(ExportError, match="unknown backend"):
        make_backend(model, "tensorrt")
    mga = srblocks.build_model("fsrcnn_m", scale=4).eval()
    with pytest.raises(ExportError, match="dynamic input sizes.*node 'mga'.*--backend torch"):
        make_backend(mga, "onnxruntime")
    weights_m = srblocks.save_weights(mga, tmp_path / "m.safetensors")
    code = main(["upscale", "fsrcnn_m", "--scale", "4", "--weights", str(weights_m), "--backend", "onnxruntime",
                 str(data), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "node 'mga'" in err[0]


def test_openvino_backend_when_installed(tiny) -> None:
    pytest.importorskip("openvino", reason="openvino is not installed (optional: pip install 'srblocks[openvino]')")
    _, _, model, data = tiny
    backend = make_backend(model, "openvino")
    assert backend.backend == "openvino (f32)"
    x = torch.rand(1, 3, 23, 31)
    with torch.no_grad():
        assert (backend(x) - model(x)).abs().max() <= 1e-4
    assert evaluate(backend, data).mean_psnr == pytest.approx(evaluate(model, data).mean_psnr, abs=1e-3)


def test_openvino_runner_compiles_a_dynamic_model_per_input_shape(tiny) -> None:
    pytest.importorskip("openvino", reason="openvino is not installed (optional: pip install 'srblocks[openvino]')")
    from srblocks.backends.openvino import STATIC_SHAPES_KEPT, OpenVinoRunner
    from srblocks.export import export_onnx_bytes
    from srblocks.export.openvino import onnx_to_openvino

    _, _, model, _ = tiny
    data, metadata, _, _ = export_onnx_bytes(model)
    runner = OpenVinoRunner(onnx_to_openvino(data, metadata), threads=1)
    assert runner.dynamic and runner.static_shapes == []
    shapes = [(1, 3, 16 + i, 20) for i in range(STATIC_SHAPES_KEPT + 1)]
    for shape in shapes + shapes[-1:]:
        x = torch.rand(shape)
        with torch.no_grad():
            assert (runner(x) - model(x)).abs().max() <= 1e-4
    assert runner.static_shapes == shapes[1:]  # the oldest shape made room, a repeated one is reused
