"""Search outputs: the winners as loadable specs, a table of all trials, and plots (re-rendered from storage).

``OUT_DIR/best.yaml`` (single objective) or ``OUT_DIR/pareto/*.yaml`` (multi-objective) load with
``srblocks.build_model``; their ``description`` says where they come from (space, trial, objective value with
units, measured params/MACs/memory/latency, budgets, whether it is a paper model). ``trials.csv``/``trials.json``
list every trial with state, an ``outcome`` in words (prune and failure reasons in units), values, parameters,
measured metrics, constraint values, duplicates and retries, and the worker that ran it. Plots (matplotlib):

* ``history.png``: Optuna's optimisation history, the axis named by the objective ("PSNR (dB)");
* ``pareto.png``: objective against params (single objective) or Optuna's Pareto-front plot (multi-objective),
  with the trials pruned over budget, stopped by the pruner, failed or infeasible drawn with their own markers,
  the budget as a line, and the paper models (trials with the ``seed`` user attr) labelled even when pruned;
* ``budgets.png``: one panel per budget: objective against the measured metric, budget line, same markers;
* ``importances.png``: Optuna's parameter importances.

Every file is written atomically (:func:`srblocks.fileio.atomic_write`): an interrupted export leaves the previous
file or none, never a truncated spec, table or plot.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

import optuna
import yaml

from ..fileio import atomic_path, atomic_write, write_text_atomic
from .budgets import METRIC_LABELS, describe_check, format_metric

__all__ = ["export_results", "trial_rows", "winners", "budget_checks", "outcome", "objective_names",
           "format_value"]

METRIC_KEYS = ("params", "macs", "memory", "latency", "latency_predicted", "latency_measured", "acts", "zero_cost",
               "psnr")
_BUDGET_ORDER = ("params", "macs", "memory", "latency")
_OBJECTIVE_LABELS = {"psnr": "PSNR (dB)", "zero-cost": "zero-cost proxy (grad norm)", "pareto": "PSNR (dB)"}
TS = optuna.trial.TrialState


def objective_names(study: optuna.Study) -> list[str]:
    """Axis names of the study's objective values, e.g. ``["PSNR (dB)", "latency (ms)"]``."""
    objective = study.user_attrs.get("objective", "psnr")
    names = [_OBJECTIVE_LABELS.get(objective, "objective")]
    if len(study.directions) > 1:
        second = study.user_attrs.get("pareto_second", "latency")
        names.append(METRIC_LABELS.get(second, second))
    return names


def _second_metric(study: optuna.Study) -> str | None:
    return study.user_attrs.get("pareto_second", "latency") if len(study.directions) > 1 else None


def _in_unit(metric: str, value: float) -> float:
    """A stored metric (count, bytes, ms) in the unit of :data:`METRIC_LABELS`."""
    return {"macs": 1e-9, "memory": 2.0**-20}.get(metric, 1.0) * value


def format_value(study: optuna.Study, values: Sequence[float] | None) -> str:
    """Objective values with their units: ``"PSNR 24.31 dB"``, ``"zero-cost proxy 3.21"``,
    ``"PSNR 24.31 dB, latency 31.2 ms"``."""
    if not values:
        return ""
    objective = study.user_attrs.get("objective", "psnr")
    first = f"PSNR {values[0]:.2f} dB" if objective in ("psnr", "pareto") else f"zero-cost proxy {values[0]:.4g}"
    second = _second_metric(study)
    if second is not None and len(values) > 1:
        return f"{first}, {second} {format_metric(second, values[1])}"
    return first


def budget_checks(trial: optuna.trial.FrozenTrial) -> list[tuple[str, float, float]]:
    """(metric, measured, limit) for every budget measured on the trial (from its constraints: measured - limit)."""
    out = []
    for name in _BUDGET_ORDER:
        c = trial.system_attrs.get(f"constraints:{name}")
        measured = trial.user_attrs.get(name)
        if c is not None and measured is not None:
            out.append((name, float(measured), float(measured) - float(c)))
    return out


def _over_budget(trial: optuna.trial.FrozenTrial) -> list[str]:
    return [describe_check(n, m, lim) for n, m, lim in budget_checks(trial) if m > lim]


