"""CPU inference backends per shipped family: torch eager (contiguous and channels_last), torch.compile, ONNX
Runtime and OpenVINO (f32; bf16 only with --bf16), at x4 and 180x320 LR (output 720x1280), 2 threads.

Timing is interleaved: each round runs every backend once in turn (A B C ... A B C ...), so load on the machine
affects all of them alike; the table shows each backend's median over the rounds and its median time relative to
torch eager (contiguous) in the same rounds. Max abs diff is against torch eager on a Set5 LR crop (synthetic image
without the reference data), on the model's own output scale (0..1, or 0..255 for FMEN). torch.compile's first
call (compilation included) is reported on its own. Random weights: speed and differences do not depend on them.

    python benchmarks/backends.py                           # every family, 10 rounds
    python benchmarks/backends.py --families fmen_s --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from typing import Callable

import torch

import srblocks
from srblocks.build import model_info

#: one shipped spec per family (x4); FMEN-S in its deploy form
FAMILIES = {"safmn": {}, "fmen_s": {"deploy": True}, "hpun_s": {}, "hpinet_s": {}, "rfdn": {}, "fsrcnn": {},
            "pan": {}, "srresnet": {}, "rcan": {}}


def _runners(name: str, overrides: dict, size: tuple[int, int], threads: int, bf16: bool
             ) -> tuple[dict[str, Callable[[torch.Tensor], torch.Tensor]], dict[str, float]]:
    from srblocks.backends import OnnxRuntimeRunner, OpenVinoRunner
    from srblocks.export import export_onnx_bytes
    from srblocks.export.errors import DynamicShapeError

    eager = srblocks.build_model(name, scale=4, memory_format="contiguous", **overrides).eval()
    nhwc = srblocks.build_model(name, scale=4, memory_format="channels_last", **overrides).eval()
    nhwc.load_state_dict(eager.state_dict())
    runners: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"torch": eager, "torch channels_last": nhwc}
    notes: dict[str, float] = {}
    compiled = torch.compile(eager)
    x = torch.rand(1, 3, *size) * model_info(eager).input_range
    start = time.perf_counter()
    with torch.inference_mode():
        compiled(x)
    notes["torch.compile first call s"] = time.perf_counter() - start
    runners["torch.compile"] = compiled
    try:
        data, metadata, _, _ = export_onnx_bytes(eager)
    except DynamicShapeError as exc:  # e.g. HPINet's patch grid: a fixed-size export at the benchmark size
        print(f"  {name}: no dynamic export ({exc.args[0].split(' (')[0]}); ONNX/OpenVINO use a fixed {size[0]}x{size[1]} "
              "export", file=sys.stderr)
        data, metadata, _, _ = export_onnx_bytes(eager, fixed_size=size)
    runners["onnxruntime"] = OnnxRuntimeRunner(data, threads=threads)
    try:
        from srblocks.export.openvino import onnx_to_openvino

        ov_model = onnx_to_openvino(data, metadata)
        runners["openvino f32"] = OpenVinoRunner(ov_model, threads=threads, precision="f32")
        if bf16 and _cpu_has_bf16():
            runners["openvino bf16"] = OpenVinoRunner(ov_model, threads=threads, precision="bf16")
        elif bf16:
            print("  openvino bf16 not timed: this CPU has no bf16 support (OpenVINO runs the bf16 hint in f32 here)",
                  file=sys.stderr)
    except srblocks.errors.SrblocksError as exc:
        print(f"  openvino skipped: {exc}", file=sys.stderr)
    return runners, notes


def _cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin can run bf16 on this CPU (AVX512-BF16 or AMX): without it the bf16 hint
    silently runs in f32, so timing it would report f32 as bf16."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def bench(name: str, overrides: dict, size: tuple[int, int], threads: int, rounds: int, bf16: bool) -> None:
    from srblocks.export.verify import verification_input

    torch.set_num_threads(threads)
    runners, notes = _runners(name, overrides, size, threads, bf16)
    eager = runners["torch"]
    x, where = verification_input(*size, 4, float(model_info(eager).input_range))
    times: dict[str, list[float]] = {k: [] for k in runners}
    diffs: dict[str, float] = {}
    with torch.inference_mode():
        ref = eager(x)
        for key, run in runners.items():  # warm-up and accuracy
            diffs[key] = (run(x).float() - ref).abs().max().item()
        for _ in range(rounds):
            for key, run in runners.items():
                start = time.perf_counter()
                run(x)
                times[key].append(time.perf_counter() - start)
    print(f"\n{name} x4 {size[0]}x{size[1]}, {threads} threads, {rounds} interleaved rounds; input {where}")
    print(f"  {'backend':<22} {'median ms':>10} {'vs torch':>9} {'max abs diff':>13}")
    for key in runners:
        rel = statistics.median(t / e for t, e in zip(times[key], times["torch"]))
        print(f"  {key:<22} {statistics.median(times[key]) * 1e3:>10.1f} {rel:>9.2f} {diffs[key]:>13.3g}")
    for key, value in notes.items():
        print(f"  {key}: {value:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--size", default="180x320", help="LR size HxW")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--bf16", action="store_true", help="also time OpenVINO bf16 (opt-in; not exact)")
    args = p.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    for name in args.families:
        bench(name, FAMILIES[name], (h, w), args.threads, args.rounds, args.bf16)


if __name__ == "__main__":
    main()
