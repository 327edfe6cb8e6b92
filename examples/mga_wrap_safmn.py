"""Wrap your own network in MGA's mask-guided form, declaratively: SAFMN x4, split after its 6th FMM.

The whole change is a small spec that extends the shipped one (no network code)::

    extends: safmn
    name: safmn_m
    variables: {k: 0.1}
    mask_guided: {split: feats.5, tail: body_residual, k: k, patch_size: 16, halo: 2}

``split`` names the node whose output is the coarse feature F_c (here after 6 of the 8 FMMs); ``tail`` the first node
of the reconstruction tail (the global residual, conv and pixel shuffle). The transform then builds:

* Base-Net: to_feat, FMMs 0-5 and its own copy of the tail (= SAFMN with 6 FMMs) -> the coarse image;
* Mask Prediction module on F_c -> one error score per 16x16 LR patch; the K highest per image are selected;
* Refine-Net: FMMs 6-7 and the original tail, run on 20x20 crops (16 + 2-pixel halo) of F_c and of to_feat (the
  global residual's other input, which the transform finds by itself), pasted over the coarse image.

SAFMN's multi-scale pooling (down to 1/8) needs windows of at least 8 pixels, so MGA's default 4x4 patches (6x6
windows) are too small here: 16x16 patches with a 2-pixel halo. The model is untrained (random weights): this shows
the cost side only; train it with the three steps of ``examples/mga_three_steps.py``.

    python examples/mga_wrap_safmn.py [--threads 2] [--rounds 7] [--size 180x320]

Measured on this repository's 2-core CPU (shared with other jobs), 2 threads, 180x320 -> 720x1280, 7 rounds
("saved" is relative to the shipped SAFMN; SAFMN-D is the split network run densely, what -M accelerates):

    model                       params      MACs   saved   latency   saved
    SAFMN (shipped)            239,520    13.55G    0.0%     466ms    0.0%
    SAFMN-D (dense split)      255,120    14.59G   -7.7%     507ms   -8.7%
    SAFMN-M  K =  5%           267,520    11.50G   15.2%     400ms   14.2%
    SAFMN-M  K = 10%           267,520    11.84G   12.7%     413ms   11.5%
    SAFMN-M  K = 25%           267,520    12.85G    5.2%     445ms    4.5%

Against SAFMN-D, -M at 10% saves 19% of the MACs and of the time. The savings are smaller than RFDN's
(benchmarks/mga_speed.py) because only 2 of 8 blocks are refined, the MP module costs 0.71G and the 20x20 windows
have 1.56x the pixels of their 16x16 cores. Extra parameters: the Base-Net's tail copy (to_img.0, 15,600) and the
MP module (nf 36: 12,400).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import yaml

import srblocks
from srblocks.cli import parse_size

SPEC = """
extends: safmn
name: safmn_m
description: SAFMN x4 in MGA's mask-guided form, split after the 6th of 8 FMMs.
variables: {k: 0.1}
mask_guided: {split: feats.5, tail: body_residual, k: k, patch_size: 16, halo: 2}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", type=parse_size, default="180x320", help="LR size HxW, or N for NxN")
    args = parser.parse_args(argv)
    h, w = args.size
    torch.manual_seed(0)

    spec = yaml.safe_load(SPEC)
    models: dict[str, torch.nn.Module] = {"SAFMN (shipped)": srblocks.build_model("safmn", scale=4)}
    dense = dict(spec, mask_guided={**spec["mask_guided"], "mode": "dense", "mask_predictor": False})
    models["SAFMN-D (dense split)"] = srblocks.build_model(dense, scale=4)
    for frac in (0.05, 0.10, 0.25):
        models[f"SAFMN-M  K = {round(frac * 100):2d}%"] = srblocks.build_model(spec, scale=4, k=frac)
    info = models["SAFMN-M  K =  5%"].mga.split_info  # type: ignore[union-attr]
    print(f"split at feats.5: the Refine-Net is {info['refine_ids']}, it also reads {info['extras']} (cropped)")

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    x = torch.rand(1, 3, h, w)
    times: dict[str, list[float]] = {name: [] for name in models}
    try:
        with torch.inference_mode():
            for m in models.values():
                m.eval()(x)  # warm-up
            for _ in range(args.rounds):  # interleaved, so that load from other processes hits all models alike
                for name, m in models.items():
                    start = time.perf_counter()
                    m(x)
                    times[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)

    ref_name = "SAFMN (shipped)"
    ref_macs = srblocks.profile(models[ref_name], (h, w)).macs
    ref_time = statistics.median(times[ref_name])
    print(f"\nx4, LR {h}x{w}, CPU {args.threads} threads, median of {args.rounds} interleaved rounds")
    print(f"  {'model':<24} {'params':>9} {'MACs':>9} {'saved':>7} {'latency':>9} {'saved':>7}")
    for name, m in models.items():
        macs = srblocks.profile(m, (h, w)).macs
        t = statistics.median(times[name])
        params = sum(p.numel() for p in m.parameters())
        print(f"  {name:<24} {params:>9,} {macs / 1e9:8.2f}G {100 * (1 - macs / ref_macs):6.1f}% "
              f"{t * 1000:7.0f}ms {100 * (1 - t / ref_time):6.1f}%")
    m = models["SAFMN-M  K = 10%"]
    with torch.no_grad():
        m(x)
    last = m.mga.last  # type: ignore[union-attr]
    print(f"\nlast call of SAFMN-M at 10%: refined {last.k} of {last.mask.numel()} patches per image; "
          f"coarse image {tuple(last.coarse.shape)}, mask {tuple(last.mask.shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
