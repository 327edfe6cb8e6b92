"""How long does ``srblocks.profile`` take per shipped spec at 1280x720 output (issue 13 target: every spec under
5 s on 2 cores)? The profile is the meta-device pass behind ``srblocks summary`` and the search's budget checks.

Each spec is built at x2 (LR 360x640, output 720x1280). Every spec is profiled ``--rounds`` times in interleaved order,
with the per-node cache cleared before each call (a cold profile, as ``srblocks summary`` in a fresh process);
the median is printed. Wall times on a shared machine drift by up to 2x: compare specs within one run.

    python benchmarks/profile_speed.py [--rounds 3] [--threads 2] [--specs hpinet_l rcan_m]

Measured (2026-12-03, 2-core AMD EPYC, ``--rounds 1``, machine loaded by two training workers; raw output in
``benchmarks/results/profile_speed.txt``): every shipped spec under 5 s; slowest rcan_d 1.06 s (its MGA wrapper
hides 200 blocks from the per-node cache). On a quiet machine (same day, ``--rounds 3``, training paused): every
spec under 1.2 s; slowest rcan_m 1.14 s and rcan_d 1.11 s (medians), everything else <= 0.24 s.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import srblocks  # noqa: E402

prof_module = importlib.import_module("srblocks.profile")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--specs", nargs="*", default=None, help="shipped specs (default: all)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = args.specs if args.specs is not None else srblocks.shipped_spec_names()
    models = {name: srblocks.build_model(name, scale=2) for name in names}  # LR 360x640 -> 720x1280
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name, model in models.items():
            prof_module._NODE_CACHE.clear()
            start = time.perf_counter()
            result = srblocks.profile(model, (360, 640))
            times[name].append(time.perf_counter() - start)
            assert result.output_shape[-2:] == (720, 1280), (name, result.output_shape)
    print(f"# python benchmarks/profile_speed.py --rounds {args.rounds} --threads {args.threads}")
    print(f"{'spec':12s} {'median s':>9s} {'min s':>7s} {'max s':>7s}")
    for name in names:
        t = times[name]
        print(f"{name:12s} {statistics.median(t):9.2f} {min(t):7.2f} {max(t):7.2f}")
    worst = max(names, key=lambda n: statistics.median(times[n]))
    print(f"slowest: {worst} {statistics.median(times[worst]):.2f} s (target < 5 s)")


if __name__ == "__main__":
    main()
