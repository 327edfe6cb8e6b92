"""CPU latency of every shipped spec at a 180x320 LR input (x4 unless a spec has no x4; deploy forms).

Median of N runs after warm-up in inference mode, with the thread count printed. Specs with a train/deploy form are
measured in the deploy form (what one would run).

    python benchmarks/latency.py [--runs 5] [--threads 2] [--size 180x320] [--scale 4] [specs ...]
"""

from __future__ import annotations

import argparse
import platform

import torch

import srblocks
from srblocks.profile import measure_latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", help="spec names (default: all shipped)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="180x320")
    parser.add_argument("--scale", type=int, default=4)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    print(f"CPU latency, input 1x3x{h}x{w}, x{args.scale}, {args.threads} threads, median of {args.runs} after "
          f"{args.warmup} warm-up; torch {torch.__version__}, {platform.processor() or platform.machine()}")
    for name in args.specs or srblocks.shipped_spec_names():
        variables = srblocks.load_spec(name).spec.variables
        model = srblocks.build_model(name, scale=args.scale) if "scale" in variables else srblocks.build_model(name)
        model = srblocks.deploy(model)
        ms, threads = measure_latency(model, (1, 3, h, w), runs=args.runs, warmup=args.warmup, threads=args.threads)
        params = sum(p.numel() for p in model.parameters())
        print(f"  {name:<14} {ms:10.1f} ms   ({params:,} params, {threads} threads)")


if __name__ == "__main__":
    main()
