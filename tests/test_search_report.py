"""Search reports a reader understands: reasons in units, named axes, budget lines, pruned/failed trials and paper
models shown, a complete best.yaml description."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib
import optuna
import pytest
import yaml

import srblocks
from srblocks.search import SearchOptions, export_results, run_search
from srblocks.search.budgets import describe_check, format_metric

matplotlib.use("Agg")

SPACE = {
    "name": "tiny_safmn",
    "search": {"objective": "zero-cost", "lr_size": [16, 16], "budgets": {"params": "40K"},
               "seeds": {"small": {"variables.dim": 8, "variables.n_blocks": 1},
                         "big": {"variables.dim": 32, "variables.n_blocks": 3}}},
    "space": {"extends": "safmn", "name": "tiny_safmn",
              "variables": {"scale": 2, "dim": {"choice": [8, 12, 16, 32]}, "n_blocks": {"int": [1, 3]},
                            "ffn_scale": 2.0}},
}


def _run(tmp_path: Path, trials: int = 8, **kw) -> optuna.Study:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return run_search(SearchOptions(space_path=str(path), out_dir=str(tmp_path / "out"), trials=trials,
                                    progress=False, **kw))


def test_budget_checks_read_in_units() -> None:
    assert describe_check("memory", 65.1 * 2**20, 60 * 2**20) == "memory 65.1 MiB > 60 MiB"
    assert describe_check("params", 341066, 250e3) == "params 341,066 > 250,000"
    assert describe_check("params", 239520, 250e3) == "params 239,520 <= 250,000"
    assert describe_check("latency", 41.25, 40) == "latency 41.2 ms > 40 ms"
    assert describe_check("memory", 60.01 * 2**20, 60 * 2**20) == "memory 60.01 MiB > 60.00 MiB"  # not "60 > 60"
    assert format_metric("macs", 13.55e9) == "13.55 G"


def test_pruned_paper_model_is_printed_with_why_in_units(tmp_path, capsys) -> None:
    from srblocks.cli import main

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    assert main(["search", str(path), "--trials", "3", "-o", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    big = next(line for line in printed.splitlines() if "paper model big" in line)
    assert "pruned: over budget: params " in big and " > 40,000" in big
    assert "budgets: params <= 40,000" in printed


def _captured_figures(monkeypatch) -> dict[str, list]:
    """savefig -> {file name: [(xlabel, ylabel, legend texts, annotations, vertical lines' x) per axes]}."""
    figures: dict[str, list] = {}
    original = matplotlib.figure.Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        axes = []
        for ax in fig.axes:
            legend = ax.get_legend()
            axes.append({"x": ax.get_xlabel(), "y": ax.get_ylabel(),
                         "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
                         "notes": [c.get_text() for c in ax.texts],
                         "vlines": [ln.get_xdata()[0] for ln in ax.get_lines() if len(set(ln.get_xdata())) == 1]})
        figures[Path(fname).name] = axes
        return original(fig, fname, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return figures


def test_plots_name_their_axes_draw_budgets_and_show_pruned_trials_and_paper_models(tmp_path, monkeypatch) -> None:
    study = _run(tmp_path)
    assert {t.state for t in study.trials} >= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    figures = _captured_figures(monkeypatch)
    export_results(study, tmp_path / "out")
    history, pareto, budgets = figures["history.png"][0], figures["pareto.png"][0], figures["budgets.png"][0]
    assert history["y"] == "zero-cost proxy (grad norm)"
    for ax in (pareto, budgets):
        assert (ax["x"], ax["y"]) == ("params", "zero-cost proxy (grad norm)")
        assert 40e3 in ax["vlines"] and "params budget 40,000" in ax["legend"]
        assert {"evaluated", "over budget, not trained (drawn below the data)", "paper model"} <= set(ax["legend"])
        assert "small" in ax["notes"]
        assert any(n.startswith("big: params ") and n.endswith("> 40,000") for n in ax["notes"])  # pruned, marked
    for ax in (history, pareto, budgets):
        assert not {"second objective", "objective (PSNR dB or proxy)", "Objective Value"} & {ax["x"], ax["y"]}


def test_pareto_plot_uses_units_and_shows_pruned_trials(tmp_path, monkeypatch) -> None:
    data = yaml.safe_load(yaml.safe_dump(SPACE))
    data["search"].update(objective="pareto", pareto_objectives=["psnr", "memory"], train_iters=2,
                          train_batch_size=2, train_patch_size=8, validate_every=1)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    study = run_search(SearchOptions(space_path=str(path), out_dir=str(tmp_path / "out"), trials=4, progress=False))
    figures = _captured_figures(monkeypatch)
    export_results(study, tmp_path / "out")
    ax = figures["pareto.png"][0]
    assert (ax["x"], ax["y"]) == ("peak memory (MiB)", "PSNR (dB)")
    assert "paper model" in ax["legend"]
    assert any(n.startswith("big: params ") for n in ax["notes"])


def test_best_yaml_description_and_trial_table_are_complete(tmp_path) -> None:
    study = _run(tmp_path)
    summary = export_results(study, tmp_path / "out")
    best = yaml.safe_load((tmp_path / "out" / "best.yaml").read_text())
    number = summary["best"][0]["number"]
    text = best["description"]
    for needed in (f"trial {number} of 8", "tiny_safmn", "zero-cost proxy ", "params ", "MACs ", " G",
                   "peak memory ", " MiB", "LR 16x16", "Budgets: params <= 40,000"):
        assert needed in text, (needed, text)
    assert "paper model" in text
    assert srblocks.build_model(tmp_path / "out" / "best.yaml") is not None
    with (tmp_path / "out" / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned and all(r["outcome"].startswith("pruned: over budget: params ") for r in pruned)
    assert all(r["host"] and r["pid"] and r["started"] for r in rows)
    assert sorted(r["seed"] for r in rows[:2]) == ["big", "small"]


@pytest.mark.parametrize("old_reason", ["over budget: params over by 1.234e+04"])
def test_reports_of_older_studies_still_give_reasons_in_units(tmp_path, old_reason) -> None:
    """A study recorded before reasons had units: the report rebuilds them from the constraint values."""
    from srblocks.search.report import outcome

    study = optuna.create_study(direction="maximize")
    trial = optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                      user_attrs={"params": 262512.0, "pruned_reason": old_reason},
                                      system_attrs={"constraints:params": 12512.0})
    study.add_trial(trial)
    assert outcome(study, study.trials[0]) == "pruned: over budget: params 262,512 > 250,000"
