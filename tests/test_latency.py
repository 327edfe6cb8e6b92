"""The per-device latency model: table round trip and device keys, block-call keys, interleaved timing, prediction,
calibration, and the search's predict-then-measure-near-the-boundary rule.

Timing tests use a fake clock and a fake runner (each forward "takes" a cost computed from the module), so every
assertion is deterministic; only the calibration test runs real (tiny) forwards, and asserts nothing about speed."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import fx

import srblocks
from srblocks.errors import SrblocksError
from srblocks.latency import (BudgetLatency, DeviceKey, LatencyTable, LatencyTableError, MeasureSettings, TorchRunner,
                              calibrate, default_table_path, load_table, measure_interleaved, predict_latency)
from srblocks.latency.calls import WHOLE_MODEL, block_calls
from srblocks.latency.predict import MissingEntriesError
from srblocks.latency.table import BlockEntry, ModelPoint, fit_overhead

from conftest import TINY_SPEC, spec_with

FAST = MeasureSettings(warmup=1, min_samples=3, max_samples=6, rel_precision=0.05, min_sample_s=0.0)
KEY = DeviceKey("fake-cpu", "Test CPU 9000", 1, "fake 1.0")


class FakeClock:
    """A clock (seconds) that only the fake runner advances."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def block_cost_s(module: torch.nn.Module, inputs) -> float:
    """The fake hardware: 1 ms + 1 us per parameter, x0.5 on NHWC inputs."""
    nhwc = inputs[0].dim() == 4 and not inputs[0].is_contiguous()
    return (1e-3 + 1e-6 * sum(p.numel() for p in module.parameters())) * (0.5 if nhwc else 1.0)


class FakeRunner:
    """A runner on the fake clock: a block call costs block_cost_s, a whole model the sum of its blocks + 2 ms."""

    def __init__(self, clock: FakeClock, key: DeviceKey = KEY) -> None:
        self.clock, self._key = clock, key
        self.prepared: list[str] = []

    def key(self) -> DeviceKey:
        return self._key

    def session(self):
        return contextlib.nullcontext()

    def prepare(self, module, inputs):
        if isinstance(module, fx.GraphModule) and "srblocks" in getattr(module, "meta", {}):
            cost = 2e-3 + sum(block_cost_s(c.module, c.make_inputs()) for c in block_calls(module, inputs[0].shape))
            self.prepared.append("model")
        else:
            cost = block_cost_s(module, inputs)
            self.prepared.append("block")

        def run() -> None:
            self.clock.now += cost

        return run


def tiny(dim: int = 8, memory_format: str = "contiguous"):
    return srblocks.build_model(spec_with(variables={"scale": 2, "dim": dim}), memory_format=memory_format).eval()


SHAPE = (1, 3, 16, 16)


# -- table, device key ---------------------------------------------------------------------------------------------

def test_table_round_trips_and_is_refused_on_another_device(tmp_path) -> None:
    table = LatencyTable(KEY, {"abc": BlockEntry("conv", "conv on 1x3x16x16", 1.25, 0.01, 5)},
                         [ModelPoint("m", "contiguous", 3.0, 4.5)])
    path = table.save(tmp_path / "t.json")
    assert json.loads(path.read_text())["device"]["device"] == "Test CPU 9000"
    again = load_table(path, expect=KEY)
    assert again.blocks == table.blocks and again.points == table.points and again.device == KEY
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # atomic write leaves no temporary file
    other = DeviceKey("fake-cpu", "Test CPU 9000", 2, "fake 1.0")  # same machine, another thread count
    with pytest.raises(LatencyTableError, match="2 threads.*calibrate"):
        load_table(path, expect=other)
    assert other.slug() != KEY.slug()


