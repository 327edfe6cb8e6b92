"""Verification of an exported artifact: run it on its runtime on real image crops and compare with eager PyTorch.

The input is a crop of a Set5 LR image (``$SRBLOCKS_SHARED/data/Set5``, or ``../shared`` beside a checkout) when
one is large enough, else a synthetic photo-like image (smooth shading, edges, texture; fixed seed). An export
passes when ``max |artifact - eager| <= tolerance * input_range`` at every checked size (the export size, and a
second size of a different shape when H/W are dynamic).

Discrete choices: HPINet's GPA picks each patch's partner by an argmax, MGA refines the top-K patches of its error
mask. Where the best two candidates differ by float rounding, another runtime's summation order may pick the other
one, which changes a whole patch (measured on a random-weight HPINet-S: a top-1/top-2 similarity gap of 1.2e-6 gave
a 7e-4 difference). That is the network's own sensitivity, not an export error, so each check uses the first crop
(of up to :data:`MAX_CROPS`) whose choices have a margin of at least :data:`MIN_MARGIN` (relative to the largest
score); the margin used is reported.

Tolerance (:data:`DEFAULT_TOLERANCE`, relative to the input range): ``1e-4``, i.e. 1e-4 on models taking [0, 1]
and 0.0255 on models taking [0, 255]; a 40th of one 8-bit grey level, so the uint8 image practically never
changes. Float32 runtimes fuse and reorder the same operations (measured: about 1e-7..1e-6 of the range); a real
export bug (a wrong index, a specialised size) is orders of magnitude above it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .errors import VerificationError

__all__ = ["DEFAULT_TOLERANCE", "Verification", "verification_input", "verify"]

#: default tolerance of max abs diff, as a fraction of the model's input range
DEFAULT_TOLERANCE = 1e-4
#: smallest gap (relative) between the chosen and the next candidate of an argmax / top-K for a crop to be used
MIN_MARGIN = 1e-4
#: crops tried per size to find one with that margin
MAX_CROPS = 8

Runner = Callable[[torch.Tensor], torch.Tensor]


def _shared_set5() -> Path | None:
    env = os.environ.get("SRBLOCKS_SHARED")
    root = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"
    folder = root / "data" / "Set5"
    return folder if folder.is_dir() else None


def _synthetic(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like (H, W, 3) uint8 image: smooth colour shading, a few sharp-edged shapes, fine texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(3):
            fy, fx, ph = rng.uniform(0.5, 3) / h, rng.uniform(0.5, 3) / w, rng.uniform(0, 2 * np.pi)
            img[..., c] += np.sin(2 * np.pi * (fy * y + fx * x) + ph) / 3
    img = 0.5 + 0.35 * img
    for _ in range(4):  # discs and bars with sharp edges
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, max(4, min(h, w) / 3))
        inside = (y - cy) ** 2 + (x - cx) ** 2 < r**2 if rng.random() < 0.5 else (abs(y - cy) < r / 3) & (abs(x - cx) < r)
        img[inside] = rng.uniform(0, 1, 3)
    img += rng.normal(0, 0.02, img.shape) + 0.03 * np.sin(x * 1.7 + y * 0.9)[..., None]
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def verification_input(h: int, w: int, scale: int | None, input_range: float, index: int = 0) -> tuple[torch.Tensor, str]:
    """A (1, 3, h, w) float32 input in [0, input_range] and where it comes from (``Set5/LR_bicubic/X4/baby.png
    crop at (y, x)`` or ``synthetic``). ``index`` picks another image/crop for a second size."""
    from ..data.io import read_image

    folder = _shared_set5()
    candidates: list[Path] = []
    if folder is not None:
        lr = folder / "LR_bicubic" / f"X{scale}"
        candidates = sorted((lr if lr.is_dir() else folder / "HR").glob("*.png"))
    ordered = candidates[index % len(candidates):] + candidates[: index % len(candidates)] if candidates else []
    for path in ordered:
        image = read_image(path)
        ih, iw = image.shape[:2]
        if ih >= h and iw >= w:
            where_in = (0.5, 0.25, 0.75, 0.1)[(index // len(candidates)) % 4]  # further crops of the same images
            top, left = int((ih - h) * where_in), int((iw - w) * where_in)
            crop = image[top : top + h, left : left + w]
            where = f"{path.parent.parent.name}/{path.parent.name}/{path.name} crop {h}x{w} at ({top}, {left})"
            if path.parent.parent.name == "LR_bicubic":
                where = f"{path.parents[2].name}/LR_bicubic/{path.parent.name}/{path.name} crop {h}x{w} at ({top}, {left})"
            break
    else:
        crop, where = _synthetic(h, w, seed=index), f"synthetic photo-like image {h}x{w} (seed {index})"
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].to(torch.float32)
    return x * (input_range / 255.0), where


def selection_margin(model: nn.Module, x: torch.Tensor) -> float | None:
    """Smallest relative gap between the chosen and the next candidate over the model's discrete choices on ``x``
    (GPA partner argmax: top-1 vs top-2 similarity; MGA top-K: K-th vs (K+1)-th mask value); None without such
    choices. Runs ``model`` once."""
    gaps: list[float] = []
    handles = []
    for module in model.modules():
        if type(module).__name__ == "PatchMatch":
            def pre(mod: nn.Module, args: tuple) -> None:
                sim = mod.similarity(*args)  # (B, n, n)
                if sim.shape[-1] >= 2:
                    top = sim.topk(2, dim=-1).values
                    scale = top[..., 0].abs().clamp_min(1e-12)
                    gaps.append(((top[..., 0] - top[..., 1]) / scale).min().item())

            handles.append(module.register_forward_pre_hook(pre))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    for module in model.modules():
        last = getattr(module, "last", None) if type(module).__name__ == "MaskGuided" else None
        if last is not None and last.mask is not None and 0 < last.k < last.mask[0].numel():
            values = last.mask.flatten(1).sort(dim=1, descending=True).values
            scale = values[:, 0].abs().clamp_min(1e-12)
            gaps.append(((values[:, last.k - 1] - values[:, last.k]) / scale).min().item())
    return min(gaps) if gaps else None


@dataclass
class Verification:
    """Result of :func:`verify`: max abs diff per checked size (same units as the model output)."""

    runtime: str
    tolerance: float  # absolute (tolerance fraction times input range)
    diffs: dict[str, float] = field(default_factory=dict)  # "HxW" -> max abs diff
    sources: dict[str, str] = field(default_factory=dict)  # "HxW" -> input description
    margins: dict[str, float] = field(default_factory=dict)  # "HxW" -> selection margin of the crop used

    @property
    def max_abs_diff(self) -> float:
        return max(self.diffs.values()) if self.diffs else float("nan")

    def describe(self) -> str:
        sizes = ", ".join(f"{k}: {v:.3g}" for k, v in self.diffs.items())
        margins = (f"; argmax/top-K margin of the crops {', '.join(f'{v:.2g}' for v in self.margins.values())}"
                   if self.margins else "")
        return f"{self.runtime} vs eager torch, max abs diff {sizes} (tolerance {self.tolerance:.3g}){margins}"


def verify(model: nn.Module, runner: Runner, sizes: list[tuple[int, int]], *, runtime: str,
           tolerance: float = DEFAULT_TOLERANCE) -> Verification:
    """Compare ``runner`` with eager ``model`` on image crops of every size in ``sizes``; raise
    :class:`VerificationError` when an output has another shape or differs by more than ``tolerance * input_range``
    (or is not finite)."""
    from ..build import model_info

    info = model_info(model)
    atol = tolerance * float(info.input_range)
    result = Verification(runtime=runtime, tolerance=atol)
    for k, (h, w) in enumerate(sizes):
        best: tuple[float, torch.Tensor, str] | None = None
        for attempt in range(MAX_CROPS):
            x, where = verification_input(h, w, info.scale, float(info.input_range), index=k + 2 * attempt)
            margin = selection_margin(model, x)
            if margin is None or margin >= MIN_MARGIN:
                best = (margin if margin is not None else float("inf"), x, where)
                break
            if best is None or margin > best[0]:
                best = (margin, x, where)
        assert best is not None
        margin, x, where = best
        if margin != float("inf"):
            result.margins[f"{h}x{w}"] = margin
        with torch.inference_mode():
            expected = model(x)
            got = runner(x)
        key = f"{h}x{w}"
        if tuple(got.shape) != tuple(expected.shape):
            raise VerificationError(f"{runtime}: output shape {tuple(got.shape)} at input {key} differs from eager "
                                    f"torch's {tuple(expected.shape)} (input: {where})")
        diff = (got.to(torch.float32) - expected.to(torch.float32)).abs().max().item()
        result.diffs[key], result.sources[key] = diff, where
        if not diff <= atol:  # NaN fails too
            raise VerificationError(f"{runtime}: output differs from eager torch by {diff:.3g} (max abs) at input "
                                    f"{key} ({where}); tolerance {atol:.3g} = {tolerance:g} x input range; "
                                    "the artifact was not written")
    return result
