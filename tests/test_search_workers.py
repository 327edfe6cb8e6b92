"""Search with several workers: own random streams, no budget spent on repeated parameters, dead workers' trials
re-run, torn journal records recovered, and progress a person can watch."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from srblocks.search import SearchOptions, load_search_space, make_storage, open_study, run_search
from srblocks.search import runner
from srblocks.search.runner import (JournalRepairedWarning, SearchProgress, counted_trials, recover_journal,
                                    recover_stale_trials)
from srblocks.search.space import OptunaSampler

REPO = Path(__file__).resolve().parents[1]
TS = optuna.trial.TrialState

WIDE = {  # hundreds of configurations, no seeds: two workers drawing the same parameters is not chance
    "name": "wide_safmn",
    "search": {"objective": "zero-cost", "lr_size": [16, 16], "train_iters": 2, "train_batch_size": 2,
               "train_patch_size": 8, "validate_every": 1},
    "space": {"extends": "safmn", "name": "wide_safmn",
              "variables": {"scale": 2, "dim": {"choice": [8, 12, 16, 20, 24, 28, 32]}, "n_blocks": {"int": [1, 4]},
                            "ffn_scale": {"float": [1.0, 3.0], "step": 0.25}}},
}
TWO = {  # two configurations only: repeats are certain
    "name": "two_safmn",
    "search": {"objective": "zero-cost", "lr_size": [16, 16], "train_iters": 2, "train_batch_size": 2,
               "train_patch_size": 8, "validate_every": 1},
    "space": {"extends": "safmn", "name": "two_safmn",
              "variables": {"scale": 2, "dim": {"choice": [8, 16]}, "n_blocks": 1, "ffn_scale": 2.0}},
}


def _write(tmp_path: Path, data: dict, name: str = "space.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _options(tmp_path: Path, space: str, trials: int, out: str = "out", **kw) -> SearchOptions:
    return SearchOptions(space_path=space, out_dir=str(tmp_path / out), trials=trials, progress=False, **kw)


def _load(tmp_path: Path, name: str, out: str = "out") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=make_storage(None, tmp_path / out))


# -- 1. random streams and repeated parameters ------------------------------------------------------------------------

def test_two_workers_on_one_journal_do_not_sample_the_same_parameters(tmp_path) -> None:
    """Two workers (two study objects on one journal, as two processes would have) asking at the same time."""
    path = _write(tmp_path, WIDE)
    space = load_search_space(path)
    first, second = open_study(_options(tmp_path, path, 10), space), open_study(_options(tmp_path, path, 10), space)
    for _ in range(4):
        a, b = first.ask(), second.ask()
        space.sample(OptunaSampler(a))
        space.sample(OptunaSampler(b))
        assert a.number != b.number
        assert a.params != b.params, "both workers drew from the same random stream"
        first.tell(a, 0.0)
        second.tell(b, 0.0)


def test_a_single_worker_run_is_reproducible_from_its_seed(tmp_path) -> None:
    path = _write(tmp_path, WIDE)

    def params(out: str, seed: int) -> list[dict]:
        study = run_search(_options(tmp_path, path, 4, out=out, seed=seed))
        return [t.params for t in study.get_trials()]

    assert params("a", 5) == params("b", 5)
    assert params("a", 5) != params("c", 6)


def test_repeated_parameters_are_not_evaluated_again(tmp_path, monkeypatch) -> None:
    evaluated = []
    real = runner.evaluate_candidate

    def counting(spec, *args, **kwargs):
        evaluated.append(spec["variables"]["dim"])
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(runner, "evaluate_candidate", counting)
    study = run_search(_options(tmp_path, _write(tmp_path, TWO), 6))
    trials = study.get_trials()
    assert len(trials) == 6 and all(t.state == TS.COMPLETE for t in trials)
    originals = [t for t in trials if "duplicate_of" not in t.user_attrs]
    repeats = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert len(originals) == len(evaluated) == len({json.dumps(t.params) for t in originals}) <= 2
    assert len(repeats) >= 4
    for t in repeats:
        origin = trials[t.user_attrs["duplicate_of"]]
        assert origin.number < t.number and origin.params == t.params
        assert t.value == origin.value and t.user_attrs["params"] == origin.user_attrs["params"]
        assert t.system_attrs.get("constraints:params") == origin.system_attrs.get("constraints:params")


def test_repeats_of_pruned_and_failed_trials_name_the_earlier_trial(tmp_path) -> None:
    data = yaml.safe_load(yaml.safe_dump(TWO))
    data["search"]["budgets"] = {"params": "1K"}  # both configurations are over budget
    study = run_search(_options(tmp_path, _write(tmp_path, data), 4))
    repeats = [t for t in study.get_trials() if "duplicate_of" in t.user_attrs]
    assert repeats and all(t.state == TS.PRUNED for t in repeats)
    for t in repeats:
        reason = t.user_attrs["pruned_reason"]
        assert reason.startswith("over budget: params ") and "> 1,000" in reason
        assert f"measured in trial {t.user_attrs['duplicate_of']}" in reason

    data = yaml.safe_load(yaml.safe_dump(TWO))
    data["search"]["lr_size"] = [6, 6]  # every candidate fails to run
    study = run_search(_options(tmp_path, _write(tmp_path, data, "fails.yaml"), 4, out="fails"))
    repeats = [t for t in study.get_trials() if "duplicate_of" in t.user_attrs]
    assert repeats and all(t.state == TS.FAIL for t in repeats)
    for t in repeats:
        assert t.user_attrs["failure"].startswith(f"same parameters as trial {t.user_attrs['duplicate_of']}, "
                                                  "which failed: profiling at (6, 6) failed")


def test_a_repeat_is_evaluated_again_when_the_budget_it_failed_is_raised(tmp_path) -> None:
    data = yaml.safe_load(yaml.safe_dump(TWO))
    data["search"]["seeds"] = {"narrow": {"variables.dim": 8}}
    path = _write(tmp_path, data)
    run_search(_options(tmp_path, path, 1, budgets="params=1K"))
    study = run_search(_options(tmp_path, path, 6, budgets="params=1M"))
    again = [t for t in study.get_trials() if t.params == {"variables.dim": 8} and t.state == TS.COMPLETE]
    assert again and "duplicate_of" not in again[0].user_attrs  # its earlier "over budget" no longer holds


# -- 2. dead workers --------------------------------------------------------------------------------------------------

SLOW = {  # psnr objective whose trials train long enough to be killed mid-trial
    "name": "slow_safmn",
    "search": {"objective": "psnr", "lr_size": [16, 16], "train_iters": 100000, "train_batch_size": 2,
               "train_patch_size": 8, "validate_every": 50000,
               "seeds": {"small": {"variables.dim": 8, "variables.n_blocks": 1}}},
    "space": {"extends": "safmn", "name": "slow_safmn",
              "variables": {"scale": 2, "dim": {"choice": [8, 12, 16]}, "n_blocks": {"int": [1, 2]},
                            "ffn_scale": 2.0}},
}


def _start_worker(tmp_path: Path, space: str, trials: int) -> subprocess.Popen:
    code = ("import sys, torch; torch.set_num_threads(1); from srblocks.search import SearchOptions, run_search; "
            f"run_search(SearchOptions(space_path={space!r}, out_dir={str(tmp_path / 'out')!r}, trials={trials}, "
            "progress=False))")
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _wait_for_running_trial(tmp_path: Path, name: str, proc: subprocess.Popen, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        if (tmp_path / "out" / "study.journal").is_file():
            try:
                study = _load(tmp_path, name)
            except KeyError:  # the study is not created yet
                study = None
            if study is not None:
                running = [t for t in study.get_trials(states=(TS.RUNNING,))  # training (zero_cost is set last)
                           if t.user_attrs.get("pid") == proc.pid and "zero_cost" in t.user_attrs]
                if running:
                    time.sleep(0.3)  # into the silent training loop, not while it holds the journal's lock
                    return running[0]
        time.sleep(0.2)
    raise AssertionError("the worker never started a trial")


def test_a_trial_of_a_killed_worker_is_failed_and_run_again_on_resume(tmp_path) -> None:
    path = _write(tmp_path, SLOW)
    proc = _start_worker(tmp_path, path, 3)
    try:
        victim = _wait_for_running_trial(tmp_path, "slow_safmn", proc)
        assert victim.user_attrs["host"] and victim.user_attrs["started"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _load(tmp_path, "slow_safmn").trials[victim.number].state == TS.RUNNING  # what kill -9 leaves behind

    study = run_search(_options(tmp_path, path, 3, train_iters=2))  # the same study, resumed (shorter training)
    trials = study.get_trials()
    dead = trials[victim.number]
    assert dead.state == TS.FAIL and f"worker pid {proc.pid}" in dead.user_attrs["interrupted"]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].params == dead.params and retry[0].state.is_finished()
    assert retry[0].user_attrs.get("seed") == dead.user_attrs.get("seed")  # a paper model stays one
    assert not [t for t in trials if t.state == TS.RUNNING]
    evaluated = [t for t in trials if t.state in (TS.COMPLETE, TS.PRUNED)
                 or (t.state == TS.FAIL and t.number != victim.number)]
    assert len(evaluated) == counted_trials(trials) == 3  # --trials evaluated trials, the killed one not counted


def test_running_trials_of_live_or_unknown_workers_are_left_alone(tmp_path) -> None:
    path = _write(tmp_path, TWO)
    study = open_study(_options(tmp_path, path, 5), load_search_space(path))
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    me = runner.worker_identity()
    cases = {"alive": me, "other host": {**me, "host": "elsewhere.example"}, "no record": {},
             "dead": {**me, "pid": int(finished.stdout), "boot": None}}
    numbers = {}
    for label, attrs in cases.items():
        trial = study.ask()
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        numbers[label] = trial.number
    assert recover_stale_trials(study) == [numbers["dead"]]
    states = {label: study.trials[n].state for label, n in numbers.items()}
    assert states == {"alive": TS.RUNNING, "other host": TS.RUNNING, "no record": TS.RUNNING, "dead": TS.FAIL}
    assert recover_stale_trials(open_study(_options(tmp_path, path, 5), load_search_space(path))) == []


# -- 3. torn journal records ------------------------------------------------------------------------------------------

TORN = b'{"op_code":5,"worker_id":"dead-worker","trial_id":1,"user_att'


def test_a_torn_last_journal_line_is_dropped_saved_and_the_study_goes_on(tmp_path) -> None:
    path = _write(tmp_path, TWO)
    run_search(_options(tmp_path, path, 2))
    journal = tmp_path / "out" / "study.journal"
    complete = journal.read_bytes()
    with journal.open("ab") as f:
        f.write(TORN)  # power loss in the middle of an append
    with pytest.warns(JournalRepairedWarning, match="torn") as caught:
        study = run_search(_options(tmp_path, path, 4))
    assert len(study.get_trials()) == 4
    saved = list((tmp_path / "out").glob("study.journal.torn-*"))
    assert len(saved) == 1 and saved[0].read_bytes() == TORN
    assert str(saved[0]) in str(caught[0].message)
    assert journal.read_bytes().startswith(complete)  # every complete record kept, in place
    assert len(_load(tmp_path, "two_safmn").trials) == 4


def test_a_journal_already_broken_by_appends_after_a_torn_line_is_repaired(tmp_path) -> None:
    """What an older srblocks left: the next record was appended right after the torn bytes, on the same line."""
    path = _write(tmp_path, TWO)
    run_search(_options(tmp_path, path, 3))
    journal = tmp_path / "out" / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    broken = b"".join(lines[:-3]) + TORN + b"".join(lines[-3:])
    journal.write_bytes(broken)
    with pytest.raises(Exception, match="Expecting|Invalid|delimiter"):  # what Optuna alone makes of it
        optuna.load_study(study_name="two_safmn", storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(journal)))).get_trials()
    with pytest.warns(JournalRepairedWarning):
        saved = recover_journal(journal)
    assert [p.read_bytes() for p in saved] == [TORN]
    assert journal.read_bytes() == b"".join(lines)
    assert len(_load(tmp_path, "two_safmn").trials) == 3


def test_a_record_torn_while_the_study_is_open_is_dropped_before_the_next_append(tmp_path) -> None:
    path = _write(tmp_path, TWO)
    study = open_study(_options(tmp_path, path, 3), load_search_space(path))
    journal = tmp_path / "out" / "study.journal"
    with journal.open("ab") as f:
        f.write(TORN)  # another worker died mid-append
    with pytest.warns(JournalRepairedWarning, match="died mid-append"):
        study.set_user_attr("after", 1)
    assert _load(tmp_path, "two_safmn").user_attrs["after"] == 1
    assert [p.read_bytes() for p in (tmp_path / "out").glob("study.journal.torn-*")] == [TORN]


# -- 5. progress ------------------------------------------------------------------------------------------------------

def test_progress_lines_show_the_trial_iteration_psnr_and_a_study_eta(tmp_path, capsys) -> None:
    data = yaml.safe_load(yaml.safe_dump(TWO))
    data["space"]["variables"]["dim"] = {"choice": [8, 12, 16]}
    data["search"].update(objective="psnr", train_iters=4, validate_every=2)
    options = _options(tmp_path, _write(tmp_path, data), 2)
    options.progress, options.progress_every = True, 0.0
    run_search(options)
    err = capsys.readouterr().err
    assert "trial 0: it 2/4, PSNR " in err and " dB" in err
    assert "ETA " in err and "2/2 trials done" in err and "best " in err


def test_progress_is_throttled_off_a_terminal_and_a_bar_on_one() -> None:
    lines = io.StringIO()
    progress = SearchProgress(10, 0, every=3600, stream=lines, tty=False)
    for i in range(1, 50):
        progress.training(0, i / 50, f"it {i}/50, PSNR 20.00 dB")
    progress.update(done=1, running={})
    progress.close()
    assert lines.getvalue().count("\n") == 2  # the first update and the closing line, nothing in between

    screen = io.StringIO()
    bar = SearchProgress(10, 2, stream=screen, tty=True)
    bar.training(2, 0.5, "it 100/200, PSNR 24.31 dB")
    assert bar.eta() is not None
    bar.close()
    assert "it 100/200, PSNR 24.31 dB" in screen.getvalue() and "2.5/10 trials" in screen.getvalue()


def test_the_parent_of_several_workers_shows_their_running_trials_from_the_storage() -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.report(24.3125, 100)
    study.ask()  # another worker's trial, not validated yet
    assert runner._running_progress(study, study.get_trials(), 200) == {
        0: (0.5, "it 100/200, PSNR 24.31 dB"), 1: (0.0, "")}
