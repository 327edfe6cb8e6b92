"""One study shared over a real PostgreSQL server: separately started workers (as on several hosts) lose and duplicate
no trial, and the trial of a SIGKILLed worker is failed by Optuna's heartbeat and run again.

Starts a private server (``tests/_postgres.py``: initdb in a temporary folder, a free local port, trust auth) from
Debian's ``postgresql`` package (binaries under /usr/lib/postgresql/*/bin) or initdb/pg_ctl on PATH; as root it runs
them as the unprivileged ``postgres`` user (initdb refuses root). Skips, saying why, when no server or no psycopg2
is found.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml

from _postgres import postgres_url  # noqa: F401  (the fixture: a private server for this module)
from srblocks.search import SearchOptions, make_storage, run_search
from srblocks.search.runner import counted_trials

REPO = Path(__file__).resolve().parents[1]
TS = optuna.trial.TrialState


TINY = {
    "name": "pg_tiny",
    "search": {"objective": "zero-cost", "lr_size": [16, 16], "budgets": {"params": "60K"},
               "seeds": {"small": {"variables.dim": 8, "variables.n_blocks": 1}}},
    "space": {"extends": "safmn", "name": "pg_tiny",
              "variables": {"scale": 2, "dim": {"choice": [8, 12, 16, 20, 24, 28, 32]}, "n_blocks": {"int": [1, 3]},
                            "ffn_scale": {"float": [1.0, 3.0], "step": 0.5}}},
}
SLOW = {
    "name": "pg_slow",
    "search": {"objective": "psnr", "lr_size": [16, 16], "train_iters": 100000, "train_batch_size": 2,
               "train_patch_size": 8, "validate_every": 50000},
    "space": {"extends": "safmn", "name": "pg_slow",
              "variables": {"scale": 2, "dim": {"choice": [8, 12, 16]}, "n_blocks": {"int": [1, 2]},
                            "ffn_scale": 2.0}},
}


def _space(tmp_path: Path, data: dict) -> str:
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_two_separately_started_workers_share_one_postgres_study(tmp_path, postgres_url) -> None:
    """The same command on two 'hosts' (two processes, own output folders): no trial lost or run twice."""
    space = _space(tmp_path, TINY)
    command = [sys.executable, "-m", "srblocks", "search", space, "--trials", "8", "--storage", postgres_url,
               "--study", "shared", "--heartbeat", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([*command, "-o", str(tmp_path / name)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for name in ("host_a", "host_b")]
    outputs = [w.communicate(timeout=240) for w in workers]
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=make_storage(postgres_url, tmp_path))
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # no gap, no trial twice
    assert all(t.state.is_finished() for t in trials)
    assert 8 <= counted_trials(trials) <= 9  # at most one overshoot: the other worker's trial in flight
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both workers did work
    for t in trials:  # nothing was evaluated again that had finished before it started
        if "duplicate_of" not in t.user_attrs and t.state != TS.FAIL:
            assert not [o.number for o in trials if o.number != t.number and o.params == t.params
                        and o.datetime_complete < t.datetime_start and "duplicate_of" not in o.user_attrs]
    assert sum(1 for t in trials if t.user_attrs.get("seed") == "small") >= 1
    assert "study shared:" in outputs[0][0] and "study shared:" in outputs[1][0]


def test_a_killed_workers_trial_is_failed_by_heartbeat_and_retried(tmp_path, postgres_url) -> None:
    space = _space(tmp_path, SLOW)
    code = ("import torch; torch.set_num_threads(1); from srblocks.search import SearchOptions, run_search; "
            f"run_search(SearchOptions(space_path={space!r}, out_dir={str(tmp_path / 'a')!r}, trials=3, "
            f"storage={postgres_url!r}, study_name='killed', heartbeat_interval=1, grace_period=2, progress=False))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    victim = None
    try:
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            try:
                study = optuna.load_study(study_name="killed", storage=make_storage(postgres_url, tmp_path))
                victim = next((t for t in study.get_trials(states=(TS.RUNNING,))
                               if t.user_attrs.get("pid") == proc.pid and "zero_cost" in t.user_attrs), None)
            except KeyError:  # not created yet
                pass
            time.sleep(0.3)
        assert victim is not None, "the worker never started training a trial"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(3.5)  # > grace_period without heartbeat
    study = run_search(SearchOptions(space_path=space, out_dir=str(tmp_path / "b"), trials=3, storage=postgres_url,
                                     study_name="killed", heartbeat_interval=1, grace_period=2, train_iters=2,
                                     progress=False))
    trials = study.get_trials()
    assert trials[victim.number].state == TS.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params and retry[0].state.is_finished()
    assert not [t for t in trials if t.state == TS.RUNNING]
    assert counted_trials(trials) == 3  # --trials evaluated trials; the killed one does not count
