"""Search: sampling, validation of spaces, budgets pruned before training, constraints, resume, workers, export."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml

import srblocks
from srblocks import SpecError
from srblocks.search import (FixedSampler, SearchOptions, evaluate_candidate, export_results, load_search_space,
                             parse_budgets, run_search)
from srblocks.search.space import OptunaSampler

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny_safmn",
    "search": {"objective": "zero-cost", "lr_size": [16, 16], "budgets": {"params": "60K"},
               "train_iters": 2, "train_batch_size": 2, "train_patch_size": 8, "validate_every": 1,
               "seeds": {"small": {"variables.dim": 8, "variables.n_blocks": 1}}},
    "space": {"extends": "safmn", "name": "tiny_safmn",
              "variables": {"scale": 2, "dim": {"choice": [8, 12, 16, 32]}, "n_blocks": {"int": [1, 3]},
                            "ffn_scale": 2.0}},
}


def _write(tmp_path: Path, data: dict, name: str = "space.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _options(tmp_path: Path, space: str, trials: int, **kw) -> SearchOptions:
    return SearchOptions(space_path=space, out_dir=str(tmp_path / "out"), trials=trials, progress=False, **kw)


def test_shipped_spaces_load_and_contain_the_paper_model() -> None:
    for path in ("search/hybrid_x4.yaml", "search/safmn_width_depth.yaml"):
        space = load_search_space(REPO / path)
        spec = space.sample(FixedSampler(space.settings.seeds["safmn"], strict=False))
        model = srblocks.build_model(spec)
        assert sum(p.numel() for p in model.parameters()) == 239520  # SAFMN x4 is a point of both spaces
    hybrid = load_search_space(REPO / "search/hybrid_x4.yaml")
    assert {"stage1.block", "stage1.depth", "stage1.hfab_mid"} <= set(hybrid.directives)
    assert set(hybrid.directives["stage1.block"].labels) == {"fmm", "erb", "hpub", "hpi_block", "rfdb", "scpa"}


def test_hybrid_image_skip_adds_the_bilinear_upsampled_input() -> None:
    """With ``image_skip`` the output is the pixel-shuffle tail plus PAN's bilinear upsampling of the input; the
    PAN-like seed is PAN's trunk of 16 SCPAs at dim 36."""
    space = load_search_space(REPO / "search/hybrid_x4.yaml")
    pan_like = space.settings.seeds["pan_like"]
    model = srblocks.build_model(space.sample(FixedSampler(pan_like, strict=False))).eval()
    assert sum(type(m).__name__ == "SCPA" for m in model.modules()) == 16
    no_skip = srblocks.build_model(space.sample(FixedSampler({**pan_like, "variables.image_skip": False},
                                                             strict=False))).eval()
    no_skip.load_state_dict(model.state_dict())  # the skip has no weights: same network otherwise
    x = torch.rand(1, 3, 12, 20)
    with torch.no_grad():
        y, tail = model(x), no_skip(x)
    bilinear = torch.nn.functional.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(y, tail + bilinear, rtol=0, atol=1e-6)
    assert not any(name.startswith("image_skip") for name, _ in no_skip.named_modules())


def test_hybrid_stages_have_their_own_width() -> None:
    """A stage narrower than the head costs two 1x1 projections; at the head's width the projections vanish."""
    space = load_search_space(REPO / "search/hybrid_x4.yaml")
    seed = dict(space.settings.seeds["safmn"])
    same = srblocks.build_model(space.sample(FixedSampler(seed, strict=False)))
    assert same.stage2.proj.conv is None and same.body_out.conv is None
    narrow = srblocks.build_model(space.sample(FixedSampler({**seed, "variables.stage2_dim": 24}, strict=False)))
    assert narrow.stage2.proj.conv.weight.shape == (24, 36, 1, 1)
    assert narrow.body_out.conv.weight.shape == (36, 24, 1, 1)
    assert narrow(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)


