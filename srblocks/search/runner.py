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
import json
import math
import multiprocessing
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

import numpy as np
import optuna
import torch

from ..build import build_model
from ..deploy import deploy
from ..errors import SpecError
from ..profile import count_params, measure_latency, profile
from .budgets import Budgets, describe_check, parse_budgets
from .proxies import grad_norm
from .space import OptunaSampler, SearchSpace, load_search_space

__all__ = ["SearchOptions", "InvalidCandidate", "make_storage", "open_study", "run_search", "run_worker",
           "evaluate_candidate", "OBJECTIVES", "DEFAULT_JOURNAL", "PerTrialSeedSampler", "JournalRepairedWarning",
           "recover_journal", "recover_stale_trials", "counted_trials", "SearchProgress", "MAX_RETRY"]

OBJECTIVES = ("psnr", "zero-cost", "pareto")
DEFAULT_JOURNAL = "study.journal"
PARETO_SECOND = {"latency": "latency_ms", "params": "params", "macs": "macs", "memory": "peak_memory_bytes"}
MAX_RETRY = 3  # a trial whose worker died is re-run at most this many times (then it counts as failed)
_RECORD_START = b'{"op_code":'  # every Optuna journal record is one JSON object starting with this, one per line


class InvalidCandidate(Exception):
    """A sampled spec that does not build or run; the trial fails with this reason and the study continues."""


class JournalRepairedWarning(UserWarning):
    """A journal file held a torn (incomplete) record; it was dropped and its bytes saved beside the journal."""


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


# -- storage ----------------------------------------------------------------------------------------------------------

def _torn_path(path: Path, suffix: str = "") -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.name}.torn-{stamp}{suffix}")
    k = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.torn-{stamp}{suffix}.{k}")
        k += 1
    return candidate


