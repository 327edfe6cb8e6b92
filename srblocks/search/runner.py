"""Running a budget-constrained search with Optuna: one trial = sample -> build -> budgets -> objective.

Per trial, cheapest first:

1. sample a concrete spec from the space (recorded as the trial's ``spec`` user attribute) and build it; an invalid
   sample fails the trial with its reason (``failure`` user attribute) and the study goes on;
2. params (instant), then MACs and peak memory (one meta-device profile, ~0.1 s), then latency only when a
   latency budget or objective needs it: predicted by the device's latency table (:mod:`srblocks.latency`; block
   calls it lacks are measured once and cached), and measured for real only when the prediction is within its error
   band of the budget (or while the table is not calibrated yet); the trial records ``latency`` (the value used),
   ``latency_predicted``, ``latency_measured`` (when measured) and ``latency_band``. Every measured budget is
   recorded with ``trial.set_constraint(name, measured - budget)`` (feasible iff <= 0) so constraint-aware
   samplers learn the feasible region, and an over-budget candidate is pruned at once, before any training;
3. a zero-cost proxy (``grad_norm``), always logged;
4. the objective: ``zero-cost`` returns the proxy; ``psnr`` trains the candidate with :func:`srblocks.train.train`
   for a fixed budget and returns the held-out PSNR, reporting intermediate values so the pruner can stop bad
   trials; ``pareto`` returns (PSNR, latency | params | macs | memory) for NSGA-II.

Storage: a JournalStorage file (safe for several local worker processes) by default, or any URL Optuna accepts
(``postgresql://...`` for many hosts; ``sqlite:///...`` for one process only).

Several workers, one study:

* random streams: the sampler of trial ``n`` is seeded with ``seed + n`` (:class:`PerTrialSeedSampler`). Trial numbers
  are handed out by the storage, so every trial of every worker, process or host draws from its own stream without
  any coordination, and a single-worker run is exactly reproducible from ``--seed``;
* duplicates: before building a candidate, a finished trial with the same parameters (and budgets it still meets or
  still violates) is looked up; if found, nothing is built or trained: the trial records ``duplicate_of`` and returns
  that trial's value, or is pruned / failed with a reason naming it;
* dead workers: each trial records its worker (``host``, ``pid``, ``started``). With a journal file, a RUNNING trial
  whose worker process on this host is gone is failed and re-enqueued (same parameters) when a worker starts
  (:func:`recover_stale_trials`); RUNNING trials of other hosts are left alone. RDB storages use Optuna's heartbeat
  instead (``heartbeat_interval``/``grace_period``, :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`).
  A failed-and-retried trial does not count toward ``--trials``;
* torn journal: a record cut short (power loss mid-append) is dropped when the journal is opened or appended to, with
  a warning; the dropped bytes are saved beside the journal (``study.journal.torn-<UTC time>``).
"""

from __future__ import annotations

import datetime
import math
import multiprocessing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import optuna
import torch

from ..build import build_model, model_info
from ..deploy import deploy
from ..errors import SpecError
from ..profile import count_params, measure_latency, profile
from .budgets import Budgets, describe_check, parse_budgets
from .progress import SearchProgress
from .proxies import grad_norm
from .samplers import PerTrialSeedSampler, nsga2, tpe
from .storage import DEFAULT_JOURNAL, JournalRepairedWarning, make_storage, recover_journal
from .workers import FINISHED_STATES, MAX_RETRY, counted_trials, recover_stale_trials, superseded_trials, worker_identity
from .space import OptunaSampler, SearchSpace, load_search_space

__all__ = ["SearchOptions", "InvalidCandidate", "make_storage", "make_pruner", "open_study", "run_search", "run_worker",
           "evaluate_candidate", "OBJECTIVES", "DEFAULT_JOURNAL", "PerTrialSeedSampler", "JournalRepairedWarning",
           "recover_journal", "recover_stale_trials", "counted_trials", "SearchProgress", "MAX_RETRY"]

OBJECTIVES = ("psnr", "zero-cost", "pareto")
PARETO_SECOND = {"latency": "latency_ms", "params": "params", "macs": "macs", "memory": "peak_memory_bytes"}


