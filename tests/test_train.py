"""srblocks.train: loss decreases, determinism, resume == uninterrupted, EMA, callback stop, time budget, schedule,
FFT loss, checkpoints. Everything runs on a tiny model and synthetic in-memory images (no shared data)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import srblocks
from conftest import TINY_SPEC, synthetic_images
from srblocks.build import model_memory_format
from srblocks.evaluate import evaluate
from srblocks.train import (
    CHECKPOINT_NAME,
    LOG_NAME,
    WEIGHTS_NAME,
    StopTraining,
    TrainConfig,
    TrainingDiverged,
    ValidationReport,
    fft_loss,
    lr_at,
    train,
)


TINY = {**TINY_SPEC, "nodes": TINY_SPEC["nodes"][:4]}  # no bilinear skip: the net must learn

FAST = dict(batch_size=4, lr_patch_size=12, lr=3e-3, progress=False, threads=1, log_every=5)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _images(n: int = 4, size: tuple[int, int] = (40, 48), seed: int = 0) -> list[tuple[str, np.ndarray]]:
    return synthetic_images(n, size, seed, noise=4)


DATA = _images(4)
VAL = _images(1, size=(24, 24), seed=7)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return srblocks.build_model(TINY)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_loss_decreases_and_psnr_rises():
    model = _model()
    before = evaluate(model, VAL).mean_psnr
    result = train(model, DATA, val_data=VAL, iterations=60, val_every=60, **FAST)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 12
    assert losses[-1] < 0.5 * losses[0], losses
    assert result.final_psnr > before + 3.0, (before, result.final_psnr)
    assert result.stop_reason == "iterations" and result.iterations == 60
    assert not result.model.training


def test_two_runs_with_the_same_seed_are_identical():
    a = train(_model(), DATA, iterations=12, val_every=100, **FAST)
    b = train(_model(), DATA, iterations=12, val_every=100, **FAST)
    _assert_same_state(_state(a.model), _state(b.model))
    _assert_same_state(_state(a.raw_model), _state(b.raw_model))
    assert a.history == b.history
    c = train(_model(), DATA, iterations=12, val_every=100, seed=1, **FAST)  # other crops
    assert not torch.equal(_state(c.raw_model)["head.weight"], _state(a.raw_model)["head.weight"])


def test_training_layout_is_contiguous_by_default_and_the_model_comes_back_in_its_own():
    built = _model()  # channels_last: the build default
    plain = _model().to(memory_format=torch.contiguous_format)
    assert model_memory_format(built) == "channels_last" and model_memory_format(plain) == "contiguous"
    a = train(built, DATA, iterations=6, val_every=100, **FAST)
    b = train(plain, DATA, iterations=6, val_every=100, **FAST)
    _assert_same_state(_state(a.raw_model), _state(b.raw_model))  # both trained contiguous: the same run
    assert model_memory_format(a.raw_model) == model_memory_format(a.model) == "channels_last"
    assert model_memory_format(b.raw_model) == model_memory_format(b.model) == "contiguous"
    c = train(_model(), DATA, iterations=6, val_every=100, memory_format="channels_last", **FAST)
    for k, v in _state(c.raw_model).items():  # the other layout: the same training up to float rounding
        assert torch.allclose(v, _state(a.raw_model)[k], atol=1e-4), k
    with pytest.raises(ValueError, match="memory_format"):
        TrainConfig(memory_format="nhwc")
    failing = _model()

    def fail(report):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        train(failing, DATA, val_data=VAL, iterations=4, val_every=2, callback=fail, **FAST)
    assert model_memory_format(failing) == "channels_last"  # also after an error


def test_resume_equals_uninterrupted(tmp_path):
    opts = dict(iterations=20, val_every=10, warmup_iterations=3, fft_loss_weight=0.05, grad_clip=0.5, **FAST)
    full = train(_model(), DATA, val_data=VAL, out_dir=tmp_path / "full", **opts)

    stops: list[int] = []

    def stop_at_10(report: ValidationReport) -> bool:
        stops.append(report.iteration)
        return report.iteration == 10

    first = train(_model(), DATA, val_data=VAL, out_dir=tmp_path / "split", callback=stop_at_10, **opts)
    assert first.stop_reason == "callback" and first.iterations == 10 and stops == [10]
    # a new process would build a new model (different random init): resuming must restore everything
    second = train(_model(seed=123), DATA, val_data=VAL, out_dir=tmp_path / "split", resume=True, **opts)
    assert second.iterations == 20 and second.stop_reason == "iterations"
    _assert_same_state(_state(second.raw_model), _state(full.raw_model))
    _assert_same_state(_state(second.model), _state(full.model))
    assert [v.psnr for v in second.validations] == [v.psnr for v in full.validations]
    assert [h["loss"] for h in second.history] == [h["loss"] for h in full.history]
    lines = [json.loads(x) for x in (tmp_path / "split" / LOG_NAME).read_text().splitlines()]
    assert [e["iteration"] for e in lines if "iteration" in e] == [5, 10, 15, 20]


def test_ema_follows_the_documented_recursion():
    """EMA_t = d_t EMA_{t-1} + (1 - d_t) W_t with d_t = min(decay, (1 + t) / (10 + t)), checked against the raw
    weights recorded after every update (validation every iteration gives the callback access to them)."""
    model = _model()
    snapshots = [_state(model)]
    decay = 0.9

    def record(report: ValidationReport) -> None:
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    result = train(model, DATA, val_data=VAL, iterations=8, val_every=1, ema_decay=decay, callback=record, **FAST)
    assert result.model is not result.raw_model
    expected = {k: v.double() for k, v in snapshots[0].items()}
    for t in range(1, len(snapshots)):
        d = min(decay, (1 + t) / (10 + t))
        expected = {k: d * expected[k] + (1 - d) * snapshots[t][k].double() for k in expected}
    got = _state(result.model)
    for k in expected:
        assert torch.allclose(got[k].double(), expected[k], atol=1e-6), k
    assert not torch.allclose(got["head.weight"], snapshots[-1]["head.weight"], atol=1e-4)
    # validation scored the EMA model
    assert result.validations[-1].psnr == evaluate(result.model, VAL).mean_psnr


def test_without_ema_the_result_is_the_trained_model():
    model = _model()
    result = train(model, DATA, iterations=4, val_every=100, ema_decay=None, **FAST)
    assert result.model is model and result.raw_model is model


def test_callback_can_stop_by_raising_and_other_exceptions_propagate(tmp_path):
    def stop(report: ValidationReport) -> None:
        raise StopTraining

    result = train(_model(), DATA, val_data=VAL, iterations=20, val_every=4, callback=stop, **FAST)
    assert result.stop_reason == "callback" and result.iterations == 4
    assert isinstance(result.validations[0], ValidationReport) and math.isfinite(result.validations[0].psnr)

    class Pruned(Exception):  # what optuna.TrialPruned looks like to the trainer
        pass

    seen: list[float] = []

    def prune(report: ValidationReport) -> None:
        seen.append(report.psnr)
        if report.iteration >= 8:
            raise Pruned

    with pytest.raises(Pruned):
        train(_model(), DATA, val_data=VAL, iterations=20, val_every=4, callback=prune, out_dir=tmp_path, **FAST)
    assert len(seen) == 2
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)  # periodic checkpoint of iteration 4
    assert state["iteration"] == 4


def test_time_budget_stops_training():
    result = train(_model(), DATA, val_data=VAL, iterations=10_000, val_every=10_000, time_budget=0.5, **FAST)
    assert result.stop_reason == "time_budget"
    assert 0 <= result.iterations < 10_000
    assert result.validations and result.validations[-1].iteration == result.iterations  # validated at the stop


def test_learning_rate_schedule():
    cfg = TrainConfig(iterations=100, warmup_iterations=10, lr=1e-3, min_lr=1e-5)
    assert lr_at(cfg, 0) == pytest.approx(1e-4)
    assert lr_at(cfg, 9) == pytest.approx(1e-3)
    assert lr_at(cfg, 10) == pytest.approx(1e-3)
    assert lr_at(cfg, 55) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)
    assert lr_at(cfg, 100) == pytest.approx(1e-5)
    values = [lr_at(cfg, i) for i in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert lr_at(cfg, 20, time_fraction=1.0) == pytest.approx(1e-5)  # a time budget anneals too


def test_fft_loss_matches_safmn_definition():
    a, b = torch.rand(2, 3, 8, 10), torch.rand(2, 3, 8, 10)
    fa, fb = torch.fft.rfft2(a), torch.fft.rfft2(b)
    ref = torch.nn.functional.l1_loss(torch.stack([fa.real, fa.imag], -1), torch.stack([fb.real, fb.imag], -1))
    assert torch.allclose(fft_loss(a, b), ref)
    assert float(fft_loss(a, a)) == 0.0


def test_checkpoint_files(tmp_path):
    result = train(_model(), DATA, iterations=6, val_every=3, out_dir=tmp_path, **FAST)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert state["iteration"] == 6 and "params" in state and "params_ema" in state and "optimizer" in state
    assert json.loads(state["config"])["iterations"] == 6
    # the BasicSR layout: load_weights picks params_ema, model.safetensors holds the same final weights
    loaded = srblocks.load_weights(_model(seed=5), tmp_path / CHECKPOINT_NAME)
    _assert_same_state(_state(loaded), _state(result.model))
    loaded = srblocks.load_weights(_model(seed=5), tmp_path / WEIGHTS_NAME)
    _assert_same_state(_state(loaded), _state(result.model))


def test_gradient_clipping_is_applied(monkeypatch):
    calls: list[float] = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        calls.append(max_norm)
        return original(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    train(_model(), DATA, iterations=3, val_every=100, grad_clip=0.1, **FAST)
    assert calls == [0.1, 0.1, 0.1]
    calls.clear()
    train(_model(), DATA, iterations=3, val_every=100, **FAST)
    assert calls == []


def test_divergence_and_bad_options_are_reported(tmp_path):
    model = _model()
    with torch.no_grad():
        model.get_submodule("head").weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="iteration 1"):
        train(model, DATA, iterations=3, **FAST)
    with pytest.raises(ValueError, match="iterations"):
        train(_model(), DATA, iterations=0, **FAST)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.5)
    with pytest.warns(UserWarning, match="skipped"), pytest.raises(ValueError, match="no image is large enough"):
        train(_model(), DATA, iterations=2, **{**FAST, "lr_patch_size": 64})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_model(), DATA, iterations=2, resume=True, out_dir=tmp_path / "new", **FAST)
