"""``srblocks upscale``, ``srblocks eval`` and ``srblocks train`` (registered into :mod:`srblocks.cli`).

    srblocks upscale SPEC --weights W [--official] [--deploy] [--scale N] IN... -o OUT_DIR
    srblocks eval SPEC --weights W [--official] [--deploy] --data DIR [--data ...] [--self-ensemble] [--json]
    srblocks train SPEC --data DIR --scale N --iters K -o RUN_DIR [--val DIR] [--seconds S] [--resume]
    srblocks train SPEC --protocol ref_x4 [--data DIR] [--seed S] [--results FILE] [-o RUN_DIR]
    torchrun --nproc-per-node G -m srblocks train ...   (DistributedDataParallel; docs/training.md)

The input value range and the Y convention come from the spec (FMEN's checkpoint takes 0..255, HPINet is scored
with uint8 Y), so ``srblocks eval`` reproduces a paper's table without extra flags.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from .cli import CliError, _add_spec_arguments, build_from_args, command, parse_overrides

__all__: list[str] = []


# ---------------------------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------------------------


def _tile_arg(text: str) -> int | str | None:
    if text.lower() in ("auto",):
        return "auto"
    if text.lower() in ("0", "none", "off"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tile expects a pixel count, 'auto' or 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--tile must be >= 0, got {value}")
    return value or None


def _add_model_arguments(p: argparse.ArgumentParser, *, weights_required: bool) -> None:
    _add_spec_arguments(p)
    p.add_argument("--weights", required=weights_required, metavar="FILE",
                   help="checkpoint (.pth/.pt read with weights_only, or .safetensors)")
    p.add_argument("--official", action="store_true",
                   help="the checkpoint uses the official implementation's key names (renamed through the spec)")
    p.add_argument("--deploy", action="store_true",
                   help="run the deploy (re-parameterized) form: training-form weights are converted; weights "
                        "already in deploy form (e.g. FMEN's test_weights.pt) are loaded into the spec built with "
                        "deploy=true")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")


def _spec_has_variable(spec: str, name: str) -> bool:
    from .spec import load_spec

    return name in load_spec(spec).spec.variables


def load_model_for_inference(args: argparse.Namespace) -> torch.nn.Module:
    """Build the spec, load ``--weights`` (``--official``), apply ``--deploy``, move to ``--device``; eval mode."""
    import torch

    from .deploy import deploy
    from .weights import WeightsError, load_weights

    model = build_from_args(args)
    if args.weights:
        overrides = parse_overrides(args.overrides)
        has_deploy_variable = "deploy" not in overrides and _spec_has_variable(args.spec, "deploy")
        try:
            load_weights(model, args.weights, official=args.official)
            if args.deploy:
                model = deploy(model)
        except WeightsError as exc:
            if not has_deploy_variable:
                raise
            args.overrides = [*args.overrides, "deploy=true"]
            deploy_model = build_from_args(args)
            try:
                load_weights(deploy_model, args.weights, official=args.official)
            except WeightsError:
                raise exc from None
            if not args.deploy:
                raise WeightsError(f"{exc} -- these are deploy-form weights: add --deploy (or --set deploy=true)") \
                    from None
            model = deploy_model
    elif args.deploy:
        model = deploy(model)
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise CliError(f"--threads must be >= 1, got {n}")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------------------------
# upscale
# ---------------------------------------------------------------------------------------------------------------


def _add_backend_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("torch", "onnxruntime", "openvino"), default="torch",
                   help="inference runtime (default torch); onnxruntime/openvino export the model in memory with "
                        "dynamic H/W and verify it against torch first (CPU; not for mask-guided models)")
    p.add_argument("--precision", choices=("f32", "bf16"), default="f32",
                   help="openvino inference precision: f32 (default, exact to float rounding) or the opt-in bf16")


def _with_backend(model: Any, args: argparse.Namespace) -> Any:
    """``model`` on ``--backend`` (unchanged for torch), driven by the same tiling/self-ensemble/PSNR code."""
    from .backends import make_backend

    deploy_form = args.deploy or "deploy=true" in [o.replace(" ", "").lower() for o in args.overrides]
    return make_backend(model, args.backend, threads=args.threads, precision=args.precision,
                        form="deploy" if deploy_form else "train")


def _configure_upscale(p: argparse.ArgumentParser) -> None:
    _add_model_arguments(p, weights_required=True)
    _add_backend_arguments(p)
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders of images")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                   help="output folder (created); outputs keep the input file names")
    p.add_argument("--tile", type=_tile_arg, default="auto", metavar="N|auto|0",
                   help="LR tile size for bounded memory; 'auto' (default) tiles images larger than 512x512 LR "
                        "pixels; 0 disables tiling")
    p.add_argument("--tile-overlap", type=int, default=None, metavar="N",
                   help="LR pixels of context around each tile (default 32; tiled output equals untiled output "
                        "when this covers the model's receptive field)")
    p.add_argument("--self-ensemble", action="store_true", help="x8 self-ensemble (8x slower)")
    p.add_argument("--ext", default=None, metavar="EXT",
                   help="write this format instead of the input's (e.g. png; changes only the extension)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing files in OUT_DIR (input files are never overwritten)")


_MODE_NOTES = {
    "L": "grayscale, written as RGB with 3 equal channels",
    "1": "bilevel, written as RGB",
    "LA": "grayscale with alpha: alpha dropped, written as RGB",
    "RGBA": "alpha channel dropped",
    "RGBa": "alpha channel dropped",
    "PA": "palette with alpha: alpha dropped",
    "CMYK": "CMYK converted to RGB",
    "I;16": "16-bit, reduced to 8 bit (high byte)",
    "I;16B": "16-bit, reduced to 8 bit (high byte)",
    "I;16L": "16-bit, reduced to 8 bit (high byte)",
    "I": "32-bit integer, reduced to 8 bit (high byte of 0..65535)",
}


def _conversion_note(path: Path) -> str | None:
    """What :func:`srblocks.data.read_image` does to this file's pixel format, when it is not plain RGB."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode == "P" and "transparency" in im.info:
                return "palette with transparency: alpha dropped"
            if mode == "RGB" and im.format == "PNG" and im.info.get("bitdepth", 8) == 16:
                return "16-bit, reduced to 8 bit"
    except Exception:  # noqa: BLE001 - read_image reports unreadable files itself
        return None
    return _MODE_NOTES.get(mode)