class InvalidCandidate(Exception):
    """A sampled spec that does not build or run; the trial fails with this reason and the study continues."""


@dataclass
class SearchOptions:
    """Everything a worker needs (picklable, so worker processes can receive it).

    Units: ``timeout``, ``heartbeat_interval``, ``grace_period`` and ``progress_every`` are seconds. ``trials`` is the
    number of trials the study should hold (failed-and-retried trials of dead workers do not count).
    ``heartbeat_interval``/``grace_period`` apply to RDB storages (PostgreSQL, MySQL, SQLite): a RUNNING trial
    whose worker sent no heartbeat for ``grace_period`` s (default: 2 x ``heartbeat_interval``) is failed and
    retried by the next worker that starts a trial. ``progress``: report progress on stderr (a bar on a TTY, else
    one line at most every ``progress_every`` s).
    """

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
    heartbeat_interval: int = 30
    grace_period: int | None = None
    progress_every: float = 30.0
    latency_table: str | None = None
    latency_model: bool = True


def make_budget_latency(options: SearchOptions, settings: Any) -> Any:
    """The latency source of a worker: a :class:`srblocks.latency.BudgetLatency` on torch CPU with the space's
    ``threads`` and the table ``options.latency_table`` (default: the device's), or None with
    ``options.latency_model=False`` (every candidate measured, ``latency_runs`` runs)."""
    if not options.latency_model:
        return None
    from ..latency import BudgetLatency, MeasureSettings, TorchRunner

    measure = MeasureSettings(warmup=1, min_samples=max(3, settings.latency_runs), max_samples=15, rel_precision=0.03)
    return BudgetLatency(TorchRunner("cpu", settings.threads), options.latency_table, settings=measure)


def _directions(objective: str, space: SearchSpace) -> list[str]:
    if objective == "pareto":
        second = space.settings.pareto_objectives[1]
        if second not in PARETO_SECOND:
            raise SpecError(f"pareto second objective must be one of {list(PARETO_SECOND)}, got {second!r}",
                            source=space.source, path="search.pareto_objectives")
        return ["maximize", "minimize"]
    return ["maximize"]


def effective_budgets(options: SearchOptions, space: SearchSpace) -> Budgets:
    """The space's ``search.budgets`` overridden by ``--budget`` (errors name where the bad budget came from)."""
    try:
        budgets = parse_budgets(space.settings.budgets or None)
    except ValueError as exc:
        raise SpecError(str(exc), source=space.source, path="search.budgets") from None
    if options.budgets:
        try:
            budgets = budgets.merged(parse_budgets(options.budgets))
        except ValueError as exc:
            raise ValueError(f"--budget {options.budgets!r}: {exc}") from None
    return budgets


def make_pruner(settings: Any, train_iters: int | None = None) -> optuna.pruners.BasePruner:
    """The pruner of a single-objective search (``search.pruner``), with training iterations as the resource:

    * ``median``: stop a trial whose PSNR is below the median of earlier trials at the same iteration;
    * ``successive_halving``: rungs at ``pruner_min_iters`` x ``pruner_reduction``^k iterations, keeping the best
      1/``pruner_reduction`` of the trials at each (asynchronous SHA, Li et al. 2020);
    * ``hyperband``: several SHA brackets of different aggressiveness, up to ``train_iters``;
    * ``none``: every feasible trial trains for ``train_iters``.
    """
    max_iters = train_iters or settings.train_iters
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if settings.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=settings.pruner_min_iters,
                                                      reduction_factor=settings.pruner_reduction)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=settings.pruner_min_iters, max_resource=max_iters,
                                              reduction_factor=settings.pruner_reduction)
    return optuna.pruners.NopPruner()