def test_optuna_sampling_gives_valid_specs_with_conditional_parameters() -> None:
    space = load_search_space(REPO / "search/hybrid_x4.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(8):
        trial = study.ask()
        spec = space.sample(OptunaSampler(trial))
        srblocks.build_model(spec)
        if trial.params["stage1.block"] != "erb":
            assert "stage1.hfab_mid" not in trial.params
        study.tell(trial, 0.0)


@pytest.mark.parametrize("bad,message", [
    ({"dim": {"choice": []}}, "non-empty list"),
    ({"dim": {"int": [8.5, 16]}}, "integer bounds"),
    ({"dim": {"int": [16, 8]}}, "is empty"),
])
def test_malformed_directives_are_rejected_with_their_path(tmp_path, bad, message) -> None:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["space"]["variables"].update(bad)
    with pytest.raises(SpecError, match=message) as info:
        load_search_space(_write(tmp_path, data))
    assert info.value.path == "variables.dim"


def test_unknown_seed_parameter_is_rejected(tmp_path) -> None:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["search"]["seeds"] = {"x": {"variables.width": 3}}
    with pytest.raises(SpecError, match="unknown parameter 'variables.width'"):
        load_search_space(_write(tmp_path, data))


def test_space_whose_options_cannot_build_is_rejected_up_front(tmp_path) -> None:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["space"]["variables"]["dim"] = {"choice": [8, 10]}  # SAFM needs dim divisible by 4
    space = load_search_space(_write(tmp_path, data))
    with pytest.raises(SpecError, match="variables.dim=10") as info:
        space.check(srblocks.build_model)
    assert info.value.path == "variables.dim"


def test_budgets_parse_with_units() -> None:
    b = parse_budgets("params=250K,memory=60MB,latency=40ms,macs=1.5G")
    assert (b.params, b.memory, b.latency, b.macs) == (250e3, 60 * 2**20, 40.0, 1.5e9)
    with pytest.raises(ValueError, match="unknown budget"):
        parse_budgets("flops=3G")
    with pytest.raises(ValueError, match="unknown unit"):
        parse_budgets("memory=3 parsecs")


def test_over_budget_candidate_is_rejected_in_milliseconds_before_any_training() -> None:
    spec = srblocks.load_spec("safmn_l").raw
    recorded = {}
    start = time.perf_counter()
    _, metrics, violations = evaluate_candidate(spec, parse_budgets("params=250K,latency=1ms"), lr_size=(180, 320),
                                                threads=1, latency_runs=1, need_latency=False,
                                                record=recorded.__setitem__)
    elapsed = time.perf_counter() - start
    assert violations == {"params": 5600816 - 250e3} == recorded
    assert "latency" not in metrics and "macs" not in metrics  # nothing expensive ran
    assert elapsed < 2.0


def test_study_records_constraints_prunes_and_fails_with_reasons(tmp_path) -> None:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["space"]["variables"]["dim"] = {"choice": [8, 32]}  # dim 32 is over the 60K budget from n_blocks >= 2
    space = _write(tmp_path, data)
    study = run_search(_options(tmp_path, space, trials=10, seed=3))
    trials = study.get_trials()
    assert len(trials) == 10
    for t in trials:
        value = t.system_attrs["constraints:params"]
        assert value == pytest.approx(t.user_attrs["params"] - 60e3)
        assert (t.state == optuna.trial.TrialState.PRUNED) == (value > 0)
        assert (t.state == optuna.trial.TrialState.PRUNED) == ("over budget" in t.user_attrs.get("pruned_reason", ""))
    assert any(t.user_attrs.get("seed") == "small" for t in trials)
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}


def test_failing_candidates_are_recorded_with_their_reason_and_the_study_goes_on(tmp_path) -> None:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["search"]["lr_size"] = [6, 6]  # SAFM's 1/8 pooling level is empty below 8x8: every candidate fails to run
    study = run_search(_options(tmp_path, _write(tmp_path, data), trials=3))
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.FAIL for t in trials)
    assert all("profiling at (6, 6) failed" in t.user_attrs["failure"] for t in trials)