def _collect_inputs(items: list[str]) -> list[Path]:
    from .data import is_image_file

    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if is_image_file(f))
            if not found:
                raise CliError(f"no image files in folder {item!r}")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise CliError(f"input {item!r} does not exist")
    return files


def _plan_outputs(inputs: list[Path], out_dir: Path, ext: str | None, overwrite: bool) -> list[Path]:
    """Output path per input; refuses to overwrite inputs, duplicate names and (without --overwrite) files."""
    resolved_inputs = {p.resolve() for p in inputs}
    outputs: list[Path] = []
    seen: dict[Path, Path] = {}
    for src in inputs:
        name = src.name if ext is None else f"{src.stem}.{ext.lstrip('.')}"
        dst = out_dir / name
        key = dst.resolve()
        if key in resolved_inputs or (dst.exists() and any(_same_file(dst, s) for s in inputs)):
            raise CliError(f"refusing to overwrite input {str(src)!r}: choose an output folder other than the "
                           f"input's (-o {out_dir})")
        if key in seen:
            raise CliError(f"inputs {str(seen[key])!r} and {str(src)!r} would both be written to {str(dst)!r}")
        if dst.exists() and not overwrite:
            raise CliError(f"{str(dst)!r} already exists (pass --overwrite to replace it)")
        seen[key] = src
        outputs.append(dst)
    return outputs


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _image_failure(exc: BaseException, name: str) -> str | None:
    """One line naming ``name`` and the reason an image failed, or None for an internal error (re-raised)."""
    from .cli import _model_failure, _one_line, _user_error_message

    message = _user_error_message(exc) or _model_failure(exc)
    out_of_memory = isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "memory" in str(exc).lower())
    if message is None and (out_of_memory or isinstance(exc, ValueError)):
        message = _one_line(f"out of memory ({type(exc).__name__}: {exc}); use a smaller --tile" if out_of_memory
                            else exc)
    if message is None:
        return None
    return message if name in message else f"{name}: {message}"