def open_study(options: SearchOptions, space: SearchSpace) -> optuna.Study:
    """Create or load the study (``load_if_exists``: rerunning the same command resumes it); seeds are enqueued once.

    The study's user attrs record the objective, the space, ``lr_size`` (pixels, H x W), the pareto second
    objective and the current budgets (counts, bytes, ms) for the reports."""
    objective = options.objective or space.settings.objective
    if objective not in OBJECTIVES:
        raise SpecError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}", source=space.source,
                        path="search.objective")
    directions = _directions(objective, space)
    budgets = effective_budgets(options, space)
    if objective == "pareto":
        sampler: optuna.samplers.BaseSampler = PerTrialSeedSampler(nsga2, options.seed)
        pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    else:
        sampler = PerTrialSeedSampler(tpe, options.seed)
        pruner = make_pruner(space.settings, options.train_iters)
    storage = make_storage(options.storage, options.out_dir, heartbeat_interval=options.heartbeat_interval,
                           grace_period=options.grace_period)
    study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner,
                                study_name=options.study_name or space.file.name, directions=directions,
                                load_if_exists=True)
    if study.user_attrs.get("objective", objective) != objective:
        raise SpecError(f"study {study.study_name!r} was created with objective {study.user_attrs['objective']!r}; "
                        f"use another --study name", source=space.source)
    if "objective" not in study.user_attrs:
        study.set_user_attr("objective", objective)
        study.set_user_attr("space", space.source)
        study.set_user_attr("lr_size", list(space.settings.lr_size))
        if objective == "pareto":
            study.set_user_attr("pareto_second", space.settings.pareto_objectives[1])
        for label, params in space.settings.seeds.items():  # the published designs start the search
            study.enqueue_trial(params, user_attrs={"seed": label}, skip_if_exists=True)
    if study.user_attrs.get("budgets") != budgets.as_dict():
        study.set_user_attr("budgets", budgets.as_dict())
    return study