def test_rerunning_resumes_and_exported_best_spec_loads(tmp_path) -> None:
    space = _write(tmp_path, TINY)
    run_search(_options(tmp_path, space, trials=3))
    study = run_search(_options(tmp_path, space, trials=5))
    assert [t.number for t in study.get_trials()] == [0, 1, 2, 3, 4]
    summary = export_results(study, tmp_path / "out")
    best = srblocks.build_model(tmp_path / "out" / "best.yaml")
    assert sum(p.numel() for p in best.parameters()) == summary["best"][0]["params"]
    for name in ("trials.csv", "trials.json", "history.png", "pareto.png"):
        assert (tmp_path / "out" / name).is_file(), name


def test_local_worker_processes_share_one_journal_without_losing_trials(tmp_path) -> None:
    space = _write(tmp_path, TINY)
    study = run_search(_options(tmp_path, space, trials=6), workers=2)
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) and 6 <= len(numbers) <= 7  # at most one overshoot per extra worker
    assert all(t.state.is_finished() for t in trials)
    for t in trials:  # no worker evaluated parameters again that another had finished before it started
        if "duplicate_of" not in t.user_attrs:
            assert not [o.number for o in trials if o.number != t.number and o.params == t.params
                        and o.datetime_complete < t.datetime_start and "duplicate_of" not in o.user_attrs]


def test_pareto_objective_trains_and_exports_front(tmp_path) -> None:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["search"].update(objective="pareto", pareto_objectives=["psnr", "params"])
    space = _write(tmp_path, data)
    study = run_search(_options(tmp_path, space, trials=3))
    assert len(study.directions) == 2
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(t.values[1] == t.user_attrs["params"] for t in complete)
    export_results(study, tmp_path / "out")
    fronts = list((tmp_path / "out" / "pareto").glob("*.yaml"))
    assert fronts and all(srblocks.build_model(p) for p in fronts)


