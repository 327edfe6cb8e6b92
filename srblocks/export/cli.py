"""``srblocks export`` (registered into :mod:`srblocks.cli`).

    srblocks export SPEC [--scale S] [--set k=v ...] [--weights W [--official]] [--deploy]
                    --format onnx|openvino|torchscript|safetensors -o FILE [--fixed-size HxW] [--opset N]
                    [--keys srblocks|official]   (safetensors: key names; official = what spandrel/chaiNNer reads)
"""

from __future__ import annotations

import argparse
import sys

from ..cli import CliError, command, parse_size

__all__: list[str] = []


def _configure(p: argparse.ArgumentParser) -> None:
    from ..cli_eval import _add_model_arguments

    _add_model_arguments(p, weights_required=False)
    p.add_argument("--format", required=True, choices=("onnx", "openvino", "torchscript", "safetensors"),
                   help="onnx (ONNX Runtime, TensorRT, ncnn...), openvino (NAME.xml + NAME.bin), torchscript, "
                        "safetensors (weights + metadata)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write (its folder must exist)")
    p.add_argument("--fixed-size", type=parse_size, default=None, metavar="HxW",
                   help="record this fixed LR input size instead of dynamic height/width (needed by mask-guided "
                        "models)")
    p.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset (default 18)")
    p.add_argument("--keys", choices=("srblocks", "official"), default="srblocks",
                   help="safetensors key names: srblocks (model.state_dict(), default) or official (the official "
                        "implementation's, read by --official and, for SAFMN and RCAN, by spandrel / chaiNNer)")
    p.add_argument("--tolerance", type=float, default=None, metavar="T",
                   help="max abs diff allowed against eager torch, as a fraction of the input range (default 1e-4)")


@command("export", _configure)
def _export(args: argparse.Namespace) -> int:
    """Export a spec (with weights) to ONNX / OpenVINO / TorchScript / safetensors, verified against eager torch."""
    from ..cli_eval import _threads, load_model_for_inference
    from .api import export_model
    from .onnx import DEFAULT_OPSET
    from .verify import DEFAULT_TOLERANCE

    if args.opset is not None and not 7 <= args.opset <= 23:
        raise CliError(f"--opset must lie in 7..23, got {args.opset}")
    if args.tolerance is not None and not args.tolerance >= 0:
        raise CliError(f"--tolerance must be >= 0, got {args.tolerance}")
    if args.keys != "srblocks" and args.format != "safetensors":
        raise CliError(f"--keys {args.keys} applies to --format safetensors only")
    if args.device not in (None, "cpu"):
        raise CliError("export runs on CPU (--device cpu)")
    args.device = "cpu"
    with _threads(args.threads):
        model = load_model_for_inference(args)
        deploy_form = args.deploy or "deploy=true" in [o.replace(" ", "").lower() for o in args.overrides]
        report = export_model(model, args.format, args.output, fixed_size=args.fixed_size,
                              opset=args.opset or DEFAULT_OPSET, form="deploy" if deploy_form else "train",
                              tolerance=DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance,
                              keys=args.keys)
    print(report.describe(), file=sys.stderr)
    return 0