def _write_upscaled(dst: Path, job: Any) -> None:
    """Write a :class:`~srblocks.evaluate.TiledUpscale` result atomically: PNG streamed band by band (memory: one
    band); other formats through Pillow, after checking that the image and Pillow's copy fit in memory."""
    from .data.io import image_format, write_image, write_png_rows
    from .evaluate import check_fits

    try:
        fmt = image_format(dst)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if fmt == "PNG":
        try:
            write_png_rows(dst, job.shape[0], job.shape[1], job.bands())
        except OSError as exc:  # the file system (full disk, permissions); model errors pass through unchanged
            raise CliError(f"cannot write {str(dst)!r}: {exc.strerror or exc}") from exc
        return
    h, w = job.shape[:2]
    check_fits(job.nbytes + h * w * 4, f"{job.name}: writing the {h}x{w} output as {fmt} (the image and "
                                       f"Pillow's 4-byte-per-pixel copy)",
               hint="PNG outputs are streamed in row bands (--ext png)")
    image = job.to_array()
    try:
        write_image(dst, image, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    except (OSError, ValueError, KeyError) as exc:  # Pillow's encoders: size limits of the format, full disk, ...
        raise CliError(f"cannot write {str(dst)!r}: {exc}") from exc


@command("upscale", _configure_upscale)
def _upscale(args: argparse.Namespace) -> int:
    """Super-resolve image files (keeps file names; tiled for bounded memory).

    Each output is written atomically (never a truncated file; PNG streamed in row bands). An image that cannot
    be read, processed or written is reported (its name and the reason) and the others are processed; the exit
    status is then 1."""
    from tqdm.auto import tqdm

    from .data import read_image
    from .evaluate import DEFAULT_TILE_OVERLAP, TiledUpscale

    inputs = _collect_inputs(args.inputs)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"output {str(out_dir)!r} exists and is not a folder")
    outputs = _plan_outputs(inputs, out_dir, args.ext, args.overwrite)
    if args.ext is not None:
        from .data.io import image_format

        try:
            image_format(outputs[0])
        except ValueError as exc:
            raise CliError(f"--ext {args.ext}: {exc}") from None
    overlap = DEFAULT_TILE_OVERLAP if args.tile_overlap is None else args.tile_overlap
    if overlap < 0:
        raise CliError(f"--tile-overlap must be >= 0, got {overlap}")
    with _threads(args.threads):
        model = _with_backend(load_model_for_inference(args), args)
        out_dir.mkdir(parents=True, exist_ok=True)
        failures = 0
        with tqdm(list(zip(inputs, outputs)), desc="upscale", unit="img", file=sys.stderr, disable=None) as bar:
            for src, dst in bar:
                bar.set_postfix_str(src.name)
                try:
                    image = read_image(src)
                    note = _conversion_note(src)
                    if note:
                        tqdm.write(f"srblocks upscale: note: {src.name}: {note}", file=sys.stderr)
                    job = TiledUpscale(model, image, tile=args.tile, tile_overlap=overlap,
                                       self_ensemble=args.self_ensemble, name=str(src))
                    del image  # the job holds it
                    _write_upscaled(dst, job)
                    del job
                except Exception as exc:  # noqa: BLE001 - one image's failure is reported, the others go on
                    message = _image_failure(exc, str(src))
                    if message is None:
                        raise
                    tqdm.write(f"srblocks upscale: error: {message}", file=sys.stderr)
                    failures += 1
    done = len(inputs) - failures
    print(f"{done} of {len(inputs)} image(s) written to {out_dir}" +
          (f"; {failures} failed (reported above)" if failures else ""), file=sys.stderr)
    return 0 if failures == 0 else 1


# ---------------------------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------------------------