def test_default_table_path_is_per_device_and_honours_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SRBLOCKS_LATENCY_DIR", str(tmp_path))
    a, b = default_table_path(KEY), default_table_path(DeviceKey("fake-cpu", "Other CPU", 1, "fake 1.0"))
    assert a.parent == tmp_path and a != b


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ('{"format": "other"}', "not a srblocks latency table"),
    ('{"format": "srblocks-latency-table", "version": 1, "device": {"backend": 1}}', "malformed"),
    ('{"format": "srblocks-latency-table", "version": 1, "device": {"backend": "b", "device": "d", "threads": 1, '
     '"software": "s"}, "blocks": {"k": {"block": "c", "label": "l", "ms": -1, "iqr_ms": 0, "samples": 1}}}',
     "blocks.k: ms must be"),
])
def test_bad_tables_are_clear_errors_naming_the_file(tmp_path, content, message) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(LatencyTableError, match=message) as info:
        load_table(path)
    assert str(path) in str(info.value) and isinstance(info.value, SrblocksError)


def test_overhead_fit_recovers_a_linear_overhead_and_its_band() -> None:
    sizes = [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0]
    points = [ModelPoint(f"m{i}", "contiguous", x, 2.0 + 1.1 * x) for i, x in enumerate(sizes)]
    fit = fit_overhead(points)
    assert fit.a_ms == pytest.approx(2.0) and fit.b == pytest.approx(1.1) and fit.points == 8
    assert fit.band == pytest.approx(0.03)  # exact fit: the minimum band
    few = fit_overhead(points[:3])
    assert few.a_ms == 0 and few.b == pytest.approx(1.3)  # too few points for a slope: the median ratio (1.5, 1.3, 1.2)
    assert few.band >= 0.10  # and a wide band
    assert fit_overhead([]).band == 0.25


# -- keys, timing ----------------------------------------------------------------------------------------------------

def test_block_calls_are_keyed_by_arguments_shapes_and_memory_format() -> None:
    contiguous = block_calls(tiny(8), SHAPE)
    assert [c.block for c in contiguous] == ["conv", "act", "conv", "pixel_shuffle", "resize", "add"]
    assert len({c.key for c in contiguous}) == 6
    assert [c.key for c in block_calls(tiny(8), SHAPE)] == [c.key for c in contiguous]  # stable across builds
    wider = block_calls(tiny(12), SHAPE)
    assert wider[0].key != contiguous[0].key  # another out_channels
    assert block_calls(tiny(8), (1, 3, 32, 32))[0].key != contiguous[0].key  # another input shape
    nhwc = block_calls(tiny(8, "channels_last"), SHAPE)
    assert nhwc[1].inputs[0].layout == "channels_last" and contiguous[1].inputs[0].layout == "contiguous"
    assert nhwc[0].inputs[0].layout == "contiguous"  # the image itself arrives NCHW
    assert all(a.key != b.key for a, b in zip(nhwc, contiguous))


def test_models_that_are_not_block_chains_are_one_whole_model_entry() -> None:
    calls = block_calls(torch.nn.Conv2d(3, 4, 3), SHAPE)
    assert len(calls) == 1 and calls[0].block == WHOLE_MODEL


def test_interleaved_measurement_takes_medians_until_stable_with_an_injected_clock() -> None:
    clock = FakeClock()
    order: list[str] = []
    costs = {"a": 0.004, "b": 0.001}

    def fn(name: str):
        def run() -> None:
            order.append(name)
            clock.now += costs[name]
        return run

    settings = MeasureSettings(warmup=2, min_samples=4, max_samples=10, rel_precision=0.01, min_sample_s=0.003)
    timings = measure_interleaved({k: fn(k) for k in costs}, settings, timer=clock)
    assert timings["a"].median_ms == pytest.approx(4.0) and timings["b"].median_ms == pytest.approx(1.0)
    assert timings["b"].number == 3 and timings["a"].number == 1  # a sample of b lasts >= 3 ms
    assert timings["a"].samples == 4 and timings["a"].stable  # constant times are stable at min_samples
    noisy = iter([0.001, 0.003] * 100)

    def jitter() -> None:
        clock.now += next(noisy)

    shaky = measure_interleaved({"n": jitter}, MeasureSettings(warmup=0, min_samples=3, max_samples=9,
                                                                 rel_precision=0.01, min_sample_s=0.0), timer=clock)
    assert shaky["n"].samples == 9 and not shaky["n"].stable  # never stable: stops at max_samples