def _training_data(space: SearchSpace, data: str | None) -> tuple[Any, Any]:
    """(train, validation) sources. A folder is split as ``search.split_protocol`` splits it (default ref_x4's: 15
    images held out by a salted path hash), so the search selects on the same held-out images as the reference
    protocol and never on the images it trains on; without a folder, the embedded default images are split by
    rows (top 3/4 train, bottom 1/4 validate)."""
    from ..data import embedded_default
    from ..data.datasets import NamedImage

    folder = data or space.settings.data
    if folder:
        from ..protocols import load_protocol, split_images

        protocol = load_protocol(space.settings.split_protocol)
        scale = space.file.space.get("variables", {}).get("scale", protocol.scale)
        return split_images(folder, protocol.data.val_count, protocol.data.split_salt,
                            scale if isinstance(scale, int) else protocol.scale)
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
    latency: Any = None,
) -> tuple[torch.nn.Module, dict[str, float], dict[str, float]]:
    """Build ``spec`` and measure it against ``budgets``, cheapest first.

    Budgets are measured on the deploy form (:func:`srblocks.deploy`); the returned model is the trainable form.
    Returns (model, metrics, violations) where violations maps budget -> measured - limit for every measured budget.
    Stops measuring at the first violated budget. ``record(name, value)`` is called for each violation as soon as
    it is known (the Optuna trial's ``set_constraint``).

    ``latency``: a :class:`srblocks.latency.BudgetLatency` (predict; measure near the budget), or None to measure
    every candidate (``latency_runs`` runs after one warm-up). Latency metrics are in ms.
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
    scale = model_info(model).variables.get("scale")
    expected = (1, 3, lr_size[0] * scale, lr_size[1] * scale) if isinstance(scale, int) else None
    if expected is not None and tuple(measured.output_shape) != expected:
        raise InvalidCandidate(f"output contract: a (1, 3, {lr_size[0]}, {lr_size[1]}) input gives "
                               f"{tuple(measured.output_shape)}, expected {expected} at x{scale}")
    metrics.update(macs=float(measured.macs), memory=float(measured.peak_memory_bytes), acts=float(measured.acts))
    if not (check("macs", metrics["macs"]) and check("memory", metrics["memory"])):
        return model, metrics, violations
    if need_latency or budgets.latency is not None:
        if latency is None:
            ms, _ = measure_latency(inference, (1, 3, *lr_size), runs=latency_runs, warmup=1, threads=threads)
            metrics.update(latency=ms, latency_measured=ms)
        else:
            result = latency.evaluate(inference, (1, 3, *lr_size), budgets.latency, name=str(spec.get("name")))
            metrics.update(latency=result.value_ms, latency_predicted=result.predicted_ms, latency_band=result.band)
            if result.measured_ms is not None:
                metrics["latency_measured"] = result.measured_ms
        check("latency", metrics["latency"])
    return model, metrics, violations


def _latency_note(metric: str, metrics: dict[str, float]) -> str:
    """`` (predicted, band +-10 %)`` after a latency that was predicted and not measured; else empty."""
    if metric != "latency" or "latency_measured" in metrics or "latency_predicted" not in metrics:
        return ""
    return f" (predicted, band +-{metrics.get('latency_band', 0) * 100:.0f} %)"


def _best_text(study: optuna.Study, unit: str) -> str:
    if len(study.directions) > 1:
        return ""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return ""
    best = max(complete, key=lambda t: t.value)
    return f"{best.value:.4g}{unit} (trial {best.number})"


def _objective_unit(objective: str) -> str:
    return " dB" if objective in ("psnr", "pareto") else ""


class _Objective:
    def __init__(self, options: SearchOptions, space: SearchSpace, objective: str,
                 progress: SearchProgress | None = None) -> None:
        self.options, self.space, self.objective = options, space, objective
        self.budgets = effective_budgets(options, space)
        self.settings = space.settings
        self.progress = progress
        self._data: tuple[Any, Any] | None = None
        self._identity = worker_identity()
        self._latency: Any = None

    def _latency_source(self, needed: bool) -> Any:
        """The worker's :func:`make_budget_latency` (made on first need: opening the table costs a file read)."""
        if needed and self._latency is None and self.options.latency_model:
            self._latency = make_budget_latency(self.options, self.settings)
        return self._latency

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        from .readable import ReadableAttrsTrial

        trial = ReadableAttrsTrial(trial)  # type: ignore[assignment]  # also params_K, macs_G, memory_MiB, ...
        s = self.settings
        for key, value in self._identity.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("started", datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
        if self.progress is not None:
            self.progress.training(trial.number, 0.0, "building")
        torch.manual_seed(self.options.seed + trial.number)
        try:
            spec = self.space.sample(OptunaSampler(trial))
        except (ValueError, KeyError) as exc:
            return self._fail(trial, f"sampling failed: {exc}")
        spec["name"] = f"{self.space.file.name}_trial{trial.number}"
        trial.set_user_attr("spec", spec)
        trial.set_user_attr("budgets", self.budgets.as_dict())
        earlier = self._earlier(trial)
        if earlier is not None:
            return self._repeat(trial, earlier)
        second = s.pareto_objectives[1] if self.objective == "pareto" else None
        try:
            model, metrics, violations = evaluate_candidate(
                spec, self.budgets, lr_size=tuple(s.lr_size), threads=s.threads, latency_runs=s.latency_runs,
                need_latency=second == "latency", record=trial.set_constraint,
                latency=self._latency_source(second == "latency" or self.budgets.latency is not None))
        except InvalidCandidate as exc:
            return self._fail(trial, str(exc))
        for key, value in metrics.items():
            trial.set_user_attr(key, value)
        if any(v > 0 for v in violations.values()):
            over = ", ".join(describe_check(k, metrics[k], getattr(self.budgets, k)) + _latency_note(k, metrics)
                             for k, v in violations.items() if v > 0)
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

    # -- repeated configurations -------------------------------------------------------------------------------
    def _earlier(self, trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
        """The first finished trial with the same parameters whose outcome still holds under the current budgets."""
        params = trial.params
        trials = trial.study.get_trials(deepcopy=False, states=FINISHED_STATES)
        retried = superseded_trials(trials)
        by_number = {t.number: t for t in trials}
        for t in sorted(trials, key=lambda t: t.number):
            if t.number == trial.number or t.params != params or t.number in retried:
                continue
            origin = by_number.get(t.user_attrs.get("duplicate_of", t.number), t)
            if origin.state == optuna.trial.TrialState.FAIL and "failure" not in origin.user_attrs:
                continue  # crashed or interrupted (not a property of the candidate): evaluate it again
            if self._budget_verdict(origin) is None:
                continue  # the budgets changed so that its outcome may differ: evaluate it again
            return origin
        return None

    def _budget_verdict(self, t: optuna.trial.FrozenTrial) -> list[str] | None:
        """How ``t``'s measurements fare against the current budgets: the violations ([] = all within), or None when
        that cannot be decided (a budget it was not measured for) or when it was pruned over budgets it now meets."""
        measured = {name: t.user_attrs.get(name) for name, _ in self.budgets.items()}
        over = [describe_check(name, measured[name], limit) for name, limit in self.budgets.items()
                if measured[name] is not None and measured[name] > limit]
        if over or t.state == optuna.trial.TrialState.FAIL:
            return over
        if any(v is None for v in measured.values()):
            return None
        if t.state == optuna.trial.TrialState.PRUNED and str(t.user_attrs.get("pruned_reason", "")).startswith(
                "over budget"):
            return None
        return []

    def _repeat(self, trial: optuna.Trial, origin: optuna.trial.FrozenTrial) -> float | tuple[float, ...]:
        """Give ``trial`` the outcome of ``origin`` (same parameters) without building or training anything."""
        trial.set_user_attr("duplicate_of", origin.number)
        for key in ("params", "macs", "memory", "latency", "latency_predicted", "latency_measured", "latency_band",
                    "acts", "zero_cost", "psnr"):
            if origin.user_attrs.get(key) is not None:
                trial.set_user_attr(key, origin.user_attrs[key])
        for name, limit in self.budgets.items():
            if origin.user_attrs.get(name) is not None:
                trial.set_constraint(name, origin.user_attrs[name] - limit)
        over = self._budget_verdict(origin) or []
        if origin.state == optuna.trial.TrialState.FAIL:
            return self._fail(trial, f"same parameters as trial {origin.number}, which failed: "
                                     f"{origin.user_attrs['failure']}")
        if over:
            reason = f"over budget: {', '.join(over)} (measured in trial {origin.number}, same parameters)"
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)
        if origin.state == optuna.trial.TrialState.PRUNED:
            reason = (f"same parameters as trial {origin.number}, which was pruned: "
                      f"{origin.user_attrs.get('pruned_reason', 'pruned')}")
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)
        values = origin.values
        return tuple(values) if len(values) > 1 else values[0]

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

    def _on_validation(self, trial: optuna.Trial, r: Any) -> None:
        """Progress hook: iteration x/N and PSNR (dB) of the running trial."""
        if self.progress is None:
            return
        total = self.options.train_iters or self.settings.train_iters
        fraction = r.iteration / total
        if self.settings.train_seconds:
            fraction = max(fraction, r.elapsed / self.settings.train_seconds)
        self.progress.training(trial.number, fraction, f"it {r.iteration}/{total}, PSNR {r.psnr:.2f} dB")

    def _train_psnr(self, trial: optuna.Trial, model: torch.nn.Module) -> float:
        from ..train import TrainingDiverged, train

        if self._data is None:
            self._data = _training_data(self.space, self.options.data)
        train_data, val_data = self._data
        s = self.settings
        multi = self.objective == "pareto"

        def report(r: Any) -> None:
            self._on_validation(trial, r)
            if not multi:
                trial.report(r.psnr, r.iteration)
                if trial.should_prune():
                    trial.set_user_attr("pruned_reason", f"pruner stopped it at iteration {r.iteration} "
                                                         f"(PSNR {r.psnr:.2f} dB)")
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