def _configure_eval(p: argparse.ArgumentParser) -> None:
    _add_model_arguments(p, weights_required=True)
    _add_backend_arguments(p)
    p.add_argument("--data", action="append", required=True, metavar="DIR",
                   help="benchmark set folder (EDSR HR/ + LR_bicubic/X{s}, BasicSR GTmod12/ + LRbicx{s}, or HR only); "
                        "repeatable")
    p.add_argument("--self-ensemble", action="store_true", help="x8 self-ensemble (the papers' '+' rows)")
    p.add_argument("--y-rounding", choices=("float", "uint8"), default=None,
                   help="Y convention (default: the spec's y_convention)")
    p.add_argument("--rgb", action="store_true", help="score RGB instead of Y (NTIRE convention)")
    p.add_argument("--crop-border", type=int, default=None, help="pixels shaved per border (default: scale)")
    p.add_argument("--tile", type=_tile_arg, default=None, metavar="N|auto",
                   help="tiled inference (default: whole images, as the papers)")
    p.add_argument("--tile-overlap", type=int, default=None, metavar="N", help="tile context in LR pixels (32)")
    p.add_argument("--no-ssim", action="store_true", help="skip SSIM")
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("eval", _configure_eval)
def _eval(args: argparse.Namespace) -> int:
    """PSNR/SSIM per image and mean on benchmark sets, with the spec's protocol.

    An image that cannot be read, processed or scored is reported (its name and the reason) and left out; the
    others are scored and the exit status is then 2 (the means are not the whole set's)."""
    from .build import model_info
    from .evaluate import DEFAULT_TILE_OVERLAP, evaluate

    with _threads(args.threads):
        model = _with_backend(load_model_for_inference(args), args)
        info = model_info(model)
        results = []
        failed = 0
        for folder in args.data:
            try:
                r = evaluate(model, folder, y_channel=not args.rgb, y_rounding=args.y_rounding,
                             crop_border=args.crop_border, self_ensemble=args.self_ensemble, tile=args.tile,
                             tile_overlap=DEFAULT_TILE_OVERLAP if args.tile_overlap is None else args.tile_overlap,
                             compute_ssim=not args.no_ssim, progress=not args.json, errors="skip")
            except (FileNotFoundError, ValueError) as exc:  # a missing or unusable folder
                raise CliError(str(exc)) from None
            for failure in r.failures:
                name = f"{r.dataset}/{failure.name}"
                message = _image_failure(failure.error, name) if failure.error is not None else None
                if message is None and failure.error is not None:
                    raise failure.error
                print(f"srblocks eval: error: {message or name + ': ' + failure.reason}", file=sys.stderr)
                failed += 1
            results.append(r)
    if args.json:
        print(json.dumps({"spec": info.spec.name, "variables": info.variables, "weights": args.weights,
                          "deploy": args.deploy, "backend": args.backend,
                          "results": [r.as_dict() for r in results]}, indent=2))
    else:
        print(f"{info.spec.name}  ({', '.join(f'{k}={v}' for k, v in info.variables.items())})  weights "
              f"{args.weights}")
        for r in results:
            print()
            print(r.format_table())
    if failed:
        print(f"srblocks eval: {failed} image(s) could not be scored (reported above); the means leave them out",
              file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------------------------


_RECIPE_DEFAULTS = {"iters": None, "batch_size": 16, "patch_size": 48, "lr": 1e-3, "min_lr": 1e-5, "warmup": 0,
                    "grad_clip": None, "fft_weight": 0.0, "ema": 0.999, "seconds": None, "val_every": None}


def _configure_train(p: argparse.ArgumentParser) -> None:
    _add_spec_arguments(p)
    p.add_argument("--protocol", default=None, metavar="NAME",
                   help="train under a named protocol (shipped: ref_x4, ref_x4_long; or a YAML path): scale, "
                        "iterations, batch, patches, schedule, EMA, seed and the train/val split come from it; "
                        "--data defaults to $SRBLOCKS_SHARED/data/train; one JSON line is appended to --results")
    p.add_argument("--data", action="append", default=None, metavar="DIR",
                   help="training images (paired set folder or HR-only folder; repeatable). With --protocol: one "
                        "folder of HR images, searched recursively and split by the protocol")
    p.add_argument("--iters", type=int, default=None, metavar="K", help="training iterations (required without "
                                                                         "--protocol)")
    p.add_argument("-o", "--output", default=None, metavar="RUN_DIR",
                   help="run folder: checkpoint.pth, model.safetensors, log.jsonl, run.json (required without "
                        "--protocol; with it, default runs/PROTOCOL)")
    p.add_argument("--results", default=None, metavar="FILE",
                   help="--protocol: results store to append to and skip done runs from (default RUN_DIR/results.jsonl)")
    p.add_argument("--test", action="append", default=None, metavar="DIR",
                   help="--protocol: test set(s) to report (default: the protocol's, e.g. Set5 and Set14 beside the data)")
    p.add_argument("--val", action="append", default=[], metavar="DIR", help="validation set(s) for PSNR")
    p.add_argument("--val-every", type=int, default=None, metavar="K", help="validate every K iterations")
    p.add_argument("--seconds", type=float, default=None, help="time budget in seconds (stops earlier)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 16)")
    p.add_argument("--patch-size", type=int, default=None, help="LR patch size in pixels (default 48)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3)")
    p.add_argument("--min-lr", type=float, default=None, help="final learning rate of the cosine schedule (default 1e-5)")
    p.add_argument("--warmup", type=int, default=None, metavar="K", help="linear warm-up iterations (default 0)")
    p.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm to this value")
    p.add_argument("--fft-weight", type=float, default=None, help="weight of the FFT loss (SAFMN: 0.05; default 0)")
    p.add_argument("--ema", type=float, default=None, help="EMA decay (default 0.999; 0 disables)")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0, or the protocol's first seed)")
    p.add_argument("--weights", default=None, metavar="FILE", help="initial weights (fine-tuning)")
    p.add_argument("--official", action="store_true", help="--weights uses the official key names")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads during training")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--amp", default=None, choices=("bf16", "fp16"),
                   help="mixed precision: autocast the forward pass to bfloat16 (GPU or CPU) or float16 with a "
                        "gradient scaler (GPU); default off (float32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _train_protocol(args: argparse.Namespace) -> int:
    """``srblocks train SPEC --protocol NAME``: one protocol run, recorded in a results store."""
    from .distributed import is_main_process
    from .errors import SpecError, SrblocksError
    from .protocols import DataNotFound, ResultsStore, load_protocol, run_protocol
    from .train import TrainingDiverged

    fixed = [f"--{name.replace('_', '-')}" for name, default in _RECIPE_DEFAULTS.items()
             if getattr(args, name) not in (None, default)] + [f for f, v in (("--val", args.val),
                                                                              ("--weights", args.weights)) if v]
    if fixed:
        raise CliError(f"{', '.join(fixed)} cannot be combined with --protocol (the protocol fixes the recipe); "
                       "write a protocol file that extends it instead")
    if args.scale is not None:
        raise CliError("--scale cannot be combined with --protocol (the protocol fixes the scale)")
    if args.data is not None and len(args.data) > 1:
        raise CliError("--protocol takes one --data folder (its images are searched recursively)")
    try:
        protocol = load_protocol(args.protocol)
    except SpecError as exc:
        raise CliError(str(exc)) from None
    run_dir = Path(args.output or Path("runs") / protocol.name)
    store = ResultsStore(args.results or run_dir / "results.jsonl")
    tests = None
    if args.test is not None:
        tests = {Path(t).name: t for t in args.test}
    try:
        record = run_protocol(args.spec, protocol, seed=args.seed, data=args.data[0] if args.data else None,
                              tests=tests, store=store, work_dir=run_dir, device=args.device, threads=args.threads,
                              progress=not args.no_progress, overrides=parse_overrides(args.overrides), amp=args.amp)
    except (DataNotFound, TrainingDiverged, ValueError) as exc:  # SpecError is reported by the CLI itself
        if isinstance(exc, SrblocksError):
            raise
        raise CliError(str(exc)) from None
    if not is_main_process():  # under torchrun, rank 0 reports
        return 0
    tests_text = ", ".join(f"{k} {v:.3f} dB" for k, v in record["test_psnr"].items())
    print(f"{record['spec_name']} under {record['protocol']} (hash {record['key']['protocol_hash']}), seed "
          f"{record['key']['seed']}: validation {record['val_psnr']:.3f} dB" + (f", {tests_text}" if tests_text else "")
          + f"; {record['params']:,} params, {record['macs'] / 1e9:.2f} GMACs at "
            f"{record['macs_lr_size'][0]}x{record['macs_lr_size'][1]}; {record['wall_s']:.0f} s; "
            + ("already recorded in " if record.get("reused") else "recorded in ") + str(store.path))
    return 0


@command("train", _configure_train)
def _train(args: argparse.Namespace) -> int:
    """Train (or fine-tune) a spec on image patches; resumable run folder."""
    import torch

    from .build import model_info
    from .distributed import is_main_process
    from .errors import SrblocksError
    from .train import CHECKPOINT_NAME, WEIGHTS_NAME, TrainConfig, train
    from .weights import load_weights

    if args.protocol is not None:
        return _train_protocol(args)
    missing = [flag for flag, value in (("--data", args.data), ("--iters", args.iters), ("-o", args.output),
                                        ("--scale", args.scale)) if value is None]
    if missing:
        raise CliError(f"{', '.join(missing)} required for training without --protocol")
    for name, default in _RECIPE_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.seed is None:
        args.seed = 0
    for flag in ("--results", "--test"):
        if getattr(args, flag[2:]) is not None:
            raise CliError(f"{flag} only applies with --protocol")
    run_dir = Path(args.output)
    if (run_dir / CHECKPOINT_NAME).exists() and not args.resume:
        raise CliError(f"{str(run_dir)!r} already holds a run: pass --resume to continue it, or choose a new -o")
    if args.resume and not (run_dir / CHECKPOINT_NAME).exists():
        raise CliError(f"--resume: no {CHECKPOINT_NAME} in {str(run_dir)!r}")
    try:
        config = TrainConfig(
            iterations=args.iters, time_budget=args.seconds, batch_size=args.batch_size,
            lr_patch_size=args.patch_size, lr=args.lr, min_lr=args.min_lr, warmup_iterations=args.warmup,
            grad_clip=args.grad_clip, fft_loss_weight=args.fft_weight, ema_decay=args.ema or None,
            val_every=args.val_every or max(1, min(args.iters, 500)), seed=args.seed, device=args.device,
            threads=args.threads, num_workers=args.workers, progress=not args.no_progress, amp=args.amp,
        )
    except ValueError as exc:
        if isinstance(exc, SrblocksError):
            raise
        raise CliError(str(exc)) from None
    main = is_main_process()  # under torchrun every rank trains; rank 0 writes run.json and reports
    torch.manual_seed(args.seed)  # the initial weights depend on the seed too
    model = build_from_args(args)
    if args.weights:
        load_weights(model, args.weights, official=args.official)
    info = model_info(model)
    data = args.data[0] if len(args.data) == 1 else args.data
    val = None if not args.val else (args.val[0] if len(args.val) == 1 else args.val)
    run_dir.mkdir(parents=True, exist_ok=True)
    from .fileio import write_text_atomic

    if main:
        write_text_atomic(run_dir / "run.json", json.dumps({
            "spec": info.spec.name, "spec_source": info.source, "variables": info.variables, "data": args.data,
            "val": args.val, "init_weights": args.weights, "config": config.to_dict(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }, indent=2, default=str))
    try:
        result = train(model, data, val_data=val, config=config, out_dir=run_dir, resume=args.resume)
    except (FileNotFoundError, ValueError) as exc:
        if isinstance(exc, SrblocksError):
            raise
        raise CliError(str(exc)) from None
    if not main:
        return 0
    psnr = f", validation PSNR {result.final_psnr:.3f} dB" if result.final_psnr is not None else ""
    print(f"{result.iterations} iterations in {result.elapsed:.0f} s (stopped: {result.stop_reason}){psnr}; "
          f"weights in {run_dir / WEIGHTS_NAME}")
    return 0