def test_rounds_interleave_every_candidate() -> None:
    clock = FakeClock()
    seen: list[str] = []
    fns = {k: (lambda k=k: (seen.append(k), setattr(clock, "now", clock.now + 0.001))) for k in "abc"}
    measure_interleaved(fns, MeasureSettings(warmup=0, min_samples=3, max_samples=3, min_sample_s=0.0), timer=clock)
    rounds = seen[3:]  # after the one timed call each that picks the repeat count
    assert [sorted(rounds[i:i + 3]) for i in range(0, 9, 3)] == [["a", "b", "c"]] * 3


# -- prediction, calibration -------------------------------------------------------------------------------------

def test_prediction_sums_cached_entries_and_sees_the_memory_format() -> None:
    table = LatencyTable(KEY)
    for fmt, ms in (("contiguous", 1.0), ("channels_last", 0.4)):
        for c in block_calls(tiny(8, fmt), SHAPE):
            table.blocks[c.key] = BlockEntry(c.block, c.label, ms if c.inputs[0].layout == fmt else 1.0, 0.0, 5)
    contiguous = predict_latency(tiny(8), table, SHAPE)
    nhwc = predict_latency(tiny(8, "channels_last"), table, SHAPE)
    assert contiguous.ms == pytest.approx(6.0) and contiguous.measured_now == 0 and not contiguous.calibrated
    assert nhwc.memory_format == "channels_last" and nhwc.ms < contiguous.ms  # the table says NHWC blocks are faster
    assert contiguous.by_block["conv"] == pytest.approx(2.0)
    with pytest.raises(MissingEntriesError, match="no entry for 3 block call"):
        predict_latency(tiny(12), table, SHAPE)  # conv, act and conv change with the width; the rest do not


def test_missing_entries_are_measured_once_then_cached() -> None:
    clock = FakeClock()
    runner = FakeRunner(clock)
    table = LatencyTable(KEY)
    first = predict_latency(tiny(8), table, SHAPE, runner=runner, settings=FAST, timer=clock)
    assert first.measured_now == 6 and runner.prepared == ["block"] * 6
    expected = sum(block_cost_s(c.module, c.make_inputs()) for c in block_calls(tiny(8), SHAPE)) * 1000
    assert first.blocks_ms == pytest.approx(expected)
    again = predict_latency(tiny(8), table, SHAPE, runner=runner, settings=FAST, timer=clock)
    assert again.measured_now == 0 and len(runner.prepared) == 6 and again.ms == first.ms


def test_calibration_fits_the_overhead_per_memory_format() -> None:
    clock = FakeClock()
    runner = FakeRunner(clock)
    table = LatencyTable(KEY)
    dims = (4, 8, 12, 16, 20, 24, 32, 40)
    models = [(f"d{d}/{fmt}", tiny(d, fmt)) for d in dims for fmt in ("contiguous", "channels_last")]
    report = calibrate(table, models, SHAPE, runner, FAST, timer=clock)
    assert report.models == 16 and report.blocks_total == len(table.blocks) > 0
    for fmt in ("contiguous", "channels_last"):
        fit = table.overhead(fmt)  # the fake hardware adds 2 ms per model
        assert fit.points == 8 and fit.a_ms == pytest.approx(2.0) and fit.b == pytest.approx(1.0)
    p = predict_latency(tiny(24), table, SHAPE, runner=runner, settings=FAST, timer=clock)
    assert p.calibrated and p.overhead_ms == pytest.approx(2.0)
    with pytest.raises(LatencyTableError, match="belongs to"):
        calibrate(LatencyTable(DeviceKey("x", "y", 1, "z")), models[:1], SHAPE, runner, FAST, timer=clock)


