"""Is the profiler's predicted peak memory right? Predicted against measured CPU peak, every shipped spec, both
memory formats (issue 13 §3, "peak memory, predicted right").

* predicted: ``srblocks.profile(model, lr_size).peak_activation_bytes``, a meta-device pass (no arithmetic) with
  the CPU convolution and attention rules of ``srblocks/profile.py`` (oneDNN's blocked-layout reorders for NCHW
  k x k convolutions, transposed-convolution column buffers, the fused CPU attention kernel);
* measured: ``srblocks.profile.measure_peak_memory``, the running sum of ``torch.profiler`` memory events over
  one forward pass after a warm-up (exact from run to run; no timing, so a loaded machine does not matter).

Each spec is built at x4, in its training form (FMEN-S also deploy), with the given ``--threads`` (the prediction
is for the same count). Prints one line per model and format, then the worst ratio and how many are within +-5 %.
Target: all within +-5 %. Below about 90x160 LR, size-independent buffers (weight reorders, scratchpads) make
small models read low (FSRCNN 0.90 at 48x64).

    python benchmarks/memory_model.py [--lr-size 180x320] [--threads 2] [--specs safmn fmen_s]

Measured (2026-12-03, torch 2.14.1, 2-core AMD EPYC, AVX2; defaults: LR 180x320, 2 threads; raw output in
``benchmarks/results/memory_model.txt``): 64 of 64 model/format pairs within +-5 %, ratio range [0.974, 1.001];
all but the SRResNet specs contiguous (0.974-0.976, a 9x9 convolution rule) and FSRCNN
(0.987-0.992, transposed-convolution buffers) within 0.2 %. Before the CPU rules: 0.879 for SAFMN contiguous,
0.82 for FMEN-S contiguous, 0.90 for RFDN contiguous, 1.25-1.40 for HPINet-S at 90x160.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import srblocks  # noqa: E402
from srblocks.profile import measure_peak_memory  # noqa: E402

FORMATS = ("contiguous", "channels_last")


def _build(name: str, memory_format: str, deploy: bool) -> torch.nn.Module:
    return srblocks.build_model(name, scale=4, memory_format=memory_format, **({"deploy": True} if deploy else {}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--specs", nargs="*", default=None, help="shipped specs (default: all)")
    p.add_argument("--lr-size", default="180x320", help="LR input HxW (default 180x320)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    h, w = (int(v) for v in args.lr_size.lower().split("x"))
    torch.set_num_threads(args.threads)
    names = args.specs if args.specs is not None else srblocks.shipped_spec_names()
    units = [(n, False) for n in names] + [(n, True) for n in names if n == "fmen_s"]
    print(f"# python benchmarks/memory_model.py --lr-size {h}x{w} --threads {args.threads}  "
          f"(torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()})")
    print(f"{'spec':14s} {'format':14s} {'predicted MiB':>14s} {'measured MiB':>13s} {'ratio':>7s}")
    ratios: list[float] = []
    for name, deploy in units:
        for fmt in FORMATS:
            model = _build(name, fmt, deploy).eval()
            predicted = srblocks.profile(model, (h, w), threads=args.threads).peak_activation_bytes
            measured = measure_peak_memory(model, (1, 3, h, w), threads=args.threads)
            ratios.append(predicted / measured)
            label = name + (" deploy" if deploy else "")
            print(f"{label:14s} {fmt:14s} {predicted / 2**20:14.1f} {measured / 2**20:13.1f} {ratios[-1]:7.3f}",
                  flush=True)
    within = sum(abs(r - 1) <= 0.05 for r in ratios)
    print(f"{within} of {len(ratios)} within +-5 %; ratio range [{min(ratios):.3f}, {max(ratios):.3f}]")


if __name__ == "__main__":
    main()
