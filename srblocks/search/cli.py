"""``srblocks search`` and ``srblocks search-report`` (registered into :mod:`srblocks.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import command

META = "search.json"


def _configure_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="search file (e.g. search/hybrid_x4.yaml)")
    p.add_argument("--trials", type=int, required=True, help="total trials the study should hold (resumes)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after S seconds")
    p.add_argument("--budget", default=None, help="e.g. params=250K,macs=20G,memory=60MB,latency=40ms")
    p.add_argument("--objective", choices=["psnr", "zero-cost", "pareto"], default=None)
    p.add_argument("--storage", default=None,
                   help="Optuna storage: default OUT_DIR/study.journal (several local workers); a .journal path; "
                        "or an RDB URL such as postgresql://user:pw@host/db for workers on several hosts")
    p.add_argument("--study", default=None, help="study name (default: the search file's name)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes sharing the storage")
    p.add_argument("--train-iters", type=int, default=None, help="override the proxy-training iterations")
    p.add_argument("--data", default=None, help="training/validation folder (default: embedded images)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: trial n samples with seed + n, so one worker's run is reproducible")
    p.add_argument("--heartbeat", type=int, default=30, metavar="S",
                   help="RDB storages (PostgreSQL): seconds between a worker's heartbeats; a trial whose worker "
                        "is silent for --grace-period S is failed and its parameters run again (default 30)")
    p.add_argument("--grace-period", type=int, default=None, metavar="S",
                   help="RDB storages: seconds without heartbeat before a trial counts as dead (default 2 x "
                        "--heartbeat)")
    p.add_argument("--progress-every", type=float, default=30.0, metavar="S",
                   help="when stderr is not a terminal: seconds between progress lines (default 30)")
    p.add_argument("--latency-table", default=None, metavar="TABLE",
                   help="latency budgets and objectives: predict with this latency table (default: this device's "
                        "table, see `srblocks latency show`); missing block calls are measured and added to it")
    p.add_argument("--measure-latency", action="store_true",
                   help="measure every candidate's latency instead of predicting it from the latency table")
    p.add_argument("-o", "--out", required=True, help="output folder")


@command("search", _configure_search)
def _search(args: argparse.Namespace) -> int:
    """Budget-constrained architecture search; writes best.yaml / pareto/, trials.csv and plots."""
    from .report import export_results
    from .runner import SearchOptions, make_storage, run_search

    import optuna

    options = SearchOptions(space_path=args.space, out_dir=args.out, trials=args.trials, timeout=args.timeout,
                            budgets=args.budget, objective=args.objective, storage=args.storage,
                            study_name=args.study, seed=args.seed, progress=True,
                            train_iters=args.train_iters, data=args.data, heartbeat_interval=args.heartbeat,
                            grace_period=args.grace_period, progress_every=args.progress_every,
                            latency_table=args.latency_table, latency_model=not args.measure_latency)
    for flag, value in (("--trials", args.trials), ("--workers", args.workers), ("--heartbeat", args.heartbeat)):
        if value < 1:
            print(f"srblocks search: error: {flag} must be >= 1, got {value}", file=sys.stderr)
            return 2
    if args.latency_table is not None and args.measure_latency:
        print("srblocks search: error: --latency-table and --measure-latency exclude each other", file=sys.stderr)
        return 2
    if args.latency_table is not None and Path(args.latency_table).is_dir():
        print(f"srblocks search: error: --latency-table {args.latency_table}: is a folder, not a table file",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    interrupted = False
    try:
        study = run_search(options, workers=args.workers)
    except KeyboardInterrupt:
        interrupted = True
        from .space import load_search_space

        name = args.study or load_search_space(args.space).file.name
        try:
            study = optuna.load_study(study_name=name, storage=make_storage(args.storage, args.out))
        except KeyError:  # interrupted before the study was created: nothing to export
            print("srblocks search: interrupted before the first trial; nothing was written", file=sys.stderr)
            return 130
    except ValueError as exc:
        if type(exc).__name__ == "SpecError":
            raise
        print(f"srblocks search: error: {exc}", file=sys.stderr)
        return 2
    from ..fileio import write_text_atomic

    write_text_atomic(out / META, json.dumps({"study": study.study_name, "storage": args.storage, "space": args.space}))
    summary = export_results(study, out)
    _print_summary(summary, study)
    return 130 if interrupted else 0


def _print_summary(summary: dict, study) -> None:
    """The study in a few lines: states, each paper model's outcome (why it was pruned, in units), the winners."""
    from .budgets import format_metric
    from .report import format_value, outcome

    budgets = summary.get("budgets") or {}
    limits = ", ".join(f"{k} <= {format_metric(k, v)}" for k, v in budgets.items()) or "none"
    extra = []
    if summary.get("duplicates"):
        extra.append(f"{summary['duplicates']} repeated parameters, not re-evaluated")
    if summary.get("retried"):
        extra.append(f"{summary['retried']} re-run after their worker died")
    print(f"study {summary['study']}: {summary['trials']} trials {summary['states']}"
          + (f" ({'; '.join(extra)})" if extra else "") + f"; budgets: {limits}")
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    for t in trials:
        if not t.user_attrs.get("seed") or t.number in retried:
            continue
        measured = ", ".join(f"{k} {format_metric(k, t.user_attrs[k])}" for k in ("params", "memory", "latency")
                             if t.user_attrs.get(k) is not None)
        print(f"  paper model {t.user_attrs['seed']:<12} trial {t.number:<4} {outcome(study, t)}"
              + (f"  [{measured}]" if measured else ""))
    for b in summary["best"]:
        t = study.trials[b["number"]]
        params = f"params {t.user_attrs['params']:,.0f}" if t.user_attrs.get("params") is not None else ""
        print(f"  winner trial {b['number']:<4} {format_value(study, b['values'])}  {params}"
              + (f"  (= paper model {b['seed']})" if b["seed"] else ""))
    for path in summary["winners"]:
        print(f"  wrote {path}")


def _configure_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="the output folder of an earlier `srblocks search`")
    p.add_argument("--storage", default=None, help="storage URL when it was not the default journal")


@command("search-report", _configure_report)
def _report(args: argparse.Namespace) -> int:
    """Re-render a search's winners, tables and plots from its storage."""
    import optuna

    from .report import export_results
    from .runner import make_storage

    meta_path = Path(args.out) / META
    if not meta_path.is_file():
        print(f"srblocks search-report: error: {meta_path} not found (not a search output folder)", file=sys.stderr)
        return 2
    meta = json.loads(meta_path.read_text())
    study = optuna.load_study(study_name=meta["study"], storage=make_storage(args.storage or meta["storage"], args.out))
    summary = export_results(study, args.out)
    _print_summary(summary, study)
    return 0