_CATCH = (InvalidCandidate, torch.OutOfMemoryError, FloatingPointError, RuntimeError)


class _StopAtTrials:
    """Stop the worker once the study holds ``trials`` counted trials (see :func:`counted_trials`)."""

    def __init__(self, trials: int, progress: SearchProgress | None, unit: str) -> None:
        self.trials, self.progress, self.unit = trials, progress, unit

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        if self.progress is not None:
            self.progress.update(done=counted_trials(trials, running=False), running={},
                                 best=_best_text(study, self.unit))
        if counted_trials(trials) >= self.trials:
            study.stop()


def _prepare(options: SearchOptions) -> tuple[SearchSpace, optuna.Study, int]:
    """Open the study, recover trials of dead workers; returns (space, study, trials still to start)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    space = load_search_space(options.space_path)
    study = open_study(options, space)
    recover_stale_trials(study)
    return space, study, options.trials - counted_trials(study.get_trials(deepcopy=False))


def run_worker(options: SearchOptions, show_progress: bool | None = None) -> None:
    """One worker: optimise until the study holds ``options.trials`` counted trials or ``options.timeout`` s pass.

    Trials whose worker died are failed and their parameters run again first (:func:`recover_stale_trials`)."""
    space, study, remaining = _prepare(options)
    if remaining <= 0:
        return
    objective = study.user_attrs["objective"]
    show = options.progress if show_progress is None else show_progress
    done = counted_trials(study.get_trials(deepcopy=False), running=False)
    progress = SearchProgress(options.trials, done, every=options.progress_every) if show else None
    unit = _objective_unit(objective)
    try:
        study.optimize(
            _Objective(options, space, objective, progress),
            n_trials=None,
            timeout=options.timeout,
            catch=_CATCH,
            gc_after_trial=True,
            show_progress_bar=False,
            callbacks=[_StopAtTrials(options.trials, progress, unit)],
        )
    finally:
        if progress is not None:
            progress.close()


def _worker_entry(options: SearchOptions) -> None:
    torch.set_num_threads(1)
    run_worker(options, show_progress=False)


def _running_progress(study: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial],
                      total_iters: int) -> dict[int, tuple[float, str]]:
    """What the workers' RUNNING trials reported to the storage: (fraction of training, 'it x/N, PSNR y dB')."""
    out = {}
    for t in trials:
        if t.state != optuna.trial.TrialState.RUNNING:
            continue
        if t.intermediate_values:
            step = max(t.intermediate_values)
            out[t.number] = (min(1.0, step / total_iters),
                             f"it {step}/{total_iters}, PSNR {t.intermediate_values[step]:.2f} dB")
        else:
            out[t.number] = (0.0, "")
    return out


