"""Does a searched network beat the paper models at equal budget? SAFMN x4's own budget, one table.

1. **Budget** (deploy form, x4, LR 180x320): params <= SAFMN's 239,520; peak inference memory (profiler) <= SAFMN's;
   CPU latency (2 threads) <= SAFMN's. Measured once and recorded.
2. **Search**: ``search/hybrid_x4.yaml`` with the default objective (``srblocks search``'s own, on the ref_x4
   training split of T91+BSD200, validated on its held-out split) for ``--search-minutes`` of wall time (default 60),
   resumable (Optuna journal under ``--work-dir``).
3. **Finalists**: the top 3 distinct completed trials by the search's objective whose latency, measured interleaved
   with SAFMN (median of per-round ratios), is <= 1.0; and the paper models: safmn, fsrcnn (under the budget),
   fmen_s and hpun_s (over it in params: listed, marked).
4. **Training**: every finalist with the ref_x4 protocol, seeds 0 and 1 (runs already in the fidelity store are
   reused, not repeated).
5. **Table**: params, MACs, latency ratio to SAFMN (median [min, max] over interleaved rounds), val PSNR, Set5 and
   Set14 (mean +- half-range over the seeds). Selection uses the search objective (validation) only; Set5/Set14
   are reported, never used to choose.

Resumable: every finished unit is a line in ``benchmarks/results/search_vs_papers.jsonl``.

Rounds (``--round``): round 1 searched the 5-family ``hybrid_x4`` space (its records have no ``round`` field, its
report is ``search_vs_papers.md``); round 2 (the default) searches the space with PAN's SCPA family and the image-level
bilinear skip added, with the budget re-measured in the default memory format, into its own search folder, finalist
labels ``searched2_trial<N>`` and report ``search_vs_papers_round2.md``. The paper models' trainings are shared by
both rounds (their keys are the spec's content hash, the protocol and the seed). Round 1 is complete and can only
be reported now: its space has changed, so ``run --round 1`` finds every unit done and does nothing. Each round's
per-trial table is copied to ``search_vs_papers[_roundN]_trials.csv`` beside the results.

    python benchmarks/search_vs_papers.py run [--search-minutes 60] [--workers 2] [--round 2]
    python benchmarks/search_vs_papers.py report [--round 2]   # writes benchmarks/results/search_vs_papers*.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _arch_sets import REPO, Arch, spec_hash  # noqa: E402
from _units import Unit, run_units  # noqa: E402
from srblocks.build import build_model  # noqa: E402
from srblocks.fileio import write_text_atomic  # noqa: E402
from srblocks.deploy import deploy  # noqa: E402
from srblocks.profile import count_params, profile  # noqa: E402
from srblocks.protocols import (ResultsStore, load_protocol, protocol_key, resolve_data,  # noqa: E402
                                run_protocol)

RESULTS = REPO / "benchmarks" / "results" / "search_vs_papers.jsonl"
FIDELITY = REPO / "benchmarks" / "results" / "search_fidelity.jsonl"
REPORT = REPO / "benchmarks" / "results" / "search_vs_papers.md"
SPACE = REPO / "search" / "hybrid_x4.yaml"
LR_SIZE = (180, 320)
SEEDS = (0, 1)
#: the paper models, and the paper architectures narrowed to fit the budget (in the fidelity run PAN and FMEN-S at
#: 36 channels had the best ref_x4 PSNRs of the 16 networks trained so far: they are the ones to beat)
PAPERS = [Arch("safmn", "safmn"), Arch("fsrcnn", "fsrcnn"), Arch("fmen_s", "fmen_s"), Arch("hpun_s", "hpun_s"),
          Arch("fmen_s_nf36", "fmen_s", {"n_feats": 36}), Arch("rfdn_nf36", "rfdn", {"nf": 36}),
          Arch("pan_nf36", "pan", {"nf": 36})]
#: protocol every finalist is trained with (``--protocol``): ref_x4 is the cheap one; ref_x4_long ranks more
#: stably (docs/search.md, "Is the reference itself stable?") at 3x the cost
DEFAULT_PROTOCOL = "ref_x4"
#: the round this process runs or reports (``--round``; see the module docstring)
ROUND = 2


def _rk(key: dict[str, Any]) -> dict[str, Any]:
    """``key`` of this round: round 1's keys are stored as they were written, without a ``round`` field."""
    return key if ROUND == 1 else {**key, "round": ROUND}


