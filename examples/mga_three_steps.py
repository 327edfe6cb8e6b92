"""MGA's three training steps on a tiny RFDN-M x2, on CPU in under a minute: D-Net, All-Net, then the MP module.

    python examples/mga_three_steps.py [--iters 40] [--nf 16] [--threads 1]

The model is the shipped ``rfdn_m`` spec with a small width (``nf`` 16 instead of 50) and K = 25% of the patches;
one model goes through the steps of ``srblocks.mga_training`` (paper section 3.5):

1. ``train_d_net``: Base-Net + Refine-Net densely (mode "dense"), L1 on the SR output, with ``srblocks.train.train``;
2. ``train_all_net``: the Refine-Net on all cropped 6x6 patches (mode "all"), 10 L1(SR) + 1 L1(coarse);
3. ``train_mask_predictor``: only the MP module, Base and Refine frozen, L1 to the |All-Net - coarse| error target;

and ends in mode "mask" (the -M network). Training images: T91 from the shared folder when present
($SRBLOCKS_SHARED or ../shared), else the photograph bundled with matplotlib. LR patches 32x32, batch 4, lr 1e-3
(4e-4 in the paper, with 600K iterations per step; these few iterations only show that each step learns).

Each step prints its mean loss over the first and last fifth of its iterations; the script exits with status 1 if a
step did not reduce its loss. Measured (2-core shared CPU, 1 thread, 40 iterations per step, T91, 12 s of training):

    step 1 D-Net      L1           0.4143 -> 0.1799
    step 2 All-Net    10 L1 + L1   2.4862 -> 1.7734
    step 3 MP module  10 L1(mask)  6.7593 -> 4.1096
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import srblocks
from srblocks.data import embedded_default
from srblocks.mga_training import train_all_net, train_d_net, train_mask_predictor


def training_images() -> object:
    shared = Path(os.environ.get("SRBLOCKS_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
    t91 = shared / "data" / "train" / "T91"
    return t91 if t91.is_dir() else embedded_default("matplotlib")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=40, help="iterations per step")
    parser.add_argument("--nf", type=int, default=16, help="RFDN width (50 in the paper)")
    parser.add_argument("--k", type=float, default=0.25, help="fraction of patches refined in mode 'mask'")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    model = srblocks.build_model("rfdn_m", scale=2, nf=args.nf, k=args.k)
    print(f"rfdn_m x2, nf {args.nf}: {sum(p.numel() for p in model.parameters()):,} parameters")
    data = training_images()
    common = dict(iterations=args.iters, batch_size=4, lr_patch_size=32, lr=1e-3, min_lr=1e-5, warmup_iterations=2,
                  seed=args.seed, threads=args.threads, device="cpu")
    t0 = time.perf_counter()

    d = train_d_net(model, data, val_every=args.iters, progress=False, log_every=1, **common)
    d_losses = [h["loss"] for h in d.history]
    n = max(1, len(d_losses) // 5)
    rows = [("step 1 D-Net", "L1", float(np.mean(d_losses[:n])), float(np.mean(d_losses[-n:])))]
    a = train_all_net(model, data, **common)
    rows.append(("step 2 All-Net", "10 L1 + L1", a.mean_loss(True), a.mean_loss(False)))
    m = train_mask_predictor(model, data, **common)
    rows.append(("step 3 MP module", "10 L1(mask)", m.mean_loss(True), m.mean_loss(False)))

    ok = True
    for name, loss, first, last in rows:
        ok &= last < first
        print(f"  {name:<17} {loss:<12} {first:.4f} -> {last:.4f}  {'(reduced)' if last < first else '(NOT reduced)'}")
    mga = model.mga
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        model.eval()(x)
    print(f"final mode {mga.mode!r}: refines {mga.last.k} of {mga.last.mask.numel()} patches; "
          f"{time.perf_counter() - t0:.0f} s in all")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
