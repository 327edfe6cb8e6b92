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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", required=True, help="output folder")


@command("search", _configure_search)
def _search(args: argparse.Namespace) -> int:
    """Budget-constrained architecture search; writes best.yaml / pareto/, trials.csv and plots."""
    from .report import export_results
    from .runner import SearchOptions, make_storage, run_search

    import optuna

    options = SearchOptions(space_path=args.space, out_dir=args.out, trials=args.trials, timeout=args.timeout,
                            budgets=args.budget, objective=args.objective, storage=args.storage,
                            study_name=args.study, seed=args.seed, progress=sys.stderr.isatty(),
                            train_iters=args.train_iters, data=args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    interrupted = False
    try:
        study = run_search(options, workers=args.workers)
    except KeyboardInterrupt:
        interrupted = True
        from .space import load_search_space

        name = args.study or load_search_space(args.space).file.name
        study = optuna.load_study(study_name=name, storage=make_storage(args.storage, args.out))
    except ValueError as exc:
        if type(exc).__name__ == "SpecError":
            raise
        print(f"srblocks search: error: {exc}", file=sys.stderr)
        return 2
    (out / META).write_text(json.dumps({"study": study.study_name, "storage": args.storage, "space": args.space}))
    summary = export_results(study, out)
    _print_summary(summary, study)
    return 130 if interrupted else 0


def _print_summary(summary: dict, study) -> None:
    print(f"study {summary['study']}: {summary['trials']} trials {summary['states']}")
    seeds = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("seed")]
    for t in seeds:
        value = ", ".join(f"{v:.4f}" for v in t.values) if t.values else t.state.name.lower()
        why = t.user_attrs.get("pruned_reason") or t.user_attrs.get("failure") or ""
        print(f"  paper model {t.user_attrs['seed']:<12} {value:<22} params {t.user_attrs.get('params', 0):>10,.0f}  {why}")
    for b in summary["best"]:
        value = ", ".join(f"{v:.4f}" for v in b["values"])
        print(f"  winner trial {b['number']:<11} {value:<22} params {b['params']:>10,.0f}"
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
