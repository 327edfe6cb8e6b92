"""How many budget-only candidates per second are sampled, built and profiled (no training).

Each candidate: sample a spec from the space with Optuna (random sampler), validate and build it, re-parameterize
it, count params, and profile MACs and peak memory at the search's LR size on the meta device.

    python benchmarks/search_throughput.py [search/safmn_width_depth.yaml] [--candidates 40] [--threads 2]

Measured on the 2-core development machine (torch 2.14.1, 2 threads, 40 candidates at LR 180x320):
safmn_width_depth 25.9 candidates/s (goal >= 20/s for SAFMN-like specs; 38 ms build + profile each);
hybrid_x4 7.6 candidates/s (its FMEN training-form blocks are re-parameterized and its HPINet and RFDN stages
are larger graphs: 129 ms each).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import optuna
import torch

from srblocks.search import evaluate_candidate, load_search_space, parse_budgets
from srblocks.search.space import OptunaSampler

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space", nargs="?", default=str(REPO / "search" / "safmn_width_depth.yaml"))
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_search_space(args.space)
    budgets = parse_budgets("params=10G,macs=10T,memory=1000GB")  # never binding: every candidate is fully profiled
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    lr_size = tuple(space.settings.lr_size)
    timings = {"sample": 0.0, "build+profile": 0.0}
    start = time.perf_counter()
    for _ in range(args.candidates):
        t0 = time.perf_counter()
        trial = study.ask()
        spec = space.sample(OptunaSampler(trial))
        t1 = time.perf_counter()
        evaluate_candidate(spec, budgets, lr_size=lr_size, threads=args.threads, latency_runs=1, need_latency=False)
        t2 = time.perf_counter()
        study.tell(trial, 0.0)
        timings["sample"] += t1 - t0
        timings["build+profile"] += t2 - t1
    total = time.perf_counter() - start
    print(f"{space.file.name}: {args.candidates} budget-only candidates at LR {lr_size[0]}x{lr_size[1]} in {total:.2f} s "
          f"= {args.candidates / total:.1f} candidates/s ({args.threads} threads)")
    for name, seconds in timings.items():
        print(f"  {name:<14} {1000 * seconds / args.candidates:7.1f} ms per candidate")


if __name__ == "__main__":
    main()
