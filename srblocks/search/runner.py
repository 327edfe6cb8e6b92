"""Running a budget-constrained search with Optuna: one trial = sample -> build -> budgets -> objective.

Per trial, cheapest first:

1. sample a concrete spec from the space (recorded as the trial's ``spec`` user attribute) and build it; an invalid
   sample fails the trial with its reason (``failure`` user attribute) and the study goes on;
2. params (instant), then MACs and peak memory (one meta-device profile, ~0.1 s), then latency (real runs) only when a
   latency budget or objective needs it. Every measured budget is recorded with ``trial.set_constraint(name,
   measured - budget)`` (feasible iff <= 0) so constraint-aware samplers learn the feasible region, and an over-budget
   candidate is pruned at once, before any training;
3. a zero-cost proxy (``grad_norm``), always logged;
4. the objective: ``zero-cost`` returns the proxy; ``psnr`` trains the candidate with :func:`srblocks.train.train`
   for a fixed budget and returns the held-out PSNR, reporting intermediate values so the pruner can stop bad
   trials; ``pareto`` returns (PSNR, latency | params | macs | memory) for NSGA-II.

Storage: a JournalStorage file (safe for several local worker processes) by default, or any URL Optuna accepts
(``postgresql://...`` for many hosts; ``sqlite:///...`` for one process only).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import optuna
import torch

from ..build import build_model
from ..deploy import deploy
from ..errors import SpecError
from ..profile import count_params, measure_latency, profile
from .budgets import Budgets, parse_budgets
from .proxies import grad_norm
from .space import OptunaSampler, SearchSpace, load_search_space

__all__ = ["SearchOptions", "InvalidCandidate", "make_storage", "open_study", "run_search", "run_worker",
           "evaluate_candidate", "OBJECTIVES", "DEFAULT_JOURNAL"]

OBJECTIVES = ("psnr", "zero-cost", "pareto")
DEFAULT_JOURNAL = "study.journal"
PARETO_SECOND = {"latency": "latency_ms", "params": "params", "macs": "macs", "memory": "peak_memory_bytes"}


class InvalidCandidate(Exception):
    """A sampled spec that does not build or run; the trial fails with this reason and the study continues."""


@dataclass
class SearchOptions:
    """Everything a worker needs (picklable, so worker processes can receive it)."""

    space_path: str
    out_dir: str
    trials: int
    timeout: float | None = None
    budgets: str | None = None
    objective: str | None = None
    storage: str | None = None
    study_name: str | None = None
    seed: int = 0
    progress: bool = True
    train_iters: int | None = None
    data: str | None = None


def make_storage(url: str | None, out_dir: str | os.PathLike[str]) -> optuna.storages.BaseStorage | str:
    """Optuna storage: ``None`` -> JournalStorage file ``OUT_DIR/study.journal`` (multi-process safe); a path ending
    in ``.journal`` -> that file; anything else is passed to Optuna as an RDB URL."""
    if url is None or url.endswith(".journal"):
        path = Path(url) if url else Path(out_dir) / DEFAULT_JOURNAL
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(
            str(path), lock_obj=optuna.storages.journal.JournalFileOpenLock(str(path)))
        return optuna.storages.JournalStorage(backend)
    if url.startswith("sqlite"):
        optuna.logging.get_logger("optuna").warning("SQLite storage is for a single process; use the journal "
                                                    "file (default) or PostgreSQL for several workers")
    return url


def _directions(objective: str, space: SearchSpace) -> list[str]:
    if objective == "pareto":
        second = space.settings.pareto_objectives[1]
        if second not in PARETO_SECOND:
            raise SpecError(f"pareto second objective must be one of {list(PARETO_SECOND)}, got {second!r}",
                            source=space.source, path="search.pareto_objectives")
        return ["maximize", "minimize"]
    return ["maximize"]


def open_study(options: SearchOptions, space: SearchSpace) -> optuna.Study:
    """Create or load the study (``load_if_exists``: rerunning the same command resumes it); seeds are enqueued once."""
    objective = options.objective or space.settings.objective
    if objective not in OBJECTIVES:
        raise SpecError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}", source=space.source)
    directions = _directions(objective, space)
    if objective == "pareto":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.NSGAIISampler(seed=options.seed)
        pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    else:
        sampler = optuna.samplers.TPESampler(seed=options.seed, multivariate=True, group=True)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    study = optuna.create_study(storage=make_storage(options.storage, options.out_dir), sampler=sampler,
                                pruner=pruner, study_name=options.study_name or space.file.name,
                                directions=directions, load_if_exists=True)
    if study.user_attrs.get("objective", objective) != objective:
        raise SpecError(f"study {study.study_name!r} was created with objective {study.user_attrs['objective']!r}; "
                        f"use another --study name", source=space.source)
    if "objective" not in study.user_attrs:
        study.set_user_attr("objective", objective)
        study.set_user_attr("space", space.source)
        for label, params in space.settings.seeds.items():  # the published designs start the search
            study.enqueue_trial(params, user_attrs={"seed": label}, skip_if_exists=True)
    return study


def _training_data(space: SearchSpace, data: str | None) -> tuple[Any, Any]:
    """(train, validation) sources: a folder split by file, or the embedded default images split by rows."""
    from ..data import embedded_default
    from ..data.datasets import NamedImage

    folder = data or space.settings.data
    if folder:
        from ..data import discover_pairs  # noqa: F401  (validates the layout early)

        return folder, folder
    images = embedded_default()
    train, val = [], []
    for image in images:
        rows = image.image.shape[0]
        cut = rows * 3 // 4
        train.append(NamedImage(f"{image.name}_train", image.image[:cut]))
        val.append(NamedImage(f"{image.name}_val", image.image[cut:]))
    return train, val


def evaluate_candidate(
    spec: dict[str, Any],
    budgets: Budgets,
    *,
    lr_size: tuple[int, int],
    threads: int,
    latency_runs: int,
    need_latency: bool,
    record: Any = None,
) -> tuple[torch.nn.Module, dict[str, float], dict[str, float]]:
    """Build ``spec`` and measure it against ``budgets``, cheapest first.

    Budgets are measured on the deploy form (:func:`srblocks.deploy`); the returned model is the trainable form.
    Returns (model, metrics, violations) where violations maps budget -> measured - limit for every measured budget.
    Stops measuring at the first violated budget. ``record(name, value)`` is called for each violation as soon as
    it is known (the Optuna trial's ``set_constraint``).
    """
    try:
        model = build_model(spec, check_shapes=False)  # the profile below runs the same meta-device forward
    except SpecError as exc:
        raise InvalidCandidate(str(exc)) from None
    has_train_form = any(hasattr(m, "reparameterize") for m in model.modules())
    inference = deploy(model) if has_train_form else model  # budgets apply to what would be deployed (FMEN blocks re-parameterized)
    metrics: dict[str, float] = {"params": float(count_params(inference))}
    violations: dict[str, float] = {}

    def check(name: str, value: float | None) -> bool:
        limit = getattr(budgets, name)
        if limit is None or value is None:
            return True
        violations[name] = value - limit
        if record is not None:
            record(name, violations[name])
        return violations[name] <= 0

    if not check("params", metrics["params"]):
        return model, metrics, violations
    try:
        measured = profile(inference, lr_size)
    except Exception as exc:  # noqa: BLE001 - a candidate that cannot run at the stated size is invalid
        raise InvalidCandidate(f"profiling at {lr_size} failed: {type(exc).__name__}: {exc}") from None
    metrics.update(macs=float(measured.macs), memory=float(measured.peak_memory_bytes), acts=float(measured.acts))
    if not (check("macs", metrics["macs"]) and check("memory", metrics["memory"])):
        return model, metrics, violations
    if need_latency or budgets.latency is not None:
        ms, _ = measure_latency(inference, (1, 3, *lr_size), runs=latency_runs, warmup=1, threads=threads)
        metrics["latency"] = ms
        check("latency", ms)
    return model, metrics, violations


class _Objective:
    def __init__(self, options: SearchOptions, space: SearchSpace, objective: str) -> None:
        self.options, self.space, self.objective = options, space, objective
        self.budgets = parse_budgets(space.settings.budgets or None)
        if options.budgets:
            self.budgets = self.budgets.merged(parse_budgets(options.budgets))
        self.settings = space.settings
        self._data: tuple[Any, Any] | None = None

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        s = self.settings
        torch.manual_seed(self.options.seed + trial.number)
        try:
            spec = self.space.sample(OptunaSampler(trial))
        except (ValueError, KeyError) as exc:
            return self._fail(trial, f"sampling failed: {exc}")
        spec["name"] = f"{self.space.file.name}_trial{trial.number}"
        trial.set_user_attr("spec", spec)
        second = s.pareto_objectives[1] if self.objective == "pareto" else None
        try:
            model, metrics, violations = evaluate_candidate(
                spec, self.budgets, lr_size=tuple(s.lr_size), threads=s.threads, latency_runs=s.latency_runs,
                need_latency=second == "latency", record=trial.set_constraint)
        except InvalidCandidate as exc:
            return self._fail(trial, str(exc))
        for key, value in metrics.items():
            trial.set_user_attr(key, value)
        if any(v > 0 for v in violations.values()):
            over = ", ".join(f"{k} over by {v:.4g}" for k, v in violations.items() if v > 0)
            trial.set_user_attr("pruned_reason", f"over budget: {over}")
            raise optuna.TrialPruned(f"over budget: {over}")
        lr, hr = self._proxy_batch(model)
        proxy = grad_norm(model, lr, hr)
        trial.set_user_attr("zero_cost", proxy if math.isfinite(proxy) else None)
        if self.objective == "zero-cost":
            if not math.isfinite(proxy):
                return self._fail(trial, "zero-cost proxy is not finite")
            return proxy
        psnr = self._train_psnr(trial, model)
        trial.set_user_attr("psnr", psnr)
        if self.objective == "pareto":
            return psnr, metrics[{"latency": "latency", "params": "params", "macs": "macs",
                                  "memory": "memory"}[second]]
        return psnr

    @staticmethod
    def _fail(trial: optuna.Trial, reason: str) -> float:
        trial.set_user_attr("failure", reason)
        raise InvalidCandidate(reason)

    def _proxy_batch(self, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        from ..build import model_info

        info = model_info(model)
        scale = int(info.variables.get("scale", 4))
        generator = torch.Generator().manual_seed(self.options.seed)
        lr = torch.rand(2, 3, 16, 16, generator=generator) * info.input_range
        hr = torch.nn.functional.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)
        return lr, hr

    def _train_psnr(self, trial: optuna.Trial, model: torch.nn.Module) -> float:
        from ..train import TrainingDiverged, train

        if self._data is None:
            self._data = _training_data(self.space, self.options.data)
        train_data, val_data = self._data
        s = self.settings
        multi = self.objective == "pareto"

        def report(r: Any) -> None:
            if not multi:
                trial.report(r.psnr, r.iteration)
                if trial.should_prune():
                    trial.set_user_attr("pruned_reason", f"pruner stopped it at iteration {r.iteration}")
                    raise optuna.TrialPruned(f"pruned at iteration {r.iteration} (PSNR {r.psnr:.3f})")

        try:
            result = train(model, train_data, val_data=val_data, iterations=self.options.train_iters or s.train_iters,
                           time_budget=s.train_seconds, batch_size=s.train_batch_size, lr_patch_size=s.train_patch_size,
                           lr=s.train_lr, val_every=s.validate_every, seed=self.options.seed, progress=False,
                           callback=report, device="cpu" if not torch.cuda.is_available() else None)
        except TrainingDiverged as exc:
            return self._fail(trial, f"training diverged: {exc}")
        if not result.validations:
            return self._fail(trial, "training produced no validation")
        return float(result.validations[-1].psnr)


_STARTED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL,
                   optuna.trial.TrialState.RUNNING)  # enqueued (WAITING) seeds are not trials yet
_CATCH = (InvalidCandidate, torch.OutOfMemoryError, FloatingPointError, RuntimeError)


def run_worker(options: SearchOptions, show_progress: bool | None = None) -> None:
    """One worker: optimise until the study holds ``options.trials`` started trials or the timeout passes."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    space = load_search_space(options.space_path)
    study = open_study(options, space)
    objective = study.user_attrs["objective"]
    started = _STARTED_STATES
    remaining = options.trials - len(study.get_trials(deepcopy=False, states=started))
    if remaining <= 0:
        return
    study.optimize(
        _Objective(options, space, objective),
        n_trials=remaining,
        timeout=options.timeout,
        catch=_CATCH,
        gc_after_trial=True,
        show_progress_bar=options.progress if show_progress is None else show_progress,
        callbacks=[optuna.study.MaxTrialsCallback(options.trials, states=started)],
    )


def _worker_entry(options: SearchOptions) -> None:
    torch.set_num_threads(1)
    run_worker(options, show_progress=False)


def run_search(options: SearchOptions, workers: int = 1) -> optuna.Study:
    """Run (or resume) a search and return the study. ``workers`` > 1 starts that many local processes sharing the
    storage (the default journal file is safe for that; SQLite is not)."""
    space = load_search_space(options.space_path)
    space.check(lambda spec: build_model(spec))  # an invalid space is rejected before any trial runs
    Path(options.out_dir).mkdir(parents=True, exist_ok=True)
    study = open_study(options, space)
    if workers <= 1:
        run_worker(options)
    else:
        if options.storage and options.storage.startswith("sqlite"):
            raise SpecError("SQLite storage cannot be shared by several workers; use the default journal file or "
                            "a PostgreSQL URL")
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_worker_entry, args=(options,)) for _ in range(workers)]
        for p in processes:
            p.start()
        try:
            for p in processes:
                p.join()
        except KeyboardInterrupt:
            for p in processes:
                p.terminate()
            raise
        failed = [p.exitcode for p in processes if p.exitcode]
        if failed:
            raise RuntimeError(f"{len(failed)} worker process(es) failed (exit codes {failed})")
    return optuna.load_study(study_name=study.study_name, storage=make_storage(options.storage, options.out_dir))
