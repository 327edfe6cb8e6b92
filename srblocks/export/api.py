"""``export_model``: a spec-built model -> a verified artifact (ONNX, OpenVINO IR, TorchScript or safetensors).

Every export is verified before anything is written (:mod:`srblocks.export.verify`): the artifact runs on its
runtime on image crops and must match eager PyTorch within the tolerance; then the file is written atomically, so
a failed export leaves no file (an existing one keeps its content).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .dynamic import find_blocker, minimum_side, spatial_dims
from .errors import DynamicShapeError, ExportError
from .metadata import artifact_metadata
from .onnx import DEFAULT_OPSET
from .verify import DEFAULT_TOLERANCE, Verification, verify

__all__ = ["FORMATS", "KEYS", "ExportReport", "export_model", "export_onnx_bytes", "DEFAULT_SIZE", "second_size"]

Format = Literal["onnx", "openvino", "torchscript", "safetensors"]
FORMATS: tuple[str, ...] = ("onnx", "openvino", "torchscript", "safetensors")
#: key names of a safetensors export: srblocks' own (model.state_dict()) or the official implementation's
KEYS: tuple[str, ...] = ("srblocks", "official")

#: LR size (H, W) the graph is recorded and first verified at, unless --fixed-size gives one
DEFAULT_SIZE = (64, 64)


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and measured."""

    format: str
    files: list[Path]
    dynamic_hw: bool
    size: tuple[int, int]  # the recorded (and fixed, if not dynamic) LR size
    verification: Verification
    metadata: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        shape = "dynamic H/W" if self.dynamic_hw else f"fixed input {self.size[0]}x{self.size[1]}"
        return (f"wrote {', '.join(map(str, self.files))} ({self.format}, {shape}); verified: "
                f"{self.verification.describe()}")


def second_size(size: tuple[int, int]) -> tuple[int, int]:
    """Another LR size, of another shape and parity, checked when H/W are dynamic."""
    return size[0] + 11, size[1] + 23


def _check_size(model: nn.Module, size: tuple[int, int], min_hw: tuple[int, int]) -> None:
    if size[0] < min_hw[0] or size[1] < min_hw[1]:
        raise ExportError(f"--fixed-size {size[0]}x{size[1]} is below the smallest input this network takes "
                          f"({min_hw[0]}x{min_hw[1]})")


def _program(model: nn.Module, size: tuple[int, int], dynamic: bool, min_hw: tuple[int, int],
             spec: str) -> tuple[Any, tuple[int, int]]:
    """(``torch.export`` program of ``model`` at ``size``, smallest (H, W) it accepts); :class:`DynamicShapeError`
    naming the node when dynamic H/W were asked for and cannot be recorded."""
    from .dynamic import _known_blocker
    from .onnx import export_program

    example = torch.rand(1, 3, *size)
    if dynamic:
        known = _known_blocker(model)
        if known is not None:
            raise _dynamic_error(spec, *known)
        # torch.export treats derived sizes of 1 as constants (SAFM pools H // 8: 1 for H < 16), so a range that
        # starts at the smallest input may fail where a range from twice that works: try doubling minimums
        lows = [min_hw]
        while lows[-1][0] * 2 <= size[0] and lows[-1][1] * 2 <= size[1] and len(lows) < 4:
            lows.append((lows[-1][0] * 2, lows[-1][1] * 2))
        for low in lows:
            try:
                return export_program(model, example, spatial_dims(low)), low
            except Exception:  # noqa: BLE001 - try the next range, then locate the node that keeps the size fixed
                continue
        raise _dynamic_error(spec, *find_blocker(model, example, lows[-1])) from None
    try:
        return export_program(model, example, None), size
    except Exception as exc:  # noqa: BLE001 - an unexportable network is reported, not a traceback
        line = next((x.strip() for x in str(exc).splitlines() if x.strip()), type(exc).__name__)
        raise ExportError(f"{spec}: torch.export failed at {size[0]}x{size[1]}: {type(exc).__name__}: {line}") \
            from None