def test_calibrate_command_builds_a_table_for_a_tiny_spec_and_summary_predicts(tmp_path, capsys) -> None:
    from srblocks.cli import main

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY_SPEC))
    table = tmp_path / "table.json"
    assert main(["latency", "calibrate", "--spec", str(spec), "--lr-size", "16x16", "--threads", "1", "--quick",
                 "-o", str(table)]) == 0
    captured = capsys.readouterr()
    assert "[blocks 1/" in captured.err and "[models 2/2]" in captured.err  # progress
    loaded = load_table(table, expect=TorchRunner("cpu", 1).key())
    assert len(loaded.blocks) == 12 and {p.memory_format for p in loaded.points} == {"contiguous", "channels_last"}
    assert all(math.isfinite(e.ms) and e.ms > 0 for e in loaded.blocks.values())
    assert main(["summary", str(spec), "--lr-size", "16x16", "--threads", "1", "--latency", "predicted",
                 "--latency-table", str(table), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["latency_predicted_ms"] > 0 and data["latency_measured_now"] == 0 and "latency_ms" not in data
    assert main(["summary", str(spec), "--lr-size", "16x16", "--threads", "1", "--latency", "--runs", "1",
                 "--json"]) == 0  # a bare --latency still measures
    data = json.loads(capsys.readouterr().out)
    assert data["latency_ms"] > 0 and "latency_predicted_ms" not in data
    assert main(["summary", str(spec), "--lr-size", "16x16", "--threads", "3", "--latency", "predicted",
                 "--latency-table", str(tmp_path / "none.json")]) == 2
    assert "no latency table" in capsys.readouterr().err
    assert main(["latency", "calibrate"]) == 2


def test_calibrate_on_a_search_template_measures_its_samples_and_covers_more_blocks(tmp_path, capsys) -> None:
    from srblocks.cli import main

    from test_search import TINY

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY))
    table = tmp_path / "table.json"
    args = ["latency", "calibrate", "--search", str(space), "--memory-format", "contiguous", "--threads", "1",
            "--quick", "-o", str(table)]
    assert main([*args, "--samples", "1", "--cover", "0"]) == 0
    first = load_table(table)
    assert {p.name for p in first.points} == {"tiny_safmn_small/contiguous", "tiny_safmn_sample0/contiguous"}
    assert main([*args, "--samples", "1", "--cover", "6"]) == 0  # reruns extend the table
    second = load_table(table)
    assert set(first.blocks) < set(second.blocks) and len(second.points) == 4


# -- the search --------------------------------------------------------------------------------------------------

def _calibrated(tmp_path: Path, clock: FakeClock) -> BudgetLatency:
    runner = FakeRunner(clock)
    estimator = BudgetLatency(runner, tmp_path / "table.json", settings=FAST, timer=clock)
    calibrate(estimator.table, [(f"d{d}", tiny(d)) for d in (4, 8, 16, 20, 24, 28, 32, 40)], SHAPE, runner, FAST,
              timer=clock)
    runner.prepared.clear()
    return estimator