def _recs(store: ResultsStore, kind: str) -> list[dict[str, Any]]:
    """This round's records of ``kind``."""
    return [r for r in store.records(kind=kind) if r["key"].get("round", 1) == ROUND]


def _report_path() -> Path:
    return REPORT if ROUND == 1 else REPORT.with_name(f"{REPORT.stem}_round{ROUND}.md")


def _inference(arch: Arch) -> torch.nn.Module:
    model = build_model(arch.spec, **{"scale": 4, **arch.overrides})
    has_train_form = any(hasattr(m, "reparameterize") for m in model.modules())
    return (deploy(model) if has_train_form else model).eval()


def interleaved_latency(models: dict[str, torch.nn.Module], rounds: int = 7, threads: int = 2) -> dict[str, list[float]]:
    """Milliseconds per forward at LR_SIZE, one run of each model per round, in turn (A B C A B C ...), after one
    warm-up each; label -> times of every round."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.rand(1, 3, *LR_SIZE)
    times: dict[str, list[float]] = {k: [] for k in models}
    try:
        with torch.inference_mode():
            for m in models.values():
                m(x)
            for _ in range(rounds):
                for label, m in models.items():
                    t0 = time.perf_counter()
                    m(x)
                    times[label].append((time.perf_counter() - t0) * 1000)
    finally:
        torch.set_num_threads(previous)
    return times


def budget_unit(store: ResultsStore) -> None:
    from srblocks.build import model_memory_format

    key = _rk({"kind": "budget", "reference": "safmn", "lr_size": list(LR_SIZE), "version": 1})
    if store.has(key):
        return
    safmn = _inference(Arch("safmn", "safmn"))
    measured = profile(safmn, LR_SIZE)
    times = interleaved_latency({"safmn": safmn}, rounds=9)["safmn"]
    store.append(key, {"params": count_params(safmn), "memory_bytes": measured.peak_memory_bytes,
                       "latency_ms": statistics.median(times), "latency_runs_ms": [round(t, 1) for t in times],
                       "memory_format": str(model_memory_format(safmn))})


def _budget(store: ResultsStore) -> dict[str, Any]:
    rec = _recs(store, "budget")
    if not rec:
        raise RuntimeError("the budget has not been measured yet")
    return rec[0]


def _search_dir(work_dir: Path) -> Path:
    return work_dir / ("search" if ROUND == 1 else f"search_round{ROUND}")


def search_unit(store: ResultsStore, work_dir: Path, minutes: float) -> None:
    """Run (or resume) the search until it has used ``minutes`` of wall time in total."""
    from srblocks.search.runner import SearchOptions, run_search

    key = _rk({"kind": "search", "space": "hybrid_x4", "minutes": minutes, "version": 1})
    if store.has(key) or not _recs(store, "budget"):
        return  # done, or the budget is still being measured by another worker (the next pass picks this up)
    b = _budget(store)
    budgets = f"params={b['params']},memory={b['memory_bytes']}B,latency={b['latency_ms']:.1f}ms"
    spent = sum(r["wall_s"] for r in _recs(store, "search_chunk"))
    data = str(resolve_data(load_protocol("ref_x4")).root)
    while spent < minutes * 60:
        t0 = time.perf_counter()
        options = SearchOptions(space_path=str(SPACE), out_dir=str(_search_dir(work_dir)), trials=10_000,
                                timeout=minutes * 60 - spent, budgets=budgets, data=data, progress=False)
        run_search(options)
        chunk = time.perf_counter() - t0
        store.append(_rk({"kind": "search_chunk", "at": time.time()}), {"wall_s": chunk})
        spent += chunk
    study = _load_study(work_dir)
    from srblocks.search.report import export_results

    summary = export_results(study, _search_dir(work_dir))
    # the per-trial table (params, memory, latency, objective, prune reasons) beside the results, committed with them
    trials = (_search_dir(work_dir) / "trials.csv").read_text()
    write_text_atomic(RESULTS.with_name(f"{RESULTS.stem}{'' if ROUND == 1 else f'_round{ROUND}'}_trials.csv"), trials)
    store.append(key, {"budgets": budgets, "wall_s": spent, "trials": summary["trials"], "states": summary["states"],
                       "threads": torch.get_num_threads()})


def _load_study(work_dir: Path):
    import optuna

    from srblocks.search.runner import make_storage

    return optuna.load_study(study_name="hybrid_x4", storage=make_storage(None, _search_dir(work_dir)))


def finalists_unit(store: ResultsStore, work_dir: Path) -> None:
    """Pick the top 3 distinct searched networks (by the search's validation objective) within SAFMN's latency,
    measured interleaved with SAFMN."""
    import optuna

    key = _rk({"kind": "finalists", "version": 1})
    if store.has(key) or not _recs(store, "search"):
        return  # done, or the search is still running in another worker (the next pass picks this up)
    study = _load_study(work_dir)
    done = sorted((t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                   if t.value is not None and t.user_attrs.get("duplicate_of") is None),
                  key=lambda t: -t.value)
    safmn = _inference(Arch("safmn", "safmn"))
    chosen, seen, checked = [], set(), []
    for t in done:
        prefix = "searched" if ROUND == 1 else f"searched{ROUND}"
        arch = Arch(f"{prefix}_trial{t.number}", dict(t.user_attrs["spec"]), {}, "searched")
        h = spec_hash(arch)
        if h in seen:
            continue
        seen.add(h)
        times = interleaved_latency({"safmn": safmn, arch.label: _inference(arch)})
        ratio = statistics.median(a / s for a, s in zip(times[arch.label], times["safmn"]))
        checked.append({"trial": t.number, "value": t.value, "latency_ratio": ratio, "seed": t.user_attrs.get("seed")})
        if ratio <= 1.0:
            chosen.append({**arch.as_dict(), "trial": t.number, "search_value": t.value, "paper_seed": t.user_attrs.get("seed")})
        if len(chosen) == 3:
            break
    store.append(key, {"finalists": chosen, "checked": checked})


def _finalists(store: ResultsStore) -> list[Arch]:
    rec = _recs(store, "finalists")
    if not rec:
        return []
    return [Arch(f["label"], f["spec"], f["overrides"], f["group"]) for f in rec[0]["finalists"]]


def train_unit(arch: Arch, seed: int, store: ResultsStore, work_dir: Path, protocol_name: str) -> None:
    protocol = load_protocol(protocol_name)
    data = resolve_data(protocol)
    key = protocol_key(spec_hash(arch), protocol, data, seed)
    if store.has(key):
        return
    earlier = ResultsStore(FIDELITY).get(key)  # the same run made by search_fidelity.py
    if earlier is not None and earlier.get("test_psnr"):
        store.append(key, {**{k: v for k, v in earlier.items() if k != "key"}, "spec_name": arch.label,
                           "reused_from": FIDELITY.name})
        return
    run_protocol(arch.spec, protocol, seed=seed, data=data, store=store, work_dir=work_dir / "train",
                 overrides=arch.overrides, label=arch.label, progress=False, extra={"benchmark": "search_vs_papers"})


def latency_unit(archs: list[Arch], store: ResultsStore) -> None:
    key = _rk({"kind": "latency", "labels": sorted(a.label for a in archs), "version": 1})
    if store.has(key):
        return
    models = {"safmn": _inference(Arch("safmn", "safmn"))}
    models.update({a.label: _inference(a) for a in archs if a.label != "safmn"})
    times = interleaved_latency(models, rounds=9)
    ratios = {k: [a / s for a, s in zip(v, times["safmn"])] for k, v in times.items()}
    store.append(key, {"ratio_median": {k: statistics.median(v) for k, v in ratios.items()},
                       "ratio_min": {k: min(v) for k, v in ratios.items()},
                       "ratio_max": {k: max(v) for k, v in ratios.items()},
                       "ms_median": {k: statistics.median(v) for k, v in times.items()}, "threads": 2})


def memory_unit(archs: list[Arch], store: ResultsStore) -> None:
    """Peak inference memory (the profiler's prediction, the quantity the search's memory budget uses) of every
    network in the table, deploy form, LR_SIZE."""
    key = _rk({"kind": "memory", "labels": sorted(a.label for a in archs), "lr_size": list(LR_SIZE), "version": 1})
    if store.has(key):
        return
    store.append(key, {"memory_bytes": {a.label: profile(_inference(a), LR_SIZE).peak_memory_bytes for a in archs}})


#: the order the paper models are trained in: those under the budget first, the two over it in params last
TRAIN_ORDER = ["safmn", "pan_nf36", "fmen_s_nf36", "rfdn_nf36", "fsrcnn", "fmen_s", "hpun_s"]


def units(args: argparse.Namespace, store: ResultsStore) -> list[Unit]:
    """Budget, search, finalists, then the finalists' trainings (they are known once the search is done), then the
    paper models' (which a second worker trains while the first one searches), then the latency table."""
    work_dir = Path(args.work_dir)
    todo: list[Unit] = [("budget", lambda: budget_unit(store)),
                        ("search", lambda: search_unit(store, work_dir, args.search_minutes)),
                        ("finalists", lambda: finalists_unit(store, work_dir))]
    finalists = _finalists(store)
    papers = sorted(PAPERS, key=lambda a: TRAIN_ORDER.index(a.label))
    for arch in finalists + papers:
        for seed in SEEDS:
            todo.append((f"train {arch.label} seed {seed}",
                         lambda a=arch, s=seed: train_unit(a, s, store, work_dir, args.protocol)))
    if finalists:
        todo.append(("latency", lambda: latency_unit(PAPERS + finalists, store)))
        todo.append(("memory", lambda: memory_unit(PAPERS + finalists, store)))
    return todo


def report(args: argparse.Namespace) -> None:
    store = ResultsStore(args.results)
    archs = PAPERS + _finalists(store)
    protocol = load_protocol(args.protocol)
    data = resolve_data(protocol)
    budget = _recs(store, "budget")
    lat = _recs(store, "latency")
    lines = [f"# Searched networks vs the paper models at SAFMN x4's budget (round {ROUND})", ""]
    if budget:
        b = budget[0]
        lines += [f"Budget (deploy form, LR 180x320): params <= {b['params']:,}, peak memory <= "
                  f"{b['memory_bytes'] / 2**20:.1f} MiB, latency <= SAFMN's ({b['latency_ms']:.0f} ms, 2 threads, as "
                  "measured for the search's budget; the table compares latency as the median ratio to SAFMN over "
                  "interleaved rounds, which machine load affects alike).", ""]
    search = _recs(store, "search")
    if search:
        s = search[0]
        lines += [f"Search: {s['trials']} trials {s['states']} in {s['wall_s'] / 60:.0f} min of wall time.", ""]
    mem = _recs(store, "memory")
    lines += ["| network | params | MACs (G) | peak memory (MiB) | latency / SAFMN | val PSNR | Set5 | Set14 | seeds |",
              "|---|---|---|---|---|---|---|---|---|"]
    rows: dict[str, dict[str, Any]] = {}
    for arch in archs:
        runs = [store.get(protocol_key(spec_hash(arch), protocol, data, s)) for s in SEEDS]
        runs = [r for r in runs if r is not None]
        if not runs:
            lines.append(f"| {arch.label} | – | – | – | – | – | – | – | 0 |")
            continue
        ratio = lat[-1]["ratio_median"].get(arch.label) if lat else None
        memory = mem[-1]["memory_bytes"].get(arch.label) if mem else None
        over = _over_budget(budget[0] if budget else None, runs[0]["params"], memory, ratio)
        rows[arch.label] = {"group": arch.group, "over": over, "val": _mean([r["val_psnr"] for r in runs]),
                            "set5": _mean([r["test_psnr"]["Set5"] for r in runs]), "seeds": len(runs)}
        ratio_text = "–" if ratio is None else (f"{ratio:.2f} [{lat[-1]['ratio_min'][arch.label]:.2f}, "
                                                f"{lat[-1]['ratio_max'][arch.label]:.2f}]")
        mem_text = "–" if memory is None else f"{memory / 2**20:.1f}"
        label = f"{arch.label} (over: {', '.join(over)})" if over else arch.label
        lines.append(f"| {label} | {runs[0]['params']:,} | {runs[0]['macs'] / 1e9:.2f} | {mem_text} | {ratio_text} | "
                     f"{_stat([r['val_psnr'] for r in runs])} | {_stat([r['test_psnr']['Set5'] for r in runs])} | "
                     f"{_stat([r['test_psnr']['Set14'] for r in runs])} | {len(runs)} |")
    lines += ["", *_verdict(rows)]
    text = "\n".join(lines) + "\n"
    print(text)
    write_text_atomic(_report_path(), text)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _stat(values: list[float]) -> str:
    """Mean +- half-range over the seeds."""
    mean = _mean(values)
    return f"{mean:.3f} ± {(max(values) - min(values)) / 2:.3f}" if len(values) > 1 else f"{mean:.3f}"


def _over_budget(budget: dict[str, Any] | None, params: int, memory: int | None, ratio: float | None) -> list[str]:
    """The budgets a network breaks: params, peak memory, or latency (median interleaved ratio to SAFMN > 1)."""
    if budget is None:
        return []
    over = []
    if params > budget["params"]:
        over.append("params")
    if memory is not None and memory > budget["memory_bytes"]:
        over.append("memory")
    if ratio is not None and ratio > 1.0:
        over.append("latency")
    return over


def _verdict(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The goal of issue 10: the searched winner, chosen by validation PSNR only, beats every paper model within the
    budget by >= 0.1 dB on Set5 (mean over the seeds)."""
    searched = {k: v for k, v in rows.items() if v["group"] == "searched" and not v["over"]}
    papers = {k: v for k, v in rows.items() if v["group"] != "searched" and not v["over"]}
    if not searched or not papers:
        return ["Verdict: not yet measured (finalists or paper models missing)."]
    winner = max(searched, key=lambda k: searched[k]["val"])
    best = max(papers, key=lambda k: papers[k]["set5"])
    margin = searched[winner]["set5"] - papers[best]["set5"]
    reached = "reached" if margin >= 0.1 else "NOT reached"
    return [f"Winner (highest mean val PSNR among the searched finalists; Set5/Set14 never used to choose): "
            f"{winner}, val {searched[winner]['val']:.3f} dB.",
            f"Best paper model within the budget on Set5: {best}, {papers[best]['set5']:.3f} dB.",
            f"Goal (winner >= best paper model + 0.1 dB on Set5, mean of the seeds): {reached} — margin "
            f"{margin:+.3f} dB."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--search-minutes", type=float, default=60.0, help="wall time of the search (default 60)")
    r.add_argument("--max-minutes", type=float, default=None, help="start no unit after this many minutes")
    r.add_argument("--results", default=str(RESULTS))
    r.add_argument("--protocol", default=DEFAULT_PROTOCOL, help="training protocol of the finalists (ref_x4_long: "
                   "more stable ranking, 3x the cost)")
    r.add_argument("--work-dir", default=str(REPO / "runs" / "search_vs_papers"))
    r.add_argument("--workers", type=int, default=1, help="processes sharing the units (the search is one unit; "
                   "the other workers train the paper models meanwhile)")
    r.add_argument("--threads", type=int, default=None, help="torch threads per worker (default 2 // workers)")
    p = sub.add_parser("report")
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL)
    for sp in (r, p):
        sp.add_argument("--round", type=int, choices=(1, 2), default=2, help="which search round (module docstring)")
    args = parser.parse_args()
    global ROUND
    ROUND = args.round
    if args.command == "report":
        report(args)
        return
    args.threads = args.threads or max(1, 2 // args.workers)
    if args.workers <= 1:
        run(args)
        return
    import subprocess

    argv = [sys.executable, __file__, "run", "--workers", "1", "--threads", str(args.threads), "--results",
            args.results, "--work-dir", args.work_dir, "--protocol", args.protocol, "--search-minutes",
            str(args.search_minutes), "--round", str(args.round)] + (["--max-minutes", str(args.max_minutes)] if args.max_minutes else [])
    procs = [subprocess.Popen(argv) for _ in range(args.workers)]
    try:
        for proc in procs:
            proc.wait()
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
        raise


def _all_done(args: argparse.Namespace, store: ResultsStore) -> bool:
    protocol = load_protocol(args.protocol)
    data = resolve_data(protocol)
    finalists = _finalists(store)
    if not finalists or not _recs(store, "latency") or not _recs(store, "memory"):
        return False
    return all(store.has(protocol_key(spec_hash(a), protocol, data, s)) for a in PAPERS + finalists for s in SEEDS)


def run(args: argparse.Namespace) -> None:
    """One worker: passes over the unit list until every unit has its record. A unit that waits on another
    worker's (the finalists wait for the search) is tried again on the next pass, a minute later."""
    store = ResultsStore(args.results)
    torch.set_num_threads(args.threads)
    deadline = time.time() + args.max_minutes * 60 if args.max_minutes else None
    while not _all_done(args, store):
        if deadline is not None and time.time() > deadline:
            print("time limit reached; rerun to continue", flush=True)
            return
        t0 = time.perf_counter()
        before = store.records()
        left = (deadline - time.time()) / 60 if deadline is not None else None
        run_units(units(args, store), store, Path(args.work_dir) / f"claims_round{ROUND}", left)
        new = store.records()[len(before):]
        if new and all(r["key"].get("kind") == "failure" for r in new):
            print("only failures in this pass (see the results file); stopping", flush=True)
            return
        if time.perf_counter() - t0 < 30:
            time.sleep(60)  # everything left is claimed by another worker, or waits for one


if __name__ == "__main__":
    main()
