"""``srblocks latency calibrate`` and ``srblocks latency show`` (registered into :mod:`srblocks.cli`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from ..cli import CliError, command, default_lr_size, parse_size

MEMORY_FORMATS = ("contiguous", "channels_last")


def _configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="latency_command", required=True, metavar="ACTION")
    c = sub.add_parser("calibrate", help="measure the block table of this device (resumable)")
    c.add_argument("--spec", action="append", default=[], metavar="SPEC",
                   help="spec file or shipped name to calibrate on (repeatable)")
    c.add_argument("--search", action="append", default=[], metavar="TEMPLATE",
                   help="search template: calibrate on its seeds and --samples random candidates (repeatable)")
    c.add_argument("--samples", type=int, default=12, help="random candidates per --search template (default 12)")
    c.add_argument("--cover", type=int, default=100,
                   help="further random candidates per --search template whose block calls are measured (not the "
                        "models): the more, the fewer blocks a search meets unmeasured (default 100)")
    c.add_argument("--seed", type=int, default=0, help="random seed of the sampled candidates")
    c.add_argument("--scale", type=int, default=None, help="scale of --spec models (default: the spec's)")
    c.add_argument("--lr-size", type=parse_size, default=None, metavar="HxW",
                   help="LR input size (default: the template's lr_size; for specs HR 1280x720 / scale)")
    c.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the template's threads, else torch's current number)")
    c.add_argument("--memory-format", choices=[*MEMORY_FORMATS, "both"], default="both",
                   help="weight layout(s) to calibrate (default both)")
    c.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    c.add_argument("--quick", action="store_true", help="fewer samples per entry (3-8, 5 %% precision)")
    c.add_argument("-o", "--out", default=None, metavar="TABLE",
                   help="table file (default: the device's table under ~/.cache/srblocks/latency or "
                        "$SRBLOCKS_LATENCY_DIR); an existing table is extended")
    s = sub.add_parser("show", help="where this device's table is and what it holds")
    s.add_argument("table", nargs="?", default=None, help="table file (default: this device's)")
    s.add_argument("--threads", type=int, default=None, help="CPU threads of the device key (default: torch's)")
    s.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")


def _progress(stage: str, done: int, total: int, text: str) -> None:
    print(f"  [{stage} {done}/{total or '?'}] {text}", file=sys.stderr, flush=True)


def _models(args: argparse.Namespace, formats: tuple[str, ...]) -> tuple[list[tuple[str, Any]], tuple[int, int],
                                                                         int | None]:
    """(name, deploy-form model) for every spec/template candidate and format; the LR size; template threads."""
    from ..build import build_model, model_info
    from ..errors import SpecError

    inference = _inference

    models: list[tuple[str, Any]] = []
    sizes: set[tuple[int, int]] = set()
    threads: int | None = None
    for source in args.search:
        from ..search.space import load_search_space
        from .sampling import template_candidates

        space = load_search_space(source)
        sizes.add(tuple(space.settings.lr_size))
        threads = threads or space.settings.threads
        for name, spec in template_candidates(space, args.samples, args.seed):
            for fmt in formats:
                try:
                    models.append((f"{name}/{fmt}", inference(build_model(spec, memory_format=fmt))))
                except SpecError as exc:
                    print(f"  skipped {name}: {exc}", file=sys.stderr)
                    break
    for source in args.spec:
        for fmt in formats:
            overrides = {} if args.scale is None else {"scale": args.scale}
            model = build_model(source, memory_format=fmt, **overrides)
            sizes.add(default_lr_size(model_info(model).variables.get("scale")))
            models.append((f"{model_info(model).spec.name}/{fmt}", inference(model)))
    if args.lr_size is not None:
        sizes = {args.lr_size}
    if len(sizes) > 1:
        raise CliError(f"the models have different default LR sizes {sorted(sizes)}; give --lr-size")
    return models, next(iter(sizes)), threads


def _inference(model: Any) -> Any:
    """The form that is deployed (re-parameterized where a block has a training form), in eval mode."""
    from ..deploy import deploy

    return deploy(model) if any(hasattr(m, "reparameterize") for m in model.modules()) else model.eval()


def _cover_models(args: argparse.Namespace, formats: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """``--cover`` random candidates of every template, built lazily (another random stream than ``--samples``)."""
    from ..build import build_model
    from ..errors import SpecError
    from ..search.space import load_search_space
    from .sampling import template_candidates

    for source in args.search:
        space = load_search_space(source)
        for name, spec in template_candidates(space, args.cover, args.seed + 7919, with_seeds=False):
            for fmt in formats:
                try:
                    yield f"{name}/{fmt}", _inference(build_model(spec, memory_format=fmt, check_shapes=False))
                except SpecError:
                    break


def _calibrate(args: argparse.Namespace) -> int:
    from .calibration import calibrate, cover_blocks
    from .measure import QUICK, MeasureSettings
    from .runners import TorchRunner
    from .table import open_table

    if not args.spec and not args.search:
        raise CliError("give --spec SPEC and/or --search TEMPLATE to calibrate on")
    if args.samples < 0 or args.cover < 0:
        raise CliError(f"--samples and --cover must be >= 0, got {args.samples} and {args.cover}")
    start = time.perf_counter()
    formats = MEMORY_FORMATS if args.memory_format == "both" else (args.memory_format,)
    models, lr_size, template_threads = _models(args, formats)
    runner = TorchRunner(args.device, args.threads or template_threads)
    table, path = open_table(args.out, runner.key())
    print(f"calibrating {len(models)} model(s) at LR {lr_size[0]}x{lr_size[1]} on {runner.key().describe()}; "
          f"table {path} ({len(table.blocks)} entries so far)", file=sys.stderr, flush=True)
    settings = QUICK if args.quick else MeasureSettings()
    report = calibrate(table, models, (1, 3, *lr_size), runner, settings, progress=_progress)
    table.save(path)
    covered = 0
    if args.search and args.cover > 0:
        print(f"measuring the block calls of {args.cover} more candidates per template", file=sys.stderr, flush=True)
        covered = cover_blocks(table, _cover_models(args, formats), (1, 3, *lr_size), runner, settings,
                               progress=_progress)
        table.save(path)
    print(f"wrote {path}: {len(table.blocks)} block entries ({report.blocks_measured + covered} new), {report.models} "
          f"models measured, {time.perf_counter() - start:.1f} s")
    _print_fits(table)
    return 0


def _print_fits(table: Any) -> None:
    for fmt in sorted({p.memory_format for p in table.points}):
        fit = table.overhead(fmt)
        print(f"  {fmt:<14} measured = {fit.a_ms:+.2f} ms + {fit.b:.3f} x blocks   band +-{fit.band * 100:.0f} %  "
              f"({fit.points} models)")


def _show(args: argparse.Namespace) -> int:
    from .runners import TorchRunner
    from .table import default_table_path, load_table

    key = TorchRunner(args.device, args.threads).key()
    path = Path(args.table) if args.table else default_table_path(key)
    print(f"this device: {key.describe()}")
    if not path.is_file():
        print(f"no table at {path}; run `srblocks latency calibrate --spec SPEC` (or --search TEMPLATE)")
        return 0
    table = load_table(path)
    same = "same key" if table.device == key else "ANOTHER device key: it will be refused here"
    print(f"table {path}: {table.device.describe()} ({same}); {len(table.blocks)} block entries, "
          f"{len(table.points)} calibration points")
    _print_fits(table)
    return 0


@command("latency", _configure)
def _latency(args: argparse.Namespace) -> int:
    """Per-device latency model: calibrate the block table, or show it."""
    return _calibrate(args) if args.latency_command == "calibrate" else _show(args)