def outcome(study: optuna.Study, trial: optuna.trial.FrozenTrial, retried_as: dict[int, int] | None = None) -> str:
    """What happened to a trial, in words and units (``"pruned: over budget: memory 64.9 MiB > 60 MiB"``)."""
    dup = trial.user_attrs.get("duplicate_of")
    same = f" (same parameters as trial {dup}, not re-evaluated)" if dup is not None else ""
    if trial.state == TS.COMPLETE:
        over = _over_budget(trial)
        return (f"complete: {format_value(study, trial.values)}" + same
                + (f"; infeasible: {', '.join(over)}" if over else ""))
    if trial.state == TS.PRUNED:
        reason = trial.user_attrs.get("pruned_reason") or "pruned"
        over = _over_budget(trial)
        if reason.startswith("over budget") and over and "(measured in trial" not in reason:
            reason = f"over budget: {', '.join(over)}"  # also for studies recorded before reasons had units
        return f"pruned: {reason}"
    if trial.state == TS.FAIL:
        if retried_as and trial.number in retried_as:
            return f"failed: {trial.user_attrs.get('interrupted', 'its worker died')} (retried as trial " \
                   f"{retried_as[trial.number]})"
        return f"failed: {trial.user_attrs.get('failure') or trial.user_attrs.get('interrupted') or 'error'}"
    return trial.state.name.lower()


def _retried_as(trials: Sequence[optuna.trial.FrozenTrial]) -> dict[int, int]:
    out = {}
    for t in trials:
        history = t.system_attrs.get("retry_history") or []
        if history:
            out[history[-1]] = t.number
    return out


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One flat dict per trial (JSON-serialisable). Units: params/MACs counts, memory bytes, latency ms,
    ``duration_s`` seconds."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried_as(trials)
    rows = []
    for t in trials:
        constraints = {k.split(":", 1)[1]: v for k, v in t.system_attrs.items() if k.startswith("constraints:")}
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "outcome": outcome(study, t, retried),
            "values": t.values,
            "seed": t.user_attrs.get("seed"),
            **{f"param:{k}": v for k, v in t.params.items()},
            **{k: t.user_attrs.get(k) for k in METRIC_KEYS},
            **{f"constraint:{k}": v for k, v in constraints.items()},
            "feasible": all(v <= 0 for v in constraints.values()) if constraints else None,
            "failure": t.user_attrs.get("failure"),
            "pruned_reason": t.user_attrs.get("pruned_reason"),
            "duplicate_of": t.user_attrs.get("duplicate_of"),
            "retry_of": t.system_attrs.get("failed_trial"),
            "interrupted": t.user_attrs.get("interrupted"),
            "host": t.user_attrs.get("host"),
            "pid": t.user_attrs.get("pid"),
            "started": t.user_attrs.get("started"),
            "duration_s": t.duration.total_seconds() if t.duration else None,
        })
    return rows


def _feasible(t: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for k, v in t.system_attrs.items() if k.startswith("constraints:"))


def winners(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Feasible best trial(s): the best one (single objective) or the Pareto set (multi-objective)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TS.COMPLETE,)) if _feasible(t)]
    if not complete:
        return []
    if len(study.directions) == 1:
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        return [max(complete, key=lambda t: t.value if maximize else -t.value)]
    best = {t.number for t in study.best_trials}
    return [t for t in complete if t.number in best]


