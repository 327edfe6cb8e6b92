"""The ``srblocks`` command line. Each sub-command is a thin layer over the Python API.

    srblocks table                      reproduction table of every shipped spec (the README's main job)
    srblocks summary SPEC [...]         params, MACs, activations, convs, peak memory (and latency)
    srblocks blocks [NAME]              registered blocks and their argument schemas
    srblocks specs                      shipped spec names
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from typing import Any, Callable, Sequence

__all__ = ["main", "parse_overrides", "parse_size"]

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Command]] = {}


from .errors import SrblocksError


class CliError(SrblocksError):
    """A usage problem reported as one line on stderr with exit code 2."""


def command(name: str, configure: Callable[[argparse.ArgumentParser], None]) -> Callable[[Command], Command]:
    """Register a sub-command: ``configure`` adds its arguments, the decorated function runs it."""

    def decorate(run: Command) -> Command:
        _COMMANDS[name] = (configure, run)
        return run

    return decorate


def parse_size(text: str) -> tuple[int, int]:
    """``"180x320"`` -> (180, 320) (height x width); ``"48"`` -> (48, 48)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
        h, w = parts if len(parts) == 2 else (parts[0], parts[0]) if len(parts) == 1 else (0, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW or N (e.g. 180x320, 48), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["dim=48", "deploy=true"]`` -> {"dim": 48, "deploy": True} (values read as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set expects NAME=VALUE, got {item!r}")
        from .spec.loader import parse_yaml

        out[key.strip()] = parse_yaml(value, f"--set {key.strip()}")  # bounded: no alias bombs, no deep nesting
    return out


def _add_spec_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="spec file or shipped spec name (see `srblocks specs`)")
    p.add_argument("--scale", type=int, help="upscaling factor (sets the spec's `scale` variable)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override a spec variable (repeatable)")


def build_from_args(args: argparse.Namespace):
    """The model an argument namespace with spec/--scale/--set describes."""
    from .build import build_model

    overrides = parse_overrides(args.overrides)
    if args.scale is not None:
        overrides["scale"] = args.scale
    return build_model(args.spec, **overrides)


def _configure_summary(p: argparse.ArgumentParser) -> None:
    _add_spec_arguments(p)
    p.add_argument("--lr-size", type=parse_size, default=None, metavar="HxW",
                   help="LR input size (default: HR 1280x720 divided by the scale)")
    p.add_argument("--deploy", action="store_true", help="profile the deploy (re-parameterized) form")
    p.add_argument("--latency", nargs="?", const="measured", default=None, choices=["predicted", "measured", "both"],
                   help="also show CPU latency: measured (median after warm-up; a bare --latency), predicted by "
                        "this device's latency table (`srblocks latency calibrate`), or both")
    p.add_argument("--runs", type=int, default=10, help="timed runs for a measured --latency")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for --latency")
    p.add_argument("--latency-table", default=None, metavar="TABLE",
                   help="latency table for --latency predicted (default: this device's)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def default_lr_size(scale: int | None) -> tuple[int, int]:
    """LR size whose output is 1280x720 (x3: 240x427, as the papers' counters use)."""
    s = scale or 4
    return round(720 / s), round(1280 / s)


@command("summary", _configure_summary)
def _summary(args: argparse.Namespace) -> int:
    from .build import model_info
    from .deploy import deploy
    from .profile import profile
    from .reproduce import compare_entry, format_si, matching_entries

    model = build_from_args(args)
    info = model_info(model)
    if args.deploy:
        model = deploy(model)
    lr_size = args.lr_size or default_lr_size(info.scale)
    measure = args.latency in ("measured", "both")
    predicted = _predicted_latency(model, lr_size, args) if args.latency in ("predicted", "both") else None
    result = profile(model, lr_size, latency=measure, runs=args.runs, threads=args.threads)
    data = result.as_dict()
    if predicted is not None:
        data.update(predicted)
    # the spec's own reproduction targets for this setting (not for --deploy: its variables describe the train form)
    entries = [] if args.deploy else matching_entries(info.spec, info.variables, lr_size)
    checked = [(e, compare_entry(info.spec, info.source, e, result.params, result)) for e in entries]
    rows = [r for _, entry_rows in checked for r in entry_rows]
    if args.json:
        print(json.dumps({"spec": info.spec.name, "variables": info.variables, "lr_size": list(lr_size), **data,
                          "reproduction": [r.as_dict() for r in rows]}, indent=2, default=str))
        return 0
    print(f"{info.spec.name}  ({info.source})")
    print(f"  variables        {', '.join(f'{k}={v}' for k, v in info.variables.items())}")
    print(f"  input            {result.input_shape}  ->  output {result.output_shape}")
    print(f"  params           {result.params:,}")
    print(f"  MACs             {format_si(result.macs)}  ({result.macs:,})")
    for op, macs in sorted(result.macs_by_op.items(), key=lambda kv: -kv[1]):
        print(f"    {op:<28} {format_si(macs)}")
    print(f"  activations      {format_si(result.acts)}  (conv + matmul outputs, fvcore definition)")
    print(f"  convs            {result.convs}")
    print(f"  peak memory      {result.peak_memory_bytes / 2**20:.2f} MiB "
          f"(activations {result.peak_activation_bytes / 2**20:.2f} MiB + weights + input)")
    if result.latency_ms is not None:
        print(f"  latency          {result.latency_ms:.1f} ms (median of {args.runs}, "
              f"{result.latency_threads} threads, {result.latency_device})")
    if predicted is not None:
        print(f"  latency (pred.)  {predicted['latency_predicted_ms']:.1f} ms +-{predicted['latency_band'] * 100:.0f} % "
              f"(blocks {predicted['latency_blocks_ms']:.1f} ms + overhead {predicted['latency_overhead_ms']:+.1f} ms"
              f"{'' if predicted['latency_calibrated'] else ', overhead not calibrated yet'}; "
              f"{predicted['latency_measured_now']} block(s) measured now; table {predicted['latency_table']})")
    for entry, entry_rows in checked:
        print(f"  expected         {entry.reference or 'no reference given'}")
        for r in entry_rows:
            paper = "" if r.paper is None else f"; paper {r.paper.written}: {'yes' if r.paper_ok else 'no'}"
            note = f" (without {', '.join(entry.macs_exclude)})" if r.metric == "macs" and entry.macs_exclude else ""
            print(f"    {r.metric:<14} {r.target.written}{note}: {'yes' if r.ok else 'NO'}{paper}")
    return 0


def _predicted_latency(model: Any, lr_size: tuple[int, int], args: argparse.Namespace) -> dict[str, Any]:
    """``--latency predicted``: the latency table's prediction for ``model`` (block calls the table lacks are
    measured now and added to it). Units: ms; ``latency_band`` is relative."""
    from pathlib import Path

    from .latency.predict import predict_latency
    from .latency.runners import TorchRunner
    from .latency.table import open_table

    runner = TorchRunner("cpu", args.threads)
    table, path = open_table(args.latency_table, runner.key())
    if not Path(path).is_file():
        raise CliError(f"no latency table for {runner.key().describe()} at {path}; run `srblocks latency calibrate "
                       f"--spec {args.spec}` first (or give --latency-table)")
    p = predict_latency(model, table, (1, 3, *lr_size), runner=runner)
    if p.measured_now:
        table.save(path)
    return {"latency_predicted_ms": p.ms, "latency_band": p.band, "latency_blocks_ms": p.blocks_ms,
            "latency_overhead_ms": p.overhead_ms, "latency_calibrated": p.calibrated,
            "latency_measured_now": p.measured_now, "latency_memory_format": p.memory_format,
            "latency_table": str(path)}


def _configure_table(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="*", help="spec names or files (default: every shipped spec)")
    p.add_argument("--json", action="store_true")


@command("table", _configure_table)
def _table(args: argparse.Namespace) -> int:
    from .reproduce import check_all, check_spec, format_si

    rows = [r for s in args.specs for r in check_spec(s)] if args.specs else list(check_all())
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0 if all(r.ok for r in rows) else 1
    print(f"{'spec':<10} {'setting':<26} {'LR size':<9} {'metric':<7} {'expected':>16} {'measured':>16}  ok   "
          f"{'paper':>8}  matches paper")
    for r in rows:
        setting = ", ".join(f"{k}={v}" for k, v in r.when.items())
        size = "x".join(map(str, r.lr_size)) if r.lr_size and r.metric != "params" else "-"
        actual = f"{int(r.actual):,}" if r.metric in ("params", "convs") else format_si(r.actual)
        paper = "" if r.paper is None else f"{r.paper.written:>8}  {'yes' if r.paper_ok else 'no'}"
        print(f"{r.spec:<10} {setting:<26} {size:<9} {r.metric:<7} {r.target.written:>16} {actual:>16}  "
              f"{'yes' if r.ok else 'NO '}  {paper}")
    bad = sum(not r.ok for r in rows)
    print(f"\n{len(rows) - bad} of {len(rows)} reproduction targets met. 'expected' is what a spec must reproduce "
          "(the paper's figure, or the official code's where the paper's cannot be reproduced: see each spec's "
          "notes); 'paper' is the paper's figure where it differs.")
    return 0 if bad == 0 else 1


def _configure_blocks(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="one block's full argument schema")
    p.add_argument("--json", action="store_true")


@command("blocks", _configure_blocks)
def _blocks(args: argparse.Namespace) -> int:
    from .registry import get_block, list_blocks

    if args.name:
        info = get_block(args.name)
        print(json.dumps({"name": info.name, "class": f"{info.cls.__module__}.{info.cls.__qualname__}",
                          "arity": info.arity, "in_channels_arg": info.in_channels, "args": info.schema()}, indent=2))
        return 0
    blocks = list_blocks()
    if args.json:
        print(json.dumps(blocks, indent=2))
        return 0
    for name, meta in blocks.items():
        print(f"{name:<18} {meta['summary']}")
    return 0


@command("specs", lambda p: None)
def _specs(args: argparse.Namespace) -> int:
    from .spec import load_spec, shipped_spec_names

    for name in shipped_spec_names():
        spec = load_spec(name).spec
        print(f"{name:<12} {spec.paper or ''}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srblocks", description="Composable blocks for efficient super-resolution.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (configure, run) in _COMMANDS.items():
        doc = (run.__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else None)
        configure(p)
        p.set_defaults(run=run)
    return parser


#: errno values of OS errors that come from paths or files the user gave (reported like srblocks errors)
_USER_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EEXIST,
                errno.ENOSPC, errno.EROFS, errno.ELOOP, errno.EXDEV, errno.ENOTEMPTY, errno.EFBIG, errno.EDQUOT,
                errno.EINVAL, errno.EBUSY, errno.ETXTBSY, errno.ENXIO, errno.ENODEV}


def _user_error_message(exc: BaseException) -> str | None:
    """The one-line report of an exception caused by user input, or None for an unexpected (internal) one.

    User input: every :class:`~srblocks.errors.SrblocksError` (spec, weights, unknown block, CLI usage, non-finite
    numbers), the input errors of modules with their own classes (unreadable images, missing data folders, a
    diverged training run), and OS errors about a path (missing file, permission, name too long, full disk, ...).
    """
    from .registry import UnknownBlockError
    from .weights import WeightsError

    known: tuple[type[BaseException], ...] = (SrblocksError, UnknownBlockError, WeightsError)
    for module, name in (("srblocks.data", "ImageReadError"), ("srblocks.protocols.splits", "DataNotFound"),
                         ("srblocks.train", "TrainingDiverged"), ("srblocks.search.runner", "InvalidCandidate")):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            known += (cls,)
    if isinstance(exc, known):
        return _one_line(exc)
    if isinstance(exc, OSError) and (exc.filename is not None or exc.errno in _USER_ERRNOS):
        where = f": {exc.filename}" if exc.filename is not None else ""
        also = f" -> {exc.filename2}" if getattr(exc, "filename2", None) is not None else ""
        return _one_line(f"{exc.strerror or type(exc).__name__}{where}{also}")
    return None


def _model_failure(exc: BaseException) -> str | None:
    """The report of an exception raised inside the forward pass of a spec-built model, or None.

    A model that passed its build-time dry run and fails on the input a command gave it (an image or ``--lr-size``
    too small for its patch sizes, ...) fails because of that input: the report names the innermost spec node on
    the traceback (``feats.0``), found through the modules the assembler built (they carry ``srblocks_args``)."""
    import torch.nn as nn

    def is_model(value: Any) -> bool:
        meta = getattr(value, "meta", None) if isinstance(value, nn.Module) else None
        return isinstance(meta, dict) and "srblocks" in meta

    roots: list[nn.Module] = []
    block = None
    inside = False
    tb = exc.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        roots += [v for v in local.values() if is_model(v) and all(v is not r for r in roots)]
        owner = local.get("self")
        if tb.tb_frame.f_code.co_name in ("_call_impl", "_wrapped_call_impl"):  # a module called on a tensor
            if isinstance(owner, nn.Module) and hasattr(owner, "srblocks_args"):
                block = owner  # the innermost spec block on the way to the failure
            inside = inside or is_model(owner) or block is not None
        tb = tb.tb_next
    if not inside:
        return None
    name = next((n for r in roots for n, m in r.named_modules() if m is block), None) if block is not None else None
    if name is None and block is not None:
        name = f"a {getattr(block, 'block_name', type(block).__name__)} block"
    where = f" at node {name!r}" if name and not name.startswith("a ") else f" in {name}" if name else ""
    return _one_line(f"the model cannot process this input{where}: {type(exc).__name__}: "
                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")


def _one_line(value: Any) -> str:
    from .errors import clip

    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - a message that cannot be printed still gets a report
        text = type(value).__name__
    return clip(" ".join(text.split()), 1500) or type(value).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``srblocks`` command; returns the exit code.

    Failures caused by user input print ``srblocks COMMAND: error: ...`` (one line naming the file, YAML path or
    argument) and return 2; unexpected ones print two lines and return 1. ``--debug`` (anywhere on the command line)
    shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    _load_command_modules()
    parser = make_parser()
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"srblocks {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place where errors become exit codes
        if debug:
            raise
        message = _user_error_message(exc)
        if message is None:
            message = _model_failure(exc)
        if message is not None:
            print(f"srblocks {args.command}: error: {message}", file=sys.stderr)
            return 2
        print(f"srblocks {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)}\n"
              f"(this is a bug in srblocks, not in your input; rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _load_command_modules() -> None:
    """Import modules that register further sub-commands (evaluation, training, search) when present."""
    import importlib

    for module in ("srblocks.cli_eval", "srblocks.search.cli", "srblocks.latency.cli", "srblocks.export.cli"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
