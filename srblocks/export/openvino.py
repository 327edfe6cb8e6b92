"""OpenVINO IR export (``.xml`` + ``.bin``), converted from the verified ONNX model, with f32 weights."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import ExportError, require

__all__ = ["onnx_to_openvino", "save_openvino"]


def onnx_to_openvino(onnx_bytes: bytes, metadata: dict[str, str]) -> Any:
    """An ``openvino.Model`` converted from serialized ONNX, the metadata in its ``rt_info`` under ``srblocks``."""
    ov = require("openvino", "openvino")
    with tempfile.TemporaryDirectory(prefix="srblocks-ov-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onnx_bytes)
        try:
            model = ov.convert_model(str(path))  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - the converter's failure as one line
            raise ExportError(f"OpenVINO could not convert the ONNX model: {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    for key, value in metadata.items():
        model.set_rt_info(value, ["srblocks", key])
    return model


def save_openvino(model: Any, xml_path: str | os.PathLike[str]) -> list[Path]:
    """Write ``model`` as ``NAME.xml`` + ``NAME.bin`` (weights kept f32). Both files are written in a temporary
    folder beside the target and moved into place (``.bin`` first), so a failure leaves no partial pair."""
    ov = require("openvino", "openvino")
    xml = Path(xml_path)
    if xml.suffix.lower() != ".xml":
        raise ExportError(f"an OpenVINO model is written as NAME.xml + NAME.bin: give -o ending in .xml, got {str(xml)!r}")
    with tempfile.TemporaryDirectory(prefix=f".{xml.name}.", dir=xml.parent) as tmp:
        staged = Path(tmp) / xml.name
        ov.save_model(model, str(staged), compress_to_fp16=False)  # type: ignore[attr-defined]
        binary = xml.with_suffix(".bin")
        os.replace(staged.with_suffix(".bin"), binary)
        os.replace(staged, xml)
    return [xml, binary]