def test_search_cli_runs_resumes_and_search_report_rerenders(tmp_path, capsys) -> None:
    from srblocks.cli import main

    space, out = _write(tmp_path, TINY), tmp_path / "run"
    assert main(["search", space, "--trials", "3", "--budget", "params=60K", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "paper model small" in printed and "wrote" in printed
    assert (out / "study.journal").is_file() and (out / "best.yaml").is_file()
    assert main(["search", space, "--trials", "4", "-o", str(out)]) == 0  # the same command continues the study
    assert "4 trials" in capsys.readouterr().out
    (out / "trials.csv").unlink()
    assert main(["search-report", str(out)]) == 0
    assert (out / "trials.csv").read_text().count("\n") == 5  # header + 4 trials, re-rendered from the journal
    assert srblocks.build_model(out / "best.yaml")(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)


def test_psnr_objective_reports_intermediate_values_and_the_median_pruner_can_stop_trials(tmp_path) -> None:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["search"].update(objective="psnr", train_iters=3, validate_every=1)
    study = run_search(_options(tmp_path, _write(tmp_path, data), trials=6))
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    trained = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE
               or (t.state == optuna.trial.TrialState.PRUNED and not t.user_attrs["pruned_reason"].startswith("over"))]
    assert trained and all(t.intermediate_values for t in trained)
    for t in trained:
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.value == t.intermediate_values[max(t.intermediate_values)]  # the last validation PSNR
        else:
            assert "pruner stopped it" in t.user_attrs["pruned_reason"]


def test_search_data_folder_is_split_like_the_reference_protocol(tmp_path, monkeypatch) -> None:
    """With --data the search trains on the protocol's training split and selects on its held-out images."""
    from conftest import synthetic_images
    from srblocks.data import write_image
    from srblocks.protocols import split_images

    folder = tmp_path / "images"
    folder.mkdir()
    for name, image in synthetic_images(20, (40, 40), seed=1, noise=4):
        write_image(folder / f"{name}.png", image)
    seen = {}

    def fake_train(model, data, *, val_data=None, **kw):
        seen["train"], seen["val"] = [p.name for p in data], [p.name for p in val_data]
        raise srblocks.TrainingDiverged("stop here")

    import importlib

    monkeypatch.setattr(importlib.import_module("srblocks.train"), "train", fake_train)
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["search"].update(objective="psnr")
    run_search(_options(tmp_path, _write(tmp_path, data), trials=1, data=str(folder)))
    train, val = split_images(folder, 15, "ref_x4-v1")
    assert seen["val"] == [p.name for p in val] and len(seen["val"]) == 15
    assert seen["train"] == [p.name for p in train] and not set(seen["train"]) & set(seen["val"])


def test_pruner_setting_selects_multi_fidelity_pruners(tmp_path) -> None:
    from srblocks.search.runner import make_pruner
    from srblocks.search.space import SearchSettings

    assert isinstance(make_pruner(SearchSettings()), optuna.pruners.MedianPruner)
    sha = make_pruner(SearchSettings(pruner="successive_halving", pruner_min_iters=50, pruner_reduction=3))
    assert isinstance(sha, optuna.pruners.SuccessiveHalvingPruner)
    hb = make_pruner(SearchSettings(pruner="hyperband", train_iters=500), None)
    assert isinstance(hb, optuna.pruners.HyperbandPruner) and hb._max_resource == 500
    assert isinstance(make_pruner(SearchSettings(pruner="none")), optuna.pruners.NopPruner)
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data["search"]["pruner"] = "asha"
    with pytest.raises(SpecError, match="pruner"):
        load_search_space(_write(tmp_path, data))


def test_candidates_that_break_the_output_contract_fail_with_the_reason() -> None:
    from srblocks.search.runner import InvalidCandidate

    spec = {"name": "wrong_scale", "variables": {"scale": 4}, "inputs": {"image": 3}, "nodes": [
        {"id": "head", "block": "conv", "args": {"out_channels": 12}},
        {"id": "up", "block": "pixel_shuffle", "args": {"scale": 2}}]}
    with pytest.raises(InvalidCandidate, match=r"output contract.*\(1, 3, 32, 32\).*expected \(1, 3, 64, 64\) at x4"):
        evaluate_candidate(spec, parse_budgets("params=1M"), lr_size=(16, 16), threads=1, latency_runs=1,
                           need_latency=False)


def test_search_command_passes_the_latency_model_choice_and_refuses_contradictions(tmp_path, monkeypatch,
                                                                                  capsys) -> None:
    """--latency-table names the table the prediction uses; --measure-latency measures every candidate instead;
    both together, or a folder as the table, are usage errors (exit 2) before any trial runs."""
    import srblocks.search.runner as runner
    from srblocks.cli import main

    seen = []

    def fake_run_search(options, workers=1):
        seen.append(options)
        raise ValueError("stopped by the test")  # reported as a usage error: no study is run

    monkeypatch.setattr(runner, "run_search", fake_run_search)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY))
    base = ["search", str(space), "--trials", "1", "-o", str(tmp_path / "out")]
    for extra, table, model in ((["--latency-table", str(tmp_path / "t.json")], str(tmp_path / "t.json"), True),
                                (["--measure-latency"], None, False), ([], None, True)):
        assert main([*base, *extra]) == 2
        assert "stopped by the test" in capsys.readouterr().err
        assert (seen[-1].latency_table, seen[-1].latency_model) == (table, model)
    calls = len(seen)
    assert main([*base, "--latency-table", "t.json", "--measure-latency"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main([*base, "--latency-table", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert len(seen) == calls


def test_search_interrupted_before_its_study_exists_says_so(tmp_path, monkeypatch, capsys) -> None:
    import srblocks.search.runner as runner
    from srblocks.cli import main

    def interrupted(options, workers=1):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_search", interrupted)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY))
    assert main(["search", str(space), "--trials", "1", "-o", str(tmp_path / "out")]) == 130
    assert "interrupted before the first trial" in capsys.readouterr().err