def _paper_model(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str | None:
    """The paper model (``seed`` label) this trial is, by label, by duplicate or by identical parameters."""
    if trial.user_attrs.get("seed"):
        return trial.user_attrs["seed"]
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("seed") and (t.number == trial.user_attrs.get("duplicate_of") or t.params == trial.params):
            return t.user_attrs["seed"]
    return None


def _spec_of(study: optuna.Study, trial: optuna.trial.FrozenTrial, name: str) -> dict[str, Any]:
    spec = dict(trial.user_attrs["spec"])
    spec["name"] = name
    attrs = trial.user_attrs
    lr = study.user_attrs.get("lr_size")
    measured = ", ".join(f"{label} {format_metric(k, attrs[k])}" for k, label in
                         (("params", "params"), ("macs", "MACs"), ("memory", "peak memory"),
                          ("latency", "latency" if attrs.get("latency_measured") is not None
                           or attrs.get("latency_predicted") is None else "predicted latency"))
                         if attrs.get(k) is not None)
    budgets = attrs.get("budgets", study.user_attrs.get("budgets")) or {}
    budget_text = ", ".join(f"{k} <= {format_metric(k, v)}" for k, v in budgets.items()) or "none"
    paper = _paper_model(study, trial)
    seeds = sorted({t.user_attrs["seed"] for t in study.get_trials(deepcopy=False) if t.user_attrs.get("seed")})
    paper_text = (f"it is the paper model {paper!r} (a seed of the space)" if paper else
                  f"not one of the paper models seeded ({', '.join(seeds)})" if seeds else "no paper models seeded")
    n_done = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
    objective = study.user_attrs.get("objective", "psnr")
    how = {"psnr": "held-out PSNR after the space's short proxy training",
           "zero-cost": "gradient-norm proxy at initialisation (no training)",
           "pareto": "held-out PSNR after proxy training, and the second objective"}.get(objective, objective)
    spec["description"] = (
        f"Found by srblocks search in {study.user_attrs.get('space', '?')} (study {study.study_name!r}): trial "
        f"{trial.number} of {n_done} finished, {format_value(study, trial.values)} ({how}). Measured on the deploy "
        f"form at LR {lr[0]}x{lr[1]}: {measured}. " if lr else
        f"Found by srblocks search in {study.user_attrs.get('space', '?')} (study {study.study_name!r}): trial "
        f"{trial.number} of {n_done} finished, {format_value(study, trial.values)} ({how}). Measured on the deploy "
        f"form: {measured}. ")
    spec["description"] += f"Budgets: {budget_text}. {paper_text[0].upper()}{paper_text[1:]}."
    spec["expected"] = [{"params": int(attrs["params"]), "reference": "measured during the search"}]
    return spec


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})


