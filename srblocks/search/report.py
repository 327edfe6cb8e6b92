"""Search outputs: the winners as loadable specs, a table of all trials, and plots (re-rendered from storage).

``OUT_DIR/best.yaml`` (single objective) or ``OUT_DIR/pareto/*.yaml`` (multi-objective) load with
``srblocks.build_model``; ``trials.csv``/``trials.json`` list every trial with state, values, parameters, measured
metrics, constraint values and failure reasons; ``history.png``, ``pareto.png`` (paper seeds marked) and
``importances.png`` are drawn with matplotlib.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import optuna
import yaml

__all__ = ["export_results", "trial_rows", "winners"]

METRIC_KEYS = ("params", "macs", "memory", "latency", "acts", "zero_cost", "psnr")


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One flat dict per trial (JSON-serialisable)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        constraints = {k.split(":", 1)[1]: v for k, v in t.system_attrs.items() if k.startswith("constraints:")}
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "values": t.values,
            "seed": t.user_attrs.get("seed"),
            **{f"param:{k}": v for k, v in t.params.items()},
            **{k: t.user_attrs.get(k) for k in METRIC_KEYS},
            **{f"constraint:{k}": v for k, v in constraints.items()},
            "feasible": all(v <= 0 for v in constraints.values()) if constraints else None,
            "failure": t.user_attrs.get("failure"),
            "pruned_reason": t.user_attrs.get("pruned_reason"),
            "duration_s": t.duration.total_seconds() if t.duration else None,
        })
    return rows


def winners(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Feasible best trial(s): the best one (single objective) or the Pareto set (multi-objective)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if not complete:
        return []
    if len(study.directions) == 1:
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        return [max(complete, key=lambda t: t.value if maximize else -t.value)]
    return list(study.best_trials)


def _spec_of(trial: optuna.trial.FrozenTrial, name: str) -> dict[str, Any]:
    spec = dict(trial.user_attrs["spec"])
    spec["name"] = name
    values = ", ".join(f"{v:.6g}" for v in trial.values)
    spec["description"] = (f"Found by srblocks search: trial {trial.number}, objective value(s) {values}; "
                           f"params {trial.user_attrs.get('params'):.0f}, MACs {trial.user_attrs.get('macs', 0):.4g} "
                           f"at LR {trial.user_attrs.get('lr_size', '')}")
    spec["expected"] = [{"params": int(trial.user_attrs["params"]), "reference": "measured during the search"}]
    return spec


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})


def _plots(study: optuna.Study, out: Path) -> list[str]:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Some regimes for parameter")
    import matplotlib.pyplot as plt

    made, problems = [], []
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(study.directions) == 1 and complete:
        ax = optuna.visualization.matplotlib.plot_optimization_history(study)
        ax.figure.savefig(out / "history.png", dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        made.append("history.png")
    if complete:
        fig, ax = plt.subplots(figsize=(6, 4))
        second = "values[1]" if len(study.directions) > 1 else "params"
        xs = [t.values[1] if len(study.directions) > 1 else t.user_attrs.get("params") for t in complete]
        ys = [t.values[0] for t in complete]
        ax.scatter(xs, ys, c="tab:blue", label="trials")
        best = {t.number for t in winners(study)}
        ax.scatter([x for x, t in zip(xs, complete) if t.number in best],
                   [y for y, t in zip(ys, complete) if t.number in best], c="tab:red", label="best / Pareto")
        for x, y, t in zip(xs, ys, complete):
            if t.user_attrs.get("seed"):
                ax.annotate(t.user_attrs["seed"], (x, y), textcoords="offset points", xytext=(4, 4))
                ax.scatter([x], [y], marker="*", s=150, c="tab:orange")
        ax.set_xlabel("second objective" if second == "values[1]" else "params")
        ax.set_ylabel("objective (PSNR dB or proxy)")
        ax.legend()
        fig.savefig(out / "pareto.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        made.append("pareto.png")
    if len(complete) >= 3 and len(study.directions) == 1:
        try:
            ax = optuna.visualization.matplotlib.plot_param_importances(study)
            ax.figure.savefig(out / "importances.png", dpi=100, bbox_inches="tight")
            plt.close(ax.figure)
            made.append("importances.png")
        except (RuntimeError, ValueError) as exc:  # e.g. every trial sampled the same values
            problems.append(f"importances: {exc}")
    (out / "plots.txt").write_text("\n".join(made + problems) + "\n")
    return made


def export_results(study: optuna.Study, out_dir: str | Path) -> dict[str, Any]:
    """Write winners, trial table and plots into ``out_dir``; returns a summary dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    (out / "trials.json").write_text(json.dumps(rows, indent=1, default=str))
    _write_csv(rows, out / "trials.csv")
    best = winners(study)
    written = []
    if len(study.directions) == 1 and best:
        path = out / "best.yaml"
        path.write_text(yaml.safe_dump(_spec_of(best[0], f"{study.study_name}_best"), sort_keys=False))
        written.append(str(path))
    elif best:
        (out / "pareto").mkdir(exist_ok=True)
        for t in best:
            path = out / "pareto" / f"trial{t.number}.yaml"
            path.write_text(yaml.safe_dump(_spec_of(t, f"{study.study_name}_trial{t.number}"), sort_keys=False))
            written.append(str(path))
    plots = _plots(study, out)
    states = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    summary = {"study": study.study_name, "trials": len(rows), "states": states, "winners": written, "plots": plots,
               "best": [{"number": t.number, "values": t.values, "seed": t.user_attrs.get("seed"),
                         "params": t.user_attrs.get("params")} for t in best]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