def _dynamic_error(spec: str, node: str, reason: str) -> DynamicShapeError:
    return DynamicShapeError(f"{spec}: node {node!r} prevents a dynamic height/width export ({reason}); export a "
                             "fixed input size with --fixed-size HxW (fixed_size=(H, W))", node=node)


def export_onnx_bytes(model: nn.Module, *, fixed_size: tuple[int, int] | None = None, opset: int = DEFAULT_OPSET,
                      form: str = "train", tolerance: float = DEFAULT_TOLERANCE,
                      ) -> tuple[bytes, dict[str, str], Verification, tuple[int, int]]:
    """Serialized, verified ONNX model of ``model`` (in memory): (bytes, metadata, verification, recorded size)."""
    from ..backends.onnxruntime import OnnxRuntimeRunner
    from ..build import model_info
    from .onnx import to_onnx_bytes

    spec = model_info(model).spec.name
    min_hw = minimum_side(model)
    size = fixed_size or (max(DEFAULT_SIZE[0], min_hw[0]), max(DEFAULT_SIZE[1], min_hw[1]))
    _check_size(model, size, min_hw)
    program, low = _program(model, size, fixed_size is None, min_hw, spec)
    metadata = artifact_metadata(model, form=form, fixed_size=fixed_size)
    metadata["min_size"] = f"{low[0]}x{low[1]}"
    data = to_onnx_bytes(program, torch.rand(1, 3, *size), metadata, opset)
    sizes = [size] if fixed_size else [size, second_size(size)]
    check = verify(model, OnnxRuntimeRunner(data), sizes, runtime="onnxruntime", tolerance=tolerance)
    return data, metadata, check, size


def export_model(model: nn.Module, fmt: str, path: str | os.PathLike[str], *,
                 fixed_size: tuple[int, int] | None = None, opset: int = DEFAULT_OPSET, form: str = "train",
                 tolerance: float = DEFAULT_TOLERANCE, keys: str = "srblocks") -> ExportReport:
    """Export ``model`` (from :func:`srblocks.build_model`, weights loaded, deploy form applied as wanted).

    Args:
        fmt: ``onnx`` | ``openvino`` (path ``NAME.xml``, writes ``NAME.bin`` beside) | ``torchscript`` |
            ``safetensors`` (weights and metadata only).
        fixed_size: LR (H, W) to record as a fixed input size; None: dynamic H/W (a
            :class:`~srblocks.export.errors.DynamicShapeError` naming the node when the network cannot have them).
        opset: ONNX opset (onnx and openvino). form: ``train`` or ``deploy``, recorded in the metadata.
        tolerance: max abs diff allowed against eager torch, as a fraction of the input range.
        keys: (safetensors only) ``srblocks`` (default): ``model.state_dict()`` keys; ``official``: the official
            implementation's key names through the spec's ``official_checkpoint`` map, read back by
            ``load_weights(..., official=True)`` and, for SAFMN and RCAN, by spandrel / chaiNNer
            (``spandrel.ModelLoader().load_from_file``); the metadata then also has ``state_dict_keys: official``.
            An :class:`~srblocks.export.errors.ExportError` names a spec without an official key layout.

    Returns:
        :class:`ExportReport` (files written, max abs diff per checked size).
    """
    from ..build import model_info
    from ..fileio import write_bytes_atomic

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if keys not in KEYS:
        raise ExportError(f"unknown key naming {keys!r}; choose one of {', '.join(KEYS)}")
    if keys != "srblocks" and fmt != "safetensors":
        raise ExportError(f"keys={keys!r} applies to the safetensors format only (an {fmt} artifact has no "
                          "state_dict keys)")
    model_info(model)  # TypeError for modules not built from a spec
    model = model.eval()
    target = Path(path)
    if not target.parent.is_dir():
        raise ExportError(f"output folder {str(target.parent)!r} does not exist")
    with torch.no_grad():
        if fmt == "onnx":
            data, metadata, check, size = export_onnx_bytes(model, fixed_size=fixed_size, opset=opset, form=form,
                                                            tolerance=tolerance)
            write_bytes_atomic(target, data)
            return ExportReport(fmt, [target], fixed_size is None, size, check, metadata)
        if fmt == "openvino":
            return _export_openvino(model, target, fixed_size, opset, form, tolerance)
        if fmt == "torchscript":
            return _export_torchscript(model, target, fixed_size, form, tolerance)
        return _export_safetensors(model, target, form, keys)


