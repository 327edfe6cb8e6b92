"""Several workers on one study: who runs each trial, recovery of trials whose worker died, and what counts toward
``--trials``.

Each trial records its worker (``host``, ``pid``, ``started``). With a journal file, a RUNNING trial whose worker
process on this host is gone is failed and re-enqueued (same parameters) when a worker starts
(:func:`recover_stale_trials`); RUNNING trials of other hosts are left alone. RDB storages use Optuna's heartbeat
instead. A failed-and-retried trial does not count toward ``--trials`` (:func:`counted_trials`).
"""

from __future__ import annotations

import datetime
import os
import socket
import warnings
from pathlib import Path
from typing import Any, Sequence

import optuna

from .storage import MAX_RETRY, is_journal

__all__ = ["worker_identity", "recover_stale_trials", "counted_trials", "superseded_trials", "FINISHED_STATES", "MAX_RETRY"]


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
    if not is_journal(storage):
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


FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def superseded_trials(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of failed trials that were retried (their worker died): they do not count as evaluated."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def counted_trials(trials: Sequence[optuna.trial.FrozenTrial], *, running: bool = True) -> int:
    """Trials that count toward ``--trials``: finished ones (a failed trial that was retried excluded) and, with
    ``running``, those running now. Enqueued (WAITING) trials are not trials yet."""
    retried = superseded_trials(trials)
    states = FINISHED_STATES + ((optuna.trial.TrialState.RUNNING,) if running else ())
    return sum(1 for t in trials if t.state in states
               and not (t.state == optuna.trial.TrialState.FAIL and t.number in retried))
