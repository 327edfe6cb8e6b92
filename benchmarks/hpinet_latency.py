"""CPU latency of HPINet-M x4 on a 180x320 LR input, and its peak inference memory at 256x256.

Median of N forward passes after warm-up (inference mode, 2 threads by default), for both weight layouts that
``build_model`` offers, next to the official implementation's time on these machines (about 4.4-4.8 s for this
input, ``../shared/docs/reference/hpinet.md``). Also prints where the time goes (torch profiler, one pass) and the
MACs per op: the convolutions, linears and attention matmuls are compute bound, so their share bounds what any
implementation with identical arithmetic can reach on the machine.

    python benchmarks/hpinet_latency.py [--runs 5] [--warmup 1] [--threads 2] [--spec hpinet_m] [--scale 4]

Measured on the 2-core development machine (torch 2.14.1, 2 threads, median of 5): channels_last 3.0-3.1 s,
contiguous 3.7-4.2 s, i.e. 1.4-1.6x faster than the official 4.4-4.8 s, with outputs equal to the official ones to
1e-4 (golden tests). The issue's 3x goal (<= 1.5 s) is not reached: convolutions (47.0 GMAC), linears (33.3 GMAC)
and attention (55.6 GMAC, flash SDPA) alone take about 2.0 s at this machine's measured GEMM throughput; see the
profile this script prints. Peak memory at 256x256 (profiler, meta device): about 480 MiB.
"""

from __future__ import annotations

import argparse
import platform

import torch
from torch.profiler import ProfilerActivity, profile as torch_profile

import srblocks
from srblocks.profile import measure_latency

OFFICIAL_SECONDS = (4.4, 4.8)  # official HPINet-M x4, 180x320 LR, 2 CPU threads (reference doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="hpinet_m")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    shape = (1, 3, 180, 320)
    print(f"{args.spec} x{args.scale}, input {shape}, {args.threads} threads, median of {args.runs} after "
          f"{args.warmup} warm-up; torch {torch.__version__}, {platform.machine()}")
    for fmt in ("channels_last", "contiguous"):
        model = srblocks.build_model(args.spec, scale=args.scale, memory_format=fmt).eval()
        ms, threads = measure_latency(model, shape, runs=args.runs, warmup=args.warmup, threads=args.threads)
        lo, hi = (1000 * s / ms for s in OFFICIAL_SECONDS)
        print(f"  {fmt:<14} {ms:8.0f} ms   {lo:.2f}-{hi:.2f}x faster than the official "
              f"{OFFICIAL_SECONDS[0]}-{OFFICIAL_SECONDS[1]} s")

    model = srblocks.build_model(args.spec, scale=args.scale).eval()
    prof = srblocks.profile(model, lr_size=shape[2:])
    print(f"\nMACs {prof.macs / 1e9:.2f}G at 180x320:")
    for op, macs in sorted(prof.macs_by_op.items(), key=lambda kv: -kv[1]):
        print(f"  {op:<28} {macs / 1e9:8.2f}G")
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    x = torch.rand(shape)
    with torch.inference_mode():
        model(x)
        with torch_profile(activities=[ProfilerActivity.CPU]) as trace:
            model(x)
    torch.set_num_threads(previous)
    print("\nWhere the time goes (one pass):")
    print(trace.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    mem = srblocks.profile(model, lr_size=(256, 256))
    print(f"Peak inference memory at 256x256 LR (profiler): {mem.peak_memory_bytes / 2**20:.1f} MiB "
          f"(activations {mem.peak_activation_bytes / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