def _export_openvino(model: nn.Module, target: Path, fixed_size: tuple[int, int] | None, opset: int, form: str,
                     tolerance: float) -> ExportReport:
    from ..backends.openvino import OpenVinoRunner
    from .openvino import onnx_to_openvino, save_openvino

    if target.suffix.lower() != ".xml":
        raise ExportError(f"an OpenVINO model is written as NAME.xml + NAME.bin: give -o ending in .xml, got "
                          f"{str(target)!r}")
    data, metadata, _, size = export_onnx_bytes(model, fixed_size=fixed_size, opset=opset, form=form,
                                                tolerance=tolerance)
    ov_model = onnx_to_openvino(data, metadata)
    sizes = [size] if fixed_size else [size, second_size(size)]
    check = verify(model, OpenVinoRunner(ov_model, precision="f32"), sizes, runtime="openvino (f32)",
                   tolerance=tolerance)
    files = save_openvino(ov_model, target)
    return ExportReport("openvino", files, fixed_size is None, size, check, metadata)


def _export_torchscript(model: nn.Module, target: Path, fixed_size: tuple[int, int] | None, form: str,
                        tolerance: float) -> ExportReport:
    from ..build import model_info
    from ..fileio import write_bytes_atomic
    from .dynamic import _known_blocker
    from .torchscript import load_torchscript, to_torchscript_bytes
    from .verify import VerificationError

    spec = model_info(model).spec.name
    min_hw = minimum_side(model)
    size = fixed_size or (max(DEFAULT_SIZE[0], min_hw[0]), max(DEFAULT_SIZE[1], min_hw[1]))
    _check_size(model, size, min_hw)
    if fixed_size is None and (known := _known_blocker(model)) is not None:
        raise _dynamic_error(spec, *known)
    metadata = artifact_metadata(model, form=form, fixed_size=fixed_size)
    data = to_torchscript_bytes(model, torch.rand(1, 3, *size), metadata)
    traced, _ = load_torchscript(data)
    check = verify(model, traced, [size], runtime="torchscript", tolerance=tolerance)
    if fixed_size is None:
        other = second_size(size)
        try:
            more = verify(model, traced, [other], runtime="torchscript", tolerance=tolerance)
        except (VerificationError, RuntimeError) as exc:
            raise DynamicShapeError(f"{spec}: torch.jit.trace recorded sizes of the {size[0]}x{size[1]} example "
                                    f"(at {other[0]}x{other[1]}: {str(exc).strip().splitlines()[0][:200]}); export "
                                    "with --fixed-size HxW, or use --format onnx (dynamic H/W)") from None
        check.diffs.update(more.diffs)
        check.sources.update(more.sources)
    write_bytes_atomic(target, data)
    return ExportReport("torchscript", [target], fixed_size is None, size, check, metadata)


def _export_safetensors(model: nn.Module, target: Path, form: str, keys: str = "srblocks") -> ExportReport:
    from ..build import model_info
    from ..fileio import write_bytes_atomic
    from ..weights import WeightsError
    from .safetensors import reload_model, to_safetensors_bytes

    min_hw = minimum_side(model)
    size = (max(DEFAULT_SIZE[0], min_hw[0]), max(DEFAULT_SIZE[1], min_hw[1]))
    metadata = artifact_metadata(model, form=form, fixed_size=None)
    if keys != "srblocks":
        metadata["state_dict_keys"] = keys
    try:
        data = to_safetensors_bytes(model, metadata, keys)
    except WeightsError as exc:
        raise ExportError(f"{model_info(model).spec.name}: cannot write official key names: {exc}") from None
    runtime = "safetensors reloaded into torch" + (" through the official key map" if keys == "official" else "")
    check = verify(model, reload_model(model, data, keys), [size], runtime=runtime, tolerance=0.0)
    write_bytes_atomic(target, data)
    return ExportReport("safetensors", [target], True, size, check, metadata)
