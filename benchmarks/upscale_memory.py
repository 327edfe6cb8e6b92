"""Peak memory of ``srblocks upscale`` on a large image: RSS after loading the model, peak RSS, the difference.

Default: FSRCNN x4 (a small, fast model; random weights, which do not change the memory), a 4000x3000 LR photo-like
PNG (output 16000x12000), ``--tile 512`` (the default overlap of 32), PNG output, 1 thread. The upscale runs in a
child process under ``/usr/bin/time -v``; the child reports its RSS right after the CLI has loaded the model
(``/proc/self/status`` VmRSS) and ``time`` its peak RSS ("Maximum resident set size"). The issue's goal: the
difference at most 2.5 GB (before the row-band path it peaked at 12.8 GB). About 3-5 minutes on 2 CPU cores.

    python benchmarks/upscale_memory.py [--size 3000x4000] [--spec fsrcnn] [--scale 4] [--tile 512] [--ext png]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def child(args: argparse.Namespace) -> int:
    """Run ``srblocks upscale`` in this process, printing the RSS after the model is loaded."""
    import srblocks.cli_eval as cli_eval
    from srblocks.cli import main

    load = cli_eval.load_model_for_inference

    def load_and_report(ns: argparse.Namespace):
        model = load(ns)
        print(f"RSS_AFTER_LOAD_KIB {_status_kib('VmRSS')} {_status_kib('VmHWM')}", file=sys.stderr, flush=True)
        return model

    cli_eval.load_model_for_inference = load_and_report
    return main(["upscale", args.spec, "--weights", args.weights, "--scale", str(args.scale), args.input,
                 "-o", args.output, "--tile", str(args.tile), "--threads", str(args.threads), "--ext", args.ext])


def _photo(h: int, w: int):
    """A smooth photo-like uint8 (h, w, 3) image (compresses like a photo, not like noise), built row band by band."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = np.empty((h, w, 3), np.uint8)
    xx = np.arange(w)[None, :] / max(h, w)
    for r in range(0, h, 256):
        yy = np.arange(r, min(h, r + 256))[:, None] / max(h, w)
        chans = [np.sin(2 * np.pi * (f * xx + g * yy) + p) for f, g, p in ((2.1, 1.3, 0), (0.7, 2.9, 2), (3.3, 0.4, 4))]
        band = 127.5 + 100 * np.stack(chans, -1) + rng.normal(0, 4, (yy.shape[0], w, 3))
        out[r : r + yy.shape[0]] = np.clip(np.round(band), 0, 255)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="3000x4000", help="LR height x width (default 3000x4000: 4000 wide)")
    parser.add_argument("--spec", default="fsrcnn")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ext", default="png")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    import torch
    from PIL import Image

    import srblocks

    h, w = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="upscale_memory_") as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        weights = srblocks.save_weights(srblocks.build_model(args.spec, scale=args.scale), work / "w.safetensors")
        src = work / "in" / "photo.png"
        src.parent.mkdir()
        Image.fromarray(_photo(h, w)).save(src, compress_level=1)
        out = work / "out"
        command = ["/usr/bin/time", "-v", sys.executable, str(Path(__file__).resolve()), "--child",
                   "--spec", args.spec, "--scale", str(args.scale), "--tile", str(args.tile),
                   "--threads", str(args.threads), "--ext", args.ext, "--weights", str(weights),
                   "--input", str(src), "--output", str(out)]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        t0 = time.perf_counter()
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            return run.returncode
        after = re.search(r"RSS_AFTER_LOAD_KIB (\d+) (\d+)", run.stderr)
        peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)
        written = next(out.iterdir())
        size_mb = written.stat().st_size / 1e6
        Image.MAX_IMAGE_PIXELS = None  # our own output: not a decompression bomb
        with Image.open(written) as im:
            out_w, out_h = im.size
    rss_load, peak_kib = int(after.group(1)) * 1024, int(peak.group(1)) * 1024
    print(f"srblocks upscale {args.spec} x{args.scale}, LR {h}x{w} -> {out_h}x{out_w} {args.ext.upper()} "
          f"({size_mb:.1f} MB), --tile {args.tile} (overlap 32), {args.threads} thread(s), random weights; "
          f"{seconds:.0f} s; torch {torch.__version__}")
    print(f"  RSS after loading the model: {rss_load / 2**30:6.2f} GiB")
    print(f"  peak RSS (/usr/bin/time -v):  {peak_kib / 2**30:6.2f} GiB")
    print(f"  difference:                   {(peak_kib - rss_load) / 2**30:6.2f} GiB   (goal: at most 2.5 GB = "
          f"{2.5e9 / 2**30:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
