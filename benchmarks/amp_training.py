"""What does mixed precision cost and save when training? float32 vs bf16 vs fp16 autocast, one protocol (issue 12 §3).

Each unit trains one spec with one precision under a training protocol (default ``ref_x4``) with the same seed and
data, and appends the protocol runner's record (val / Set5 / Set14 PSNR in the paper's Y convention, wall time,
machine; the key holds ``amp``) to the results file; a rerun skips what is there. ``report`` prints, per device and
spec, each precision's training wall time, its speed-up over float32 and its PSNR difference to float32.

Meant for a GPU (bf16 needs Ampere or newer, fp16 needs CUDA); on a CPU only ``none`` and ``bf16`` run, and bf16 is
usually slower there without AMX/AVX512-BF16.

    python benchmarks/amp_training.py run [--specs safmn fmen_s] [--amps none bf16 fp16] [--data DIR] [--device cuda]
    python benchmarks/amp_training.py report
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from srblocks.protocols import ResultsStore, load_protocol, resolve_data, run_protocol  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "amp_training.jsonl"
AMPS = ("none", "bf16", "fp16")


def run(args: argparse.Namespace) -> None:
    store = ResultsStore(args.results)
    protocol = load_protocol(args.protocol)
    data = resolve_data(protocol, args.data)
    for spec in args.specs:
        for amp in args.amps:
            try:
                record = run_protocol(spec, protocol, seed=args.seed, data=data, store=store, device=args.device,
                                      progress=False, amp=None if amp == "none" else amp,
                                      extra={"benchmark": "amp_training", "data_dir": str(args.data or "default")})
            except Exception as exc:  # noqa: BLE001 - a diverged or unsupported precision is a result, the rest go on
                print(f"{spec:<10} {amp:<5} FAILED: {type(exc).__name__}: {exc}", flush=True)
                continue
            done = "reused" if record.get("reused") else "trained"
            print(f"{spec:<10} {amp:<5} {done}: val {record['val_psnr']:.3f} dB, Set5 "
                  f"{record['test_psnr'].get('Set5', float('nan')):.3f} dB, {record['wall_s']:.1f} s "
                  f"on {record['machine']['device']}", flush=True)
    report(args)


def report(args: argparse.Namespace) -> None:
    rows = [r for r in ResultsStore(args.results).records(kind="protocol") if r.get("benchmark") == "amp_training"]
    if not rows:
        print(f"no records in {args.results}")
        return
    groups: dict[tuple[str, str, str, str], dict[str, dict[str, Any]]] = {}
    for r in rows:
        where = (r["machine"]["device"], r["machine"]["torch"], r.get("data_dir", ""), r["spec_name"])
        groups.setdefault(where, {})[r.get("amp", "none")] = r
    for (device, version, data_dir, spec), by_amp in sorted(groups.items()):
        base = by_amp.get("none")
        print(f"\n{spec} on {device} (torch {version}), protocol {next(iter(by_amp.values()))['protocol']}, "
              f"data {data_dir}")
        print("| precision | wall (s) | speed-up vs float32 | val PSNR | Set5 | Set14 | Set5 - float32 |")
        print("|---|---|---|---|---|---|---|")
        for amp in AMPS:
            r = by_amp.get(amp)
            if r is None:
                continue
            t = r["test_psnr"]
            speed = f"{base['wall_s'] / r['wall_s']:.2f}x" if base else "–"
            delta = f"{t['Set5'] - base['test_psnr']['Set5']:+.3f}" if base and "Set5" in t else "–"
            name = "float32" if amp == "none" else amp
            print(f"| {name} | {r['wall_s']:.1f} | {speed} | {r['val_psnr']:.3f} | {t.get('Set5', float('nan')):.3f} | "
                  f"{t.get('Set14', float('nan')):.3f} | {delta} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--specs", nargs="+", default=["safmn", "fmen_s"])
    r.add_argument("--amps", nargs="+", choices=AMPS, default=list(AMPS))
    r.add_argument("--protocol", default="ref_x4")
    r.add_argument("--data", default=None, help="training folder (default: the protocol's, $SRBLOCKS_SHARED/data/train)")
    r.add_argument("--device", default=None, help="cuda or cpu (default: CUDA when available)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--results", default=str(RESULTS))
    p = sub.add_parser("report")
    p.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    (run if args.command == "run" else report)(args)


if __name__ == "__main__":
    main()