def _is_record(line: bytes) -> bool:
    """One complete journal record (without its newline)."""
    if line.startswith(_RECORD_START) and line.endswith(b"}") and line.count(_RECORD_START) == 1:
        return True  # the fast path: Optuna writes one JSON object per line starting with op_code
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def _scan_journal(data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """(the journal with every complete record, [(byte offset, dropped bytes)]).

    A torn record is an append cut short: its bytes lack the final newline. At the end of the file it is simply
    dropped; inside the file (a later append was written right after it, on the same line) the complete record
    that follows it on that line is kept and only the torn prefix is dropped."""
    kept, dropped, offset = bytearray(), [], 0
    for segment in data.splitlines(keepends=True):
        if segment.endswith(b"\n") and _is_record(segment.rstrip(b"\r\n")):
            kept += segment
        elif segment.endswith(b"\n"):
            body = segment.rstrip(b"\r\n")
            start = body.rfind(_RECORD_START)
            while start > 0 and not _is_record(body[start:]):
                start = body.rfind(_RECORD_START, 0, start)
            if start > 0:
                dropped.append((offset, segment[:start]))
                kept += segment[start:]
            elif body.strip(b"\x00 \t"):
                dropped.append((offset, segment))
            elif segment:  # an empty or zero-filled line carries nothing, but keep its bytes anyway
                dropped.append((offset, segment))
        else:
            dropped.append((offset, segment))
        offset += len(segment)
    return bytes(kept), dropped


def recover_journal(path: str | os.PathLike[str]) -> list[Path]:
    """Make a journal file readable again after a torn append; returns the files the dropped bytes were saved to.

    Every complete record is kept; each dropped fragment is saved, byte for byte, as ``<journal>.torn-<UTC time>``
    (``-<byte offset>`` appended when there are several) and a :class:`JournalRepairedWarning` says so. The file is
    only changed under the journal's own write lock, so a record another live worker is appending at this moment
    is never mistaken for a torn one."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    if not _scan_journal(path.read_bytes())[1]:
        return []
    lock = optuna.storages.journal.JournalFileOpenLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        kept, dropped = _scan_journal(data)
        if not dropped:
            return []
        saved = []
        for offset, fragment in dropped:
            target = _torn_path(path, f"-{offset}" if len(dropped) > 1 else "")
            target.write_bytes(fragment)
            saved.append(target)
        if len(dropped) == 1 and dropped[0][0] + len(dropped[0][1]) == len(data):
            os.truncate(path, dropped[0][0])  # only the tail: cut it off in place
        else:
            tmp = path.with_name(path.name + ".repair-tmp")
            with open(tmp, "wb") as f:
                f.write(kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        lock.release()
    what = "; ".join(f"{len(b)} bytes at byte {o} -> {t}" for (o, b), t in zip(dropped, saved))
    warnings.warn(f"{path}: dropped {len(dropped)} torn journal record(s) (an append cut short, e.g. by a power "
                  f"loss or a killed machine); every complete record is kept; the dropped bytes are saved: {what}",
                  JournalRepairedWarning, stacklevel=2)
    return saved


class _RepairingJournalFileBackend(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file backend, but an append first drops a torn last record left by a writer that died
    mid-append (else the new record would be glued to it and the file would become unreadable)."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        payload = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
        self._lock.acquire()
        try:
            with open(self._file_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                if size:
                    f.seek(size - 1)
                    torn = f.read(1) != b"\n"
                else:
                    torn = False
            if torn:  # we hold the writers' lock: nobody is writing, so an unterminated line is a dead append
                data = Path(self._file_path).read_bytes()
                cut = data.rfind(b"\n") + 1
                target = _torn_path(Path(self._file_path))
                target.write_bytes(data[cut:])
                os.truncate(self._file_path, cut)
                warnings.warn(f"{self._file_path}: dropped a torn last journal record ({len(data) - cut} bytes at "
                              f"byte {cut}, left by a writer that died mid-append); the bytes are saved in {target}",
                              JournalRepairedWarning, stacklevel=2)
            with open(self._file_path, "ab") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
        finally:
            self._lock.release()


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed: SQLAlchemy >= 2.1 means psycopg 3 by it,
    older versions psycopg2 (the ``postgres``/``test`` extras install psycopg2-binary)."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return f"postgresql://{rest}"


def make_storage(url: str | None, out_dir: str | os.PathLike[str], *, heartbeat_interval: int | None = None,
                 grace_period: int | None = None) -> optuna.storages.BaseStorage:
    """Optuna storage: ``None`` -> JournalStorage file ``OUT_DIR/study.journal`` (multi-process safe); a path ending
    in ``.journal`` -> that file; anything else is an RDB URL (``postgresql://USER:PW@HOST:PORT/DB``).

    A journal file is checked for torn records first (:func:`recover_journal`). For an RDB URL,
    ``heartbeat_interval`` (s) turns on Optuna's heartbeat: trials whose worker stopped beating for ``grace_period``
    s (default 2 x interval) are failed and re-enqueued (at most :data:`MAX_RETRY` times)."""
    if url is None or url.endswith(".journal"):
        path = Path(url) if url else Path(out_dir) / DEFAULT_JOURNAL
        path.parent.mkdir(parents=True, exist_ok=True)
        recover_journal(path)
        backend = _RepairingJournalFileBackend(
            str(path), lock_obj=optuna.storages.journal.JournalFileOpenLock(str(path)))
        return optuna.storages.JournalStorage(backend)
    if url.startswith("sqlite"):
        optuna.logging.get_logger("optuna").warning("SQLite storage is for a single process; use the journal "
                                                    "file (default) or PostgreSQL for several workers")
    if "://" not in url:
        raise ValueError(f"--storage {url!r} is neither a .journal file nor a database URL "
                         "(e.g. postgresql://USER:PASSWORD@HOST:5432/DB)")
    url = _with_installed_driver(url)
    kwargs: dict[str, Any] = {}
    if heartbeat_interval is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            kwargs = dict(heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                          heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                              max_retry=MAX_RETRY))
    import sqlalchemy.exc

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # several hosts starting on an empty database race to create Optuna's tables; the loser retries
            # and then finds them
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _is_journal(storage: optuna.storages.BaseStorage) -> bool:
    return isinstance(storage, optuna.storages.JournalStorage) or isinstance(
        getattr(storage, "_backend", None), optuna.storages.JournalStorage)  # in case it is wrapped in a cache


# -- workers ----------------------------------------------------------------------------------------------------------

def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> tuple[int, str] | None:
    """(start time in clock ticks since boot, state letter) of a Linux process, None when there is no such one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[19]), fields[0]


def worker_identity() -> dict[str, Any]:
    """This process as recorded on each trial: ``host``, ``pid``, ``boot`` (boot id + process start ticks, so a
    reused pid or a reboot is not mistaken for the same worker)."""
    pid = os.getpid()
    start = _process_start(pid)
    return {"host": socket.gethostname(), "pid": pid,
            "boot": f"{_boot_id()}:{start[0]}" if start and _boot_id() else None}


def _worker_alive(attrs: dict[str, Any]) -> bool | None:
    """Whether the worker recorded in a trial's user attrs still runs: None when this cannot be told from here
    (another host, or no record), so that nothing is failed on a guess."""
    if attrs.get("host") != socket.gethostname() or not isinstance(attrs.get("pid"), int):
        return None
    pid = attrs["pid"]
    recorded = attrs.get("boot")
    if recorded and _boot_id():
        boot, _, ticks = str(recorded).rpartition(":")
        if boot != _boot_id():
            return False  # the machine rebooted since
        now = _process_start(pid)
        return now is not None and str(now[0]) == ticks and now[1] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int | None:
    """Re-enqueue a trial's parameters (the same format as Optuna's RetryHeartbeatStaleTrialCallback)."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRY:
        return None
    keep = {k: v for k, v in trial.user_attrs.items() if k == "seed"}
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs=keep, system_attrs={"failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                                       "retry_history": history}))
    return len(history)


def recover_stale_trials(study: optuna.Study) -> list[int]:
    """Fail and re-enqueue RUNNING trials whose worker is gone; returns their numbers.

    Journal storage: a trial is stale when its recorded worker ran on this host and that process no longer exists
    (pid gone, reused by another process, or the host rebooted). Trials of other hosts are never touched (no
    heartbeat there to tell a slow worker from a dead one). RDB storage: Optuna's heartbeat decides
    (:func:`optuna.storages.fail_stale_trials`, with the retry callback of :func:`make_storage`)."""
    storage = study._storage
    if not _is_journal(storage):
        if optuna.storages._heartbeat.is_heartbeat_enabled(storage):
            before = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            after = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
            return sorted(before - after)
        return []
    recovered = []
    me = worker_identity()
    for t in study.get_trials(deepcopy=True, states=(optuna.trial.TrialState.RUNNING,)):
        if _worker_alive(t.user_attrs) is not False:
            continue
        note = (f"worker pid {t.user_attrs['pid']} on {t.user_attrs['host']} was gone (found by pid {me['pid']} at "
                f"{datetime.datetime.now().isoformat(timespec='seconds')}); failed and re-enqueued")
        try:
            storage.set_trial_user_attr(t._trial_id, "interrupted", note)
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker found it first (or it finished after all)
        t.user_attrs["interrupted"] = note
        _retry(study, t)
        recovered.append(t.number)
    if recovered:
        optuna.logging.get_logger("optuna").warning(
            f"trial(s) {recovered} had no live worker (killed?); failed them and enqueued their parameters again")
    return recovered


_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def _superseded(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of failed trials that were retried (their worker died): they do not count as evaluated."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def counted_trials(trials: Sequence[optuna.trial.FrozenTrial], *, running: bool = True) -> int:
    """Trials that count toward ``--trials``: finished ones (a failed trial that was retried excluded) and, with
    ``running``, those running now. Enqueued (WAITING) trials are not trials yet."""
    retried = _superseded(trials)
    states = _FINISHED + ((optuna.trial.TrialState.RUNNING,) if running else ())
    return sum(1 for t in trials if t.state in states
               and not (t.state == optuna.trial.TrialState.FAIL and t.number in retried))


# -- sampling ---------------------------------------------------------------------------------------------------------

class PerTrialSeedSampler(optuna.samplers.BaseSampler):
    """``factory(seed + trial.number)`` samples trial ``trial.number``: every trial draws from its own random stream.

    Trial numbers are unique across all workers of a study (the storage hands them out), so parallel workers,
    separately started processes and other hosts never share a stream, and need no rank; a single-worker run is
    exactly reproducible from ``seed``. The samplers used here (TPE, NSGA-II) keep their state in the study, so a
    fresh one per trial loses nothing."""

    def __init__(self, factory: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._factory, self._seed = factory, seed
        self._current: tuple[int, optuna.samplers.BaseSampler] | None = None

    def _for(self, trial: optuna.trial.FrozenTrial) -> optuna.samplers.BaseSampler:
        if self._current is None or self._current[0] != trial.number:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._current = (trial.number, self._factory(self._seed + trial.number))
        return self._current[1]

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState,
                    values: Sequence[float] | None) -> None:
        self._for(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._seed = int(np.random.SeedSequence().entropy % 2**31)
        self._current = None


def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def _nsga2(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed)


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
        sampler: optuna.samplers.BaseSampler = PerTrialSeedSampler(_nsga2, options.seed)
        pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    else:
        sampler = PerTrialSeedSampler(_tpe, options.seed)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
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


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class SearchProgress:
    """Progress of a study on stderr for a person watching it.

    On a TTY: one bar over the study's trials that also moves during a trial (the fraction of its training done),
    with the study's ETA, the running trial's iteration x/N and PSNR (dB) and the best value so far. Not a TTY
    (logs, CI, ``nohup``): one concise line at most every ``every`` seconds, and one at the end. ETA = time so far
    / trials done in this session (fractions included) x trials left, so it assumes the rest cost the same."""

    def __init__(self, total: int, done: int, *, every: float = 30.0, stream: TextIO | None = None,
                 tty: bool | None = None) -> None:
        self.total, self.done0, self.done, self.every = total, done, done, every
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.t0 = time.monotonic()
        self.last_line = -math.inf
        self.last_text = ""
        self.running: dict[int, tuple[float, str]] = {}
        self.best = ""
        self.bar = None
        if self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc="search", unit="trial", file=self.stream,
                            dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} "
                                                           "trials [{elapsed}, {postfix}]")

    def _fraction(self) -> float:
        return self.done + sum(f for f, _ in self.running.values())

    def eta(self) -> float | None:
        """Seconds left for the whole study, None before anything was done."""
        made = self._fraction() - self.done0
        if made <= 0:
            return None
        return (time.monotonic() - self.t0) / made * max(0.0, self.total - self._fraction())

    def _status(self) -> str:
        eta = self.eta()
        parts = [f"ETA {_duration(eta)}" if eta is not None else "ETA ?"]
        parts += [f"trial {n}: {text}" for n, (_, text) in sorted(self.running.items()) if text]
        if self.best:
            parts.append(f"best {self.best}")
        return ", ".join(parts)

    def update(self, *, done: int | None = None, running: dict[int, tuple[float, str]] | None = None,
               best: str | None = None, force: bool = False) -> None:
        """``done``: trials finished; ``running``: trial number -> (fraction of it done 0..1, short text)."""
        if done is not None:
            self.done = done
        if running is not None:
            self.running = running
        if best is not None:
            self.best = best
        if self.bar is not None:
            self.bar.n = min(float(self.total), self._fraction())
            self.bar.set_postfix_str(self._status(), refresh=True)
            return
        now = time.monotonic()
        if force or now - self.last_line >= self.every:
            self.last_line = now
            line = f"{self.done}/{self.total} trials done, {_duration(now - self.t0)} elapsed, {self._status()}"
            if not (force and line == self.last_text):  # the closing line only when it says something new
                print(f"search: {line}", file=self.stream, flush=True)
            self.last_text = line

    def training(self, number: int, fraction: float, text: str) -> None:
        self.running = {number: (min(1.0, max(0.0, fraction)), text)}
        self.update()

    def close(self) -> None:
        self.running = {}
        if self.bar is not None:
            self.update()
            self.bar.close()
        else:
            self.update(force=True)


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

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
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
                need_latency=second == "latency", record=trial.set_constraint)
        except InvalidCandidate as exc:
            return self._fail(trial, str(exc))
        for key, value in metrics.items():
            trial.set_user_attr(key, value)
        if any(v > 0 for v in violations.values()):
            over = ", ".join(describe_check(k, metrics[k], getattr(self.budgets, k))
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
        trials = trial.study.get_trials(deepcopy=False, states=_FINISHED)
        retried = _superseded(trials)
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
        for key in ("params", "macs", "memory", "latency", "acts", "zero_cost", "psnr"):
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