def run_search(options: SearchOptions, workers: int = 1) -> optuna.Study:
    """Run (or resume) a search and return the study. ``workers`` > 1 starts that many local processes sharing the
    storage (the default journal file is safe for that; SQLite is not); this process then shows their progress."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    space = load_search_space(options.space_path)
    space.check(lambda spec: build_model(spec))  # an invalid space is rejected before any trial runs
    Path(options.out_dir).mkdir(parents=True, exist_ok=True)
    if workers <= 1:
        run_worker(options)
    else:
        if options.storage and options.storage.startswith("sqlite"):
            raise SpecError("SQLite storage cannot be shared by several workers; use the default journal file or "
                            "a PostgreSQL URL")
        _, study, remaining = _prepare(options)
        if remaining <= 0:
            return study
        total_iters = options.train_iters or space.settings.train_iters
        unit = _objective_unit(study.user_attrs["objective"])
        done = counted_trials(study.get_trials(deepcopy=False), running=False)
        progress = SearchProgress(options.trials, done, every=options.progress_every) if options.progress else None
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_worker_entry, args=(options,)) for _ in range(workers)]
        for p in processes:
            p.start()
        try:
            while any(p.is_alive() for p in processes):
                for p in processes:
                    p.join(timeout=1.0 / workers)
                if progress is not None:
                    trials = study.get_trials(deepcopy=False)
                    progress.update(done=counted_trials(trials, running=False),
                                    running=_running_progress(study, trials, total_iters),
                                    best=_best_text(study, unit))
        except KeyboardInterrupt:
            for p in processes:
                p.terminate()
            raise
        finally:
            if progress is not None:
                progress.close()
        failed = [p.exitcode for p in processes if p.exitcode]
        if failed:
            raise RuntimeError(f"{len(failed)} worker process(es) failed (exit codes {failed})")
    return optuna.load_study(study_name=options.study_name or space.file.name,
                             storage=make_storage(options.storage, options.out_dir))
