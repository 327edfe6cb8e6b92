"""A small budget-constrained search on the embedded default images, in a few minutes on 2 CPU cores.

Searches ``search/hybrid_x4.yaml`` (SAFMN FMMs, FMEN ERB+HFAB pairs, HPUN HPUBs, HPINet blocks and RFDN RFDBs in
two stages of their own widths) for x4 networks
within SAFMN x4's own budget (240K parameters, 65 MiB peak inference memory for a 180x320 LR frame; SAFMN itself
has 239,520 parameters and needs 64.9 MiB, so it competes), training each candidate for a few dozen iterations on crops
of the embedded image (a proxy: the absolute PSNRs are far below converged values; the ranking is what a search
uses). The paper models enqueued in the space (SAFMN, an FMEN-S-like design) compete with the sampled ones; the
winner is exported as a spec that ``srblocks.build_model`` loads.

    python examples/search_quickstart.py [--trials 20] [--iters 30] [-o runs/quickstart]

Measured on the 2-core development machine while two training jobs shared its cores: 20 trials in 465 s
(user CPU 374 s; the earlier, idle-machine run took 88 s), 14 pruned (12 by the budgets in milliseconds each, among
them the FMEN-S-like design, 262,512 > 240,000 parameters; 2 by the median pruner), 6 trained. SAFMN itself is
feasible (64.9 MiB) and scores 21.92 dB; the winner (trial 15, 75,428 deploy-form parameters, 60.7 MiB) scores
23.05 dB on this 30-iteration proxy, and is written to ``runs/quickstart/best.yaml``. The proxy favours small,
fast-converging networks; see docs/search.md for how far such short-training rankings can be trusted.

Equivalent command line:

    srblocks search search/hybrid_x4.yaml --trials 20 --train-iters 30 \
        --budget params=240K,memory=65MB -o runs/quickstart
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import srblocks
from srblocks.search import SearchOptions, export_results, run_search

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("-o", "--out", default="runs/quickstart")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    options = SearchOptions(space_path=str(REPO / "search" / "hybrid_x4.yaml"), out_dir=args.out, trials=args.trials,
                            budgets="params=240K,memory=65MB", train_iters=args.iters, progress=True)
    study = run_search(options)
    summary = export_results(study, args.out)
    print(f"\n{summary['trials']} trials in {time.perf_counter() - start:.0f} s: {summary['states']}")
    print(f"{'candidate':<24} {'state':<9} {'proxy PSNR':>10} {'params':>9} {'MiB@180x320':>12}")
    for t in sorted(study.get_trials(), key=lambda t: (t.values is None, -(t.values or [0])[0])):
        label = f"paper: {t.user_attrs['seed']}" if t.user_attrs.get("seed") else f"trial {t.number}"
        psnr = f"{t.values[0]:.3f}" if t.values else "-"
        memory = t.user_attrs.get("memory")
        mib = f"{memory / 2**20:>12.1f}" if memory else f"{'-':>12}"
        print(f"{label:<24} {t.state.name.lower():<9} {psnr:>10} {t.user_attrs.get('params', 0):>9,.0f} {mib}")
    if summary["winners"]:
        best = srblocks.deploy(srblocks.build_model(summary["winners"][0]))
        print(f"\nwinner: {summary['winners'][0]} ({sum(p.numel() for p in best.parameters()):,} deploy-form "
              f"params), plots in {args.out}")


if __name__ == "__main__":
    main()