def _savefig(fig: Any, path: Path) -> None:
    """``fig.savefig`` through :func:`srblocks.fileio.atomic_path` (a temporary file of the same name, renamed)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")


# -- plots ------------------------------------------------------------------------------------------------------------

def _kind(t: optuna.trial.FrozenTrial) -> str:
    if t.state == TS.COMPLETE:
        return "evaluated" if _feasible(t) else "infeasible"
    if t.state == TS.PRUNED:
        return "over budget" if str(t.user_attrs.get("pruned_reason", "")).startswith("over budget") or \
            not t.intermediate_values else "stopped by pruner"
    if t.state == TS.FAIL:
        return "failed"
    return "other"


_STYLE = {  # kind -> (marker, color, legend label)
    "evaluated": ("o", "tab:blue", "evaluated"),
    "infeasible": ("s", "tab:gray", "infeasible (over a budget)"),
    "stopped by pruner": ("v", "tab:purple", "stopped by the pruner (last PSNR)"),
    "over budget": ("x", "tab:red", "over budget, not trained (drawn below the data)"),
    "failed": ("X", "black", "failed (drawn below the data)"),
}


def _y_of(study: optuna.Study, t: optuna.trial.FrozenTrial) -> float | None:
    if t.state == TS.COMPLETE:
        return t.values[0]
    if t.intermediate_values:
        return t.intermediate_values[max(t.intermediate_values)]
    return None


def _x_of(study: optuna.Study, t: optuna.trial.FrozenTrial, metric: str) -> float | None:
    second = _second_metric(study)
    if metric == second and t.state == TS.COMPLETE and len(t.values) > 1:
        return _in_unit(metric, t.values[1])
    value = t.user_attrs.get(metric)
    return _in_unit(metric, value) if value is not None else None


def _scatter_trials(ax: Any, study: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial], metric: str,
                    best: set[int], skip_complete: bool = False) -> int:
    """Draw every trial that has ``metric`` measured; returns how many could not be placed (no measurement)."""
    import numpy as np

    placed, missing, unmeasured_seeds = [], 0, []
    for t in trials:
        if t.state not in (TS.COMPLETE, TS.PRUNED, TS.FAIL):
            continue
        x = _x_of(study, t, metric)
        if x is None:
            missing += 1
            if t.user_attrs.get("seed"):
                unmeasured_seeds.append(t)
            continue
        placed.append((t, x, _y_of(study, t)))
    if unmeasured_seeds:  # paper models are shown even when pruned before this metric was measured: right margin
        xs = [x for _, x, _ in placed]
        limit = (study.user_attrs.get("budgets") or {}).get(metric)
        right = max(xs + ([_in_unit(metric, limit)] if limit is not None else []) or [1.0]) * 1.1
        placed += [(t, right, _y_of(study, t)) for t in unmeasured_seeds]
        ax.text(0.99, 0.01, f"paper models at the right edge: {metric} not measured", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7, color="0.4")
    ys = [y for _, _, y in placed if y is not None and math.isfinite(y)]
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 0.0)
    span = (hi - lo) or max(abs(hi), 1.0) * 0.1
    strip = lo - 0.15 * span  # where trials without an objective value are drawn
    if ys and any(y is None for _, _, y in placed):
        ax.axhline(lo - 0.07 * span, color="0.8", lw=0.8, zorder=0)
    if not ys:
        ax.set_yticks([])
        ax.set_ylim(strip - span, strip + span)
        ax.text(0.01, 0.98, "no trial has an objective value yet", transform=ax.transAxes, va="top", fontsize=8)
    rng = np.random.default_rng(0)
    for kind, (marker, color, label) in _STYLE.items():
        pts = [(x, y if y is not None else strip + rng.uniform(-0.02, 0.02) * span) for t, x, y in placed
               if _kind(t) == kind and not (skip_complete and t.state == TS.COMPLETE)]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, c=color, label=label, alpha=0.8,
                       zorder=2)
    winners_pts = [(x, y) for t, x, y in placed if t.number in best and y is not None]
    if winners_pts and not skip_complete:
        ax.scatter(*zip(*winners_pts), marker="o", s=90, facecolors="none", edgecolors="tab:red", linewidths=2,
                   label="best" if len(study.directions) == 1 else "Pareto front", zorder=3)
    seeds = [(t, x, y) for t, x, y in placed if t.user_attrs.get("seed") and t.number not in _superseded_numbers(trials)]
    for k, (t, x, y) in enumerate(seeds):
        yy = y if y is not None else strip
        ax.scatter([x], [yy], marker="*", s=220, c="tab:orange", edgecolors="k", linewidths=0.5,
                   label="paper model" if k == 0 else None, zorder=4)
        why = outcome(study, t)
        text = t.user_attrs["seed"] if y is not None and t.state == TS.COMPLETE else \
            f"{t.user_attrs['seed']}: {why.split(': ', 1)[-1].removeprefix('over budget: ')}"
        ax.annotate(text, (x, yy), textcoords="offset points", xytext=(6, 8 + 14 * k), fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6})
    if metric == "params":
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    return missing


def _superseded_numbers(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _budget_line(ax: Any, study: optuna.Study, metric: str) -> None:
    limit = (study.user_attrs.get("budgets") or {}).get(metric)
    if limit is not None:
        ax.axvline(_in_unit(metric, limit), color="tab:red", ls="--", lw=1.2,
                   label=f"{metric} budget {format_metric(metric, limit)}", zorder=1)


def _objective_vs(study: optuna.Study, metric: str, out: Path, name: str) -> None:
    import matplotlib.pyplot as plt

    trials = study.get_trials(deepcopy=False)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    missing = _scatter_trials(ax, study, trials, metric, {t.number for t in winners(study)})
    _budget_line(ax, study, metric)
    ax.set_xlabel(METRIC_LABELS.get(metric, metric))
    ax.set_ylabel(objective_names(study)[0])
    title = f"{study.study_name}: {objective_names(study)[0]} vs {METRIC_LABELS.get(metric, metric)}"
    ax.set_title(title + (f"\n({missing} trials not shown: {metric} not measured)" if missing else ""), fontsize=9)
    ax.legend(fontsize=7, loc="best")
    _savefig(fig, out / name)
    plt.close(fig)


def _pareto_front(study: optuna.Study, out: Path) -> None:
    import matplotlib.pyplot as plt

    second = _second_metric(study) or "latency"
    names = objective_names(study)
    ax = optuna.visualization.matplotlib.plot_pareto_front(
        study, target_names=[names[1], names[0]], targets=lambda t: (_in_unit(second, t.values[1]), t.values[0]))
    _scatter_trials(ax, study, study.get_trials(deepcopy=False), second, set(), skip_complete=True)
    _budget_line(ax, study, second)
    ax.legend(fontsize=7, loc="best")
    _savefig(ax.figure, out / "pareto.png")
    plt.close(ax.figure)


def _budget_panels(study: optuna.Study, out: Path) -> bool:
    import matplotlib.pyplot as plt

    budgets = [k for k in _BUDGET_ORDER if k in (study.user_attrs.get("budgets") or {})]
    if not budgets:
        return False
    trials = study.get_trials(deepcopy=False)
    best = {t.number for t in winners(study)}
    fig, axes = plt.subplots(1, len(budgets), figsize=(6 * len(budgets), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], budgets):
        missing = _scatter_trials(ax, study, trials, metric, best)
        _budget_line(ax, study, metric)
        ax.set_xlabel(METRIC_LABELS[metric])
        ax.set_ylabel(objective_names(study)[0])
        ax.set_title(f"{metric} budget" + (f" ({missing} trials not measured: pruned at an earlier budget or "
                                           f"failed)" if missing else ""), fontsize=9)
        ax.legend(fontsize=7, loc="best")
    _savefig(fig, out / "budgets.png")
    plt.close(fig)
    return True


def _plots(study: optuna.Study, out: Path) -> list[str]:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Some regimes for parameter")
    import matplotlib.pyplot as plt

    made, problems = [], []
    names = objective_names(study)
    complete = study.get_trials(deepcopy=False, states=(TS.COMPLETE,))
    if complete:
        if len(study.directions) == 1:
            ax = optuna.visualization.matplotlib.plot_optimization_history(study, target_name=names[0])
        else:
            ax = optuna.visualization.matplotlib.plot_optimization_history(
                study, target=lambda t: t.values[0], target_name=names[0])
        _savefig(ax.figure, out / "history.png")
        plt.close(ax.figure)
        made.append("history.png")
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    if finished:
        try:
            if len(study.directions) > 1 and complete:
                _pareto_front(study, out)
            else:
                _objective_vs(study, _second_metric(study) or "params", out, "pareto.png")
            made.append("pareto.png")
        except (RuntimeError, ValueError) as exc:
            problems.append(f"pareto: {exc}")
        if _budget_panels(study, out):
            made.append("budgets.png")
    if len(complete) >= 3 and len(study.directions) == 1:
        try:
            ax = optuna.visualization.matplotlib.plot_param_importances(study, target_name=names[0])
            _savefig(ax.figure, out / "importances.png")
            plt.close(ax.figure)
            made.append("importances.png")
        except (RuntimeError, ValueError) as exc:  # e.g. every trial sampled the same values
            problems.append(f"importances: {exc}")
    write_text_atomic(out / "plots.txt", "\n".join(made + problems) + "\n")
    return made


def export_results(study: optuna.Study, out_dir: str | Path) -> dict[str, Any]:
    """Write winners, trial table and plots into ``out_dir``; returns a summary dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    write_text_atomic(out / "trials.json", json.dumps(rows, indent=1, default=str))
    _write_csv(rows, out / "trials.csv")
    best = winners(study)
    written = []
    if len(study.directions) == 1 and best:
        path = out / "best.yaml"
        write_text_atomic(path, yaml.safe_dump(_spec_of(study, best[0], f"{study.study_name}_best"),
                                               sort_keys=False))
        written.append(str(path))
    elif best:
        (out / "pareto").mkdir(exist_ok=True)
        for t in best:
            path = out / "pareto" / f"trial{t.number}.yaml"
            write_text_atomic(path, yaml.safe_dump(_spec_of(study, t, f"{study.study_name}_trial{t.number}"),
                                                   sort_keys=False))
            written.append(str(path))
    plots = _plots(study, out)
    states: dict[str, int] = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    summary = {"study": study.study_name, "trials": len(rows), "states": states, "winners": written, "plots": plots,
               "objective": objective_names(study), "budgets": study.user_attrs.get("budgets"),
               "duplicates": sum(1 for r in rows if r["duplicate_of"] is not None),
               "retried": sum(1 for r in rows if r["retry_of"] is not None),
               "paper_models": [{"seed": r["seed"], "number": r["number"], "state": r["state"],
                                 "outcome": r["outcome"]} for r in rows if r["seed"]],
               "best": [{"number": t.number, "values": t.values, "seed": _paper_model(study, t),
                         "params": t.user_attrs.get("params"), "outcome": outcome(study, t)} for t in best]}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1, default=str))
    return summary
