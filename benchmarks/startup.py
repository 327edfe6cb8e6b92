"""Start-up time of the command line and the package (issue target: ``srblocks --help`` under 1.5 s).

Runs each command in a fresh interpreter, interleaved (A B C A B C ...), and prints the median wall time and the
range per command. Nothing heavy (torch, optuna, timm, numpy) is imported until a command needs it
(``srblocks/_lazy.py``); the last row shows the cost of the first real use, for comparison.

    python benchmarks/startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "srblocks --help": [shutil.which("srblocks") or "srblocks", "--help"],
    "python -c 'import srblocks'": [sys.executable, "-c", "import srblocks"],
    "python -m srblocks search --help": [sys.executable, "-m", "srblocks", "search", "--help"],
    "first use: build_model('safmn')": [sys.executable, "-c", "import srblocks; srblocks.build_model('safmn')"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t0)
    print(f"{'command':36s} {'median s':>9s} {'min':>6s} {'max':>6s}  ({args.repeats} interleaved runs)")
    for name, ts in times.items():
        print(f"{name:36s} {statistics.median(ts):9.2f} {min(ts):6.2f} {max(ts):6.2f}")


if __name__ == "__main__":
    main()
