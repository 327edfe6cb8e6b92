"""Which memory format is faster, per shipped spec: contiguous (NCHW) against channels_last (NHWC), interleaved.

Every shipped spec in the form one runs (deploy form where there is one), x4 unless the spec has no scale variable,
on an NCHW float input of 180x320 LR (what a user passes), 2 threads, in inference mode. Each round times one call of
each layout in turn (A B A B ...), after one warm-up call each; the ratio is median(channels_last) /
median(contiguous), with the range of the per-round ratios. A spec whose contiguous call takes longer than
``--slow-s`` seconds is timed at 90x160 instead (printed). ``max abs diff`` compares the two layouts' outputs on the
same input, relative to the output range: both are the same network, so this is float rounding only.

    python benchmarks/layout.py [--rounds 5] [--threads 2] [--size 180x320] [specs ...]

A spec's ``memory_format:`` field (default: channels_last) picks the layout ``build_model`` returns; this benchmark
is the evidence for that default. Results of a run on this machine: ``benchmarks/results/layout.txt``.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch

import srblocks
from srblocks.profile import _num_threads


def _time_call(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def compare(name: str, size: tuple[int, int], rounds: int, slow_s: float) -> str:
    variables = srblocks.load_spec(name).spec.variables
    kwargs = {"scale": 4} if "scale" in variables else {}
    base = srblocks.deploy(srblocks.build_model(name, memory_format="contiguous", **kwargs)).eval()
    models = {"contiguous": base,
              "channels_last": copy.deepcopy(base).to(memory_format=torch.channels_last)}
    torch.manual_seed(0)
    h, w = size
    x = torch.rand(1, 3, h, w) * base.meta["srblocks"].input_range
    with torch.inference_mode():
        first = _time_call(models["contiguous"], x)
        if first > slow_s:
            h, w = h // 2, w // 2
            x = torch.rand(1, 3, h, w) * base.meta["srblocks"].input_range
        outs = {k: m(x) for k, m in models.items()}  # warm-up of both, and the outputs compared
        times: dict[str, list[float]] = {k: [] for k in models}
        for _ in range(rounds):
            for k, m in models.items():
                times[k].append(_time_call(m, x))
    ref = outs["contiguous"]
    rel_diff = float((outs["channels_last"] - ref).abs().max()) / max(float(ref.max() - ref.min()), 1e-12)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_round = [c / n for c, n in zip(times["channels_last"], times["contiguous"])]
    ratio = med["channels_last"] / med["contiguous"]
    faster = "channels_last" if ratio < 0.97 else "contiguous" if ratio > 1.03 else "tie"
    return (f"| {name} | {h}x{w} | {med['contiguous'] * 1000:.1f} | {med['channels_last'] * 1000:.1f} | "
            f"{ratio:.2f} [{min(per_round):.2f}, {max(per_round):.2f}] | {rel_diff:.1e} | {faster} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", help="spec names (default: all shipped)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="180x320", help="LR HxW")
    parser.add_argument("--slow-s", type=float, default=15.0,
                        help="time a spec at half the size when one contiguous call takes longer (s)")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    print(f"contiguous vs channels_last, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, {args.rounds} interleaved rounds after one warm-up call each\n")
    print("| spec | LR size | contiguous ms | channels_last ms | ratio cl/contig [per-round range] | "
          "max abs diff / range | faster |")
    print("|---|---|---|---|---|---|---|")
    with _num_threads(args.threads):
        for name in args.specs or srblocks.shipped_spec_names():
            print(compare(name, (h, w), args.rounds, args.slow_s), flush=True)


if __name__ == "__main__":
    main()