def test_budget_uses_the_prediction_and_measures_only_near_the_boundary(tmp_path) -> None:
    from srblocks.search import evaluate_candidate, parse_budgets

    clock = FakeClock()
    estimator = _calibrated(tmp_path, clock)
    predicted = predict_latency(tiny(12), estimator.table, SHAPE, runner=estimator.runner, settings=FAST,
                                timer=clock).ms
    assert estimator.table.overhead("contiguous").band == pytest.approx(0.03)  # an exact fit: the smallest band
    spec = spec_with(variables={"scale": 2, "dim": 12}, memory_format="contiguous")  # the calibrated layout
    cases = {"far below": 10 * predicted, "near": 1.02 * predicted, "far above": predicted / 10}
    results = {}
    for label, limit in cases.items():
        runner_calls = len(estimator.runner.prepared)
        _, metrics, violations = evaluate_candidate(spec, parse_budgets({"latency": limit}), lr_size=(16, 16),
                                                    threads=1, latency_runs=1, need_latency=False, latency=estimator)
        results[label] = (metrics, violations, estimator.runner.prepared[runner_calls:])
    metrics, violations, ran = results["far below"]
    assert "model" not in ran and "latency_measured" not in metrics and violations["latency"] < 0
    assert metrics["latency"] == metrics["latency_predicted"] == pytest.approx(predicted)
    metrics, violations, ran = results["near"]
    assert ran == ["model"] and metrics["latency_measured"] == pytest.approx(predicted)  # measured for real
    assert metrics["latency"] == metrics["latency_measured"] and metrics["latency_band"] == pytest.approx(0.03)
    metrics, violations, ran = results["far above"]
    assert "model" not in ran and violations["latency"] > 0 and "latency_measured" not in metrics
    assert len(estimator.table.points) == 9  # the near-boundary measurement became a calibration point
    assert len(load_table(tmp_path / "table.json").points) == 9  # and was saved
    before = len(estimator.runner.prepared)
    _, metrics, _ = evaluate_candidate(spec, parse_budgets(None), lr_size=(16, 16), threads=1, latency_runs=1,
                                       need_latency=True, latency=estimator)  # a latency objective, no budget
    assert metrics["latency"] == pytest.approx(predicted) and "latency_measured" not in metrics
    assert "model" not in estimator.runner.prepared[before:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_runner_measures_on_the_gpu_with_its_own_device_key() -> None:
    runner = TorchRunner("cuda")
    assert runner.key().backend == "torch-cuda" and runner.key().threads is None
    table = LatencyTable(runner.key())
    model = tiny(8)
    p = predict_latency(model, table, SHAPE, runner=runner, settings=FAST)
    assert p.measured_now == 6 and all(e.ms > 0 for e in table.blocks.values())
    assert all(t.device.type == "cpu" for t in model.parameters())  # blocks are copied to the GPU, not moved


def test_search_with_a_latency_budget_records_predicted_and_measured_latency(tmp_path, monkeypatch) -> None:
    from srblocks.search import SearchOptions, run_search
    from srblocks.search import runner as search_runner

    from test_search import TINY

    clock = FakeClock()
    estimator = _calibrated(tmp_path, clock)
    monkeypatch.setattr(search_runner, "make_budget_latency", lambda options, settings: estimator)
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["space"]["memory_format"] = "contiguous"  # the layout _calibrated measured
    space_model = srblocks.build_model({**data["space"], "variables": {"scale": 2, "dim": 8, "n_blocks": 1,
                                                                       "ffn_scale": 2.0}}).eval()
    limit = predict_latency(space_model, estimator.table, SHAPE, runner=estimator.runner, settings=FAST,
                            timer=clock).ms * 1.02  # the seed (dim 8, 1 block) is within the band of the budget
    data["search"]["budgets"] = {"latency": f"{limit}ms"}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    study = run_search(SearchOptions(space_path=str(path), out_dir=str(tmp_path / "out"), trials=5, progress=False))
    evaluated = [t for t in study.trials if "latency_predicted" in t.user_attrs and "duplicate_of" not in t.user_attrs]
    assert evaluated
    for t in evaluated:
        a = t.user_attrs
        near = abs(a["latency_predicted"] - limit) <= a["latency_band"] * a["latency_predicted"]
        assert ("latency_measured" in a) == near, (t.number, a)
        if "over budget: latency" in str(a.get("pruned_reason")):
            assert ("(predicted, band +-" in a["pruned_reason"]) == (not near)
        assert a["latency"] == a.get("latency_measured", a["latency_predicted"])
    assert any("latency_measured" in t.user_attrs for t in evaluated)  # the seed, next to the budget
    assert any("(predicted, band +-" in str(t.user_attrs.get("pruned_reason")) for t in evaluated)  # larger ones
