"""Assembled models behave like hand-written ones: odd sizes, batches, dtypes, compile, tracing, ONNX, deploy."""

from __future__ import annotations

import copy

import pytest
import torch

import srblocks


@pytest.fixture(scope="module")
def safmn_small() -> torch.nn.Module:
    torch.manual_seed(0)
    return srblocks.build_model("safmn", scale=2, n_blocks=2).eval()


def test_odd_sizes_work_where_the_paper_model_does(safmn_small) -> None:
    with torch.no_grad():
        assert safmn_small(torch.rand(1, 3, 9, 13)).shape == (1, 3, 18, 26)
        assert safmn_small(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)


def test_batch_equals_single_images(safmn_small) -> None:
    x = torch.rand(3, 3, 12, 17)
    with torch.no_grad():
        batched = safmn_small(x)
        single = torch.cat([safmn_small(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_cpu(safmn_small, dtype: torch.dtype) -> None:
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        ref = safmn_small(x)
        out = copy.deepcopy(safmn_small).to(dtype)(x.to(dtype))
    assert out.dtype == dtype
    assert float((out.float() - ref).abs().max()) < 0.1 * float(ref.abs().max())


def test_jit_trace_matches_eager(safmn_small) -> None:
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        traced = torch.jit.trace(safmn_small, x)
        assert torch.allclose(traced(x), safmn_small(x), atol=1e-6)


def test_torch_compile_matches_eager(safmn_small) -> None:
    x = torch.rand(1, 3, 16, 16)
    compiled = torch.compile(safmn_small, backend="aot_eager", fullgraph=True)  # one graph, no breaks
    with torch.no_grad():
        assert torch.allclose(compiled(x), safmn_small(x), atol=1e-6)


def test_onnx_export_runs_in_onnxruntime(safmn_small, tmp_path) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    x = torch.rand(1, 3, 16, 24)
    path = tmp_path / "safmn.onnx"
    torch.onnx.export(safmn_small, (x,), str(path), opset_version=20, dynamo=True,
                      input_names=["image"], output_names=["sr"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        assert float((torch.from_numpy(out) - safmn_small(x)).abs().max()) < 1e-4


def _randomize_bn_statistics(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.25)
            module.weight.data.copy_(torch.randn(c, generator=generator))
            module.bias.data.copy_(torch.randn(c, generator=generator) * 0.5)


def test_deploy_is_equivalent_in_eval_mode() -> None:
    torch.manual_seed(0)
    train = srblocks.build_model("fmen_s", scale=3)
    _randomize_bn_statistics(train)
    train.eval()
    deployed = srblocks.deploy(train)
    assert sum(p.numel() for p in deployed.parameters()) == 331595
    assert train.training is False and any(isinstance(m, torch.nn.BatchNorm2d) for m in train.modules())
    x = torch.rand(2, 3, 19, 23)
    with torch.no_grad():
        diff = float((deployed(x) - train(x)).abs().max())
    assert diff <= 1e-5
    assert srblocks.model_info(deployed).spec.name == "fmen_s"


def test_deploy_form_loads_into_deploy_spec() -> None:
    train = srblocks.build_model("fmen_s", scale=4).eval()
    deployed = srblocks.deploy(train)
    fresh = srblocks.build_model("fmen_s", scale=4, deploy=True)
    srblocks.load_weights(fresh, deployed.state_dict())
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), deployed(x))


def test_deploy_keeps_a_channels_last_model_channels_last() -> None:
    """deploy() fuses RRRB/HFAB convs into new tensors; a channels-last model stays channels-last (and equal)."""
    torch.manual_seed(0)
    model = srblocks.build_model("fmen_s", scale=2, memory_format="channels_last").eval()
    fast = srblocks.deploy(model)
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    x = torch.rand(1, 3, 24, 20)
    with torch.no_grad():
        ref = model(x)
        assert (fast(x) - ref).abs().max().item() <= 1e-5 * ref.abs().max().item() + 1e-6
