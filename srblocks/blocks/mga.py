"""MGA: Mask-Guided Acceleration (Hu et al., "Restore Globally, Refine Locally", ECCV 2022).

A network is split along its depth into a Base-Net (run on the whole image; it yields a coarse SR image and an LR
feature map) and a Refine-Net (run only on the K feature patches an error mask marks as worst). The pieces:

* :class:`MaskPredictor` (``mask_predictor``): the MP module exactly as the official ``exps/MPModule.py`` computes it
  (which differs from the paper text: softmax at full LR resolution before pooling, D-Conv weights an affine
  function of the pooled mask only; ``docs/reference/mga.md`` note 5).
* Vectorised patch machinery (no Python loop over patches): :func:`resolve_k`, :func:`select_topk`,
  :func:`crop_patches` (p x p cores with the official zero halo), :func:`paste_patches`, :func:`pad_to_multiple`.
* :class:`MaskGuided` (``mask_guided``): the composite block base -> MP -> top-K -> crop -> refine -> paste.
* :func:`error_mask_target`: the MP-module training target of the official ``train_mask.py`` (pool size p*s).

Index convention: a selected patch is a row ``(b, r, c)`` of an int64 (N, 3) tensor (batch, patch row, patch
column), sorted in raster order within each image and by batch index, exactly ``torch.nonzero`` of the binary top-K
map as in the official code. Patch (r, c) covers LR rows p*r .. p*r+p-1, cols p*c .. p*c+p-1 and the HR block
rows s*p*r .. s*p*(r+1)-1 (s = scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt, WithJsonSchema
from torch import nn

from ..registry import register_block

__all__ = [
    "MaskPredictor",
    "MaskGuided",
    "MaskGuidedOutput",
    "SubNetwork",
    "resolve_k",
    "select_topk",
    "crop_patches",
    "paste_patches",
    "pad_to_multiple",
    "error_mask_target",
]


# ------------------------------------------------------------------------------------------------ patch machinery


def resolve_k(k: int | float, n_patches: int) -> int:
    """Number of patches to refine per image.

    ``k`` an ``int`` >= 0 is a count, clamped to ``n_patches`` (so a fixed K such as the official 240/1000 also
    works on small images); ``k`` a ``float`` in [0, 1] is a fraction of the patches, rounded half up
    (``0.1`` of 3,600 -> 360; ``1.0`` -> all). ``bool`` is rejected.
    """
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise ValueError(f"k must be an int count or a float fraction in [0, 1], got {k!r}")
    if isinstance(k, int):
        if k < 0:
            raise ValueError(f"k (a patch count) must be >= 0, got {k}")
        return min(k, n_patches)
    if not 0.0 <= k <= 1.0 or math.isnan(k):
        raise ValueError(f"k as a float is a fraction of the patches and must lie in [0, 1], got {k}")
    return min(n_patches, int(math.floor(k * n_patches + 0.5)))


def select_topk(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Per image, the ``k`` largest entries of an error mask, as (batch, row, col) rows in raster order.

    Args:
        mask: (B, 1, h, w) or (B, h, w) error mask on the patch grid.
        k: patches per image, 0 <= k <= h*w.

    Returns:
        int64 (B*k, 3) on ``mask.device``; rows sorted by batch, then raster position (= official
        ``nonzero(scatter(topk))``). ``k == h*w`` selects every patch without a top-K.
    """
    if mask.dim() == 4:
        if mask.shape[1] != 1:
            raise ValueError(f"mask must have 1 channel, got shape {tuple(mask.shape)}")
        mask = mask[:, 0]
    if mask.dim() != 3:
        raise ValueError(f"mask must be (B, 1, h, w) or (B, h, w), got shape {tuple(mask.shape)}")
    b, h, w = mask.shape
    n = h * w
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, {n}] for a {h}x{w} patch grid, got {k}")
    if k == n:
        pos = torch.arange(n, device=mask.device).expand(b, n)
    else:
        pos = mask.detach().reshape(b, n).topk(k, dim=1, sorted=False).indices.sort(dim=1).values
    batch = torch.arange(b, device=mask.device).repeat_interleave(k)
    pos = pos.reshape(-1)
    return torch.stack([batch, torch.div(pos, w, rounding_mode="floor"), pos % w], dim=1)


def crop_patches(feat: torch.Tensor, idx: torch.Tensor, patch_size: int, halo: int) -> torch.Tensor:
    """Gather the LR windows of the selected patches, each with a ``halo`` of context, zero-padded at image borders.

    Args:
        feat: (B, C, H, W) with H, W multiples of ``patch_size``.
        idx: int64 (N, 3) rows (b, r, c) (see module docstring).

    Returns:
        (N, C, p + 2*halo, p + 2*halo): ``zero_pad(feat, halo)[b, :, p*r : p*r + p + 2*halo, p*c : ...]``, i.e. LR
        rows p*r - halo .. p*r + p + halo - 1 (the official ``crop_patch``; 6x6 for p = 4, halo = 1). One gather on
        a strided view; only the selected windows are materialised.
    """
    _, _, h, w = feat.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"feature size {h}x{w} must be a multiple of patch_size {patch_size} (pad first)")
    win = patch_size + 2 * halo
    padded = F.pad(feat, (halo, halo, halo, halo)) if halo else feat
    windows = padded.unfold(2, win, patch_size).unfold(3, win, patch_size)  # (B, C, h/p, w/p, win, win) view
    return windows[idx[:, 0], :, idx[:, 1], idx[:, 2]]  # advanced indices around a slice -> (N, C, win, win)


def paste_patches(image: torch.Tensor, patches: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Copy of ``image`` with the blocks ``idx`` overwritten by ``patches`` (no blending), one scatter.

    Args:
        image: (B, C, H, W), H and W multiples of the patch side P.
        patches: (N, C, P, P).
        idx: int64 (N, 3) rows (b, r, c): patch n goes to ``image[b, :, P*r : P*(r+1), P*c : P*(c+1)]``.

    Returns:
        (B, C, H, W); differentiable w.r.t. ``image`` (outside the pasted blocks) and ``patches``.
    """
    b, c, h, w = image.shape
    p = patches.shape[-1]
    if patches.shape[-2] != p or patches.shape[1] != c:
        raise ValueError(f"patches must be (N, {c}, P, P), got {tuple(patches.shape)}")
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} must be a multiple of the patch side {p}")
    out = image.clone(memory_format=torch.contiguous_format)
    if idx.shape[0]:
        blocks = out.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, h/P, w/P, C, P, P) view
        blocks[idx[:, 0], idx[:, 1], idx[:, 2]] = patches.to(out.dtype)
    return out


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad (B, C, H, W) at the bottom/right to the next multiples of ``multiple`` (no copy when already so)."""
    ph, pw = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


def error_mask_target(coarse: torch.Tensor, refined: torch.Tensor, patch_size: int, scale: int) -> torch.Tensor:
    """MP-module training target (paper step 3; official ``train_mask.py``), (B, 1, H/(p*s), W/(p*s)).

    Y (BT.601, input in [0, 1]) of ``|refined - coarse|``, min-max normalised over the whole batch, mean-pooled
    per HR patch (p*s x p*s; the official code hard-codes 12 = 4*3, right only for x3), min-max normalised again.
    Both images (B, 3, H, W) with H, W multiples of p*s. Returns zeros where the error is constant.
    """
    hp = patch_size * scale
    if coarse.shape != refined.shape or coarse.shape[1] != 3:
        raise ValueError(
            f"coarse and refined must both be (B, 3, H, W), got {tuple(coarse.shape)} and {tuple(refined.shape)}"
        )
    if coarse.shape[-2] % hp or coarse.shape[-1] % hp:
        raise ValueError(f"image size {tuple(coarse.shape[-2:])} must be a multiple of patch_size * scale = {hp}")
    coef = torch.tensor([65.481, 128.553, 24.966], dtype=coarse.dtype, device=coarse.device).view(1, 3, 1, 1) / 255.0
    err = ((refined - coarse) * coef).sum(dim=1, keepdim=True).abs()

    def minmax(t: torch.Tensor) -> torch.Tensor:
        lo, hi = t.min(), t.max()
        return (t - lo) / (hi - lo) if hi > lo else torch.zeros_like(t)

    return minmax(F.avg_pool2d(minmax(err), hp))


# ---------------------------------------------------------------------------------------------------- MP module


@register_block("mask_predictor", in_channels="dim", renamed={"nf": "dim"})
class MaskPredictor(nn.Module):
    """MGA Mask-Prediction module (official ``MPModule``), (B, dim, H, W) -> error mask (B, 1, H/p, W/p).

    ::

        logits = spa_mask_1(x)          # 3x3 dim -> dim (bias), ReLU, 3x3 dim -> 2 (bias), at full LR resolution
        m = softmax(logits / t, dim=1)[:, 1:]          # keep channel 1 ("under-SR"); t = temperature (1)
        m = lrelu_0.1(adaptive_avg_pool(m, (H/p, W/p)))   # mean per p x p patch; the LeakyReLU is a no-op (m >= 0)
        kern = conv_kernel(m)          # 1x1, 1 -> k1^2 (bias): per-position weights, affine in m's centre value
        M(y, x) = sum_j kern_j(y, x) * m(y + dy_j, x + dx_j)   # k1 x k1 neighbourhood, zero padded, row-major

    Keys ``spa_mask_1.0``, ``spa_mask_1.2``, ``conv_kernel`` (23,502 params at dim = 50, 1,576 at dim = 12).
    H and W must be multiples of ``patch_size`` (:class:`MaskGuided` pads). The output is unbounded (the D-Conv
    weights can be negative). ``top-K`` selection is not part of this block (:func:`select_topk`).
    """

    def __init__(
        self,
        dim: PositiveInt,
        patch_size: PositiveInt = 4,
        kernel_size: PositiveInt = 5,
        temperature: PositiveFloat = 1.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size (D-Conv neighbourhood) must be odd, got {kernel_size}")
        self.out_channels = 1
        self.size = patch_size
        self.k1 = kernel_size
        self.t = temperature
        self.spa_mask_1 = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1), nn.ReLU(), nn.Conv2d(dim, 2, 3, 1, 1))
        self.conv_kernel = nn.Conv2d(1, kernel_size**2, 1, 1, 0)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.size
        if h % p or w % p:
            raise ValueError(f"mask_predictor input {h}x{w} must be a multiple of patch_size {p}")
        m = (self.spa_mask_1(x) / self.t).softmax(dim=1)[:, 1:]
        m = self.lrelu(F.adaptive_avg_pool2d(m, (h // p, w // p)))
        kern = self.conv_kernel(m)  # (B, k1^2, h/p, w/p)
        neigh = F.unfold(m, self.k1, padding=self.k1 // 2).view(b, self.k1**2, h // p, w // p)
        return (kern * neigh).sum(dim=1, keepdim=True)


# ---------------------------------------------------------------------------------------------- composite block

#: Annotation of a sub-network argument: an already-built ``nn.Module`` (in a spec, a sub-graph mapping with
#: ``nodes:`` that the assembler builds); the JSON schema describes it as an object.
SubNetwork = Annotated[
    nn.Module, WithJsonSchema({"type": "object", "description": "sub-network (a sub-graph spec, built to a module)"})
]


@dataclass
class MaskGuidedOutput:
    """Everything one :meth:`MaskGuided.run` computed (tensors keep their autograd graph).

    Attributes:
        sr: final SR image (B, C_out, s*H, s*W).
        coarse: Base-Net image (B, C_out, s*H, s*W).
        mask: MP error mask (B, 1, ceil(H/p), ceil(W/p)) on the padded patch grid; None in modes "base"/"dense"
            and without a mask predictor.
        idx: int64 (N, 3) selected patches (b, r, c), raster order; None in modes "base"/"dense".
        k: patches refined per image (N = B*k).
        scale: s, inferred from the base output.
    """

    sr: torch.Tensor
    coarse: torch.Tensor
    mask: torch.Tensor | None
    idx: torch.Tensor | None
    k: int
    scale: int


Mode = Literal["mask", "all", "dense", "base"]


@register_block("mask_guided", in_channels="in_channels", renamed={"nf": "dim"})
class MaskGuided(nn.Module):
    """Mask-guided SR (MGA): Base-Net on the whole image, Refine-Net on the K worst p x p patches only.

    (B, in_channels, H, W) -> (B, out_channels, s*H, s*W), any H, W; s is inferred from the base output.

    Interface of the sub-networks (built by the caller, e.g. the assembler from sub-graphs split at a named node):

    * ``base(x)`` takes the LR input (B, in_channels, H, W) and returns a tuple ``(coarse, feat, *extras)``:
      ``coarse`` the coarse SR image (B, out_channels, s*H, s*W); ``feat`` the LR feature at the split node
      (B, dim, H, W), seen by the MP module and cropped for the refine net; ``extras`` optional further LR tensors
      (B, C_i, H, W) that the refine net also needs (e.g. a long skip from the head, or the LR image for a global
      bilinear skip). Official RFDN-MGA: ``RFDNBase`` returns ``(upsampler(out_lr), out_lr)``, dim = 50.
    * ``refine(p_feat, *p_extras)`` receives the crops of ``feat`` and of each extra at the selected patches, in
      that order, each (N, C, p + 2*halo, p + 2*halo) (LR window with zero halo at image borders), and returns the
      HR patches (N, out_channels, s*p, s*p) - a refine net that strips the halo itself, like the official
      ``RFDNRefine`` whose last 3x3 conv has padding 0 - or (N, out_channels, s*(p + 2*halo), ...), whose outer
      ``s*halo`` HR pixels are then cropped. ``refine`` is not called when K = 0.

    Splitting a spec (the paper's general transform, :func:`srblocks.transforms.mask_guided_transform`): the spec
    is the decomposed D-Net graph; at the split node N (F_c) and the first tail node T (upsampler), ``base`` = every
    node up to N plus its own new copy of the tail T..output (fed from N), returning (coarse, F_c, extras);
    ``refine`` = every node after N (the deeper blocks and the original tail), taking F_c and the extras (LR values
    before N that the refine part also reads, e.g. a long skip or the LR image of a bilinear skip). Every refine layer
    keeps its "same" padding, so its output is the halo-sized window that gets cropped, or, as in the official
    RFDN-MGA, a 3x3 conv with padding 0 strips the LR halo. (Official RFDN-MGA: N = ``out_lr``, T = the upsampler,
    the refine part = 2 RFDBs, fusion, LR conv, conv1/conv2, upsampler: ``refine.*`` keys.)

    Pipeline (mode ``"mask"``; the official ``RFDNMGA.forward``): run ``base``; zero-pad feat/extras at the
    bottom/right to multiples of p (and the coarse image by s times as much) so any size works; ``mask =
    self.mask(feat)`` (:class:`MaskPredictor`); per image the top-K entries (``k``: int count, clamped, or float
    fraction, :func:`resolve_k`); crop, refine, paste the HR patches over the coarse image (overwrite); crop back
    to (s*H, s*W). Other modes: ``"all"`` refines every patch (the All-Net, training step 2; the mask is still
    computed and returned, for step 3's target), ``"dense"`` runs ``refine`` once on the whole halo-padded feature
    map (the decomposed -D network; no MP), ``"base"`` returns the coarse image.

    ``forward`` returns the SR image and stores the :class:`MaskGuidedOutput` of the call in ``self.last``
    (coarse, mask, idx, k; with their autograd graph until the next call); :meth:`run` returns it directly and takes
    per-call ``k``/``mode`` overrides. Keys: ``base.*``, ``mask.*`` (MP), ``refine.*`` as the official RFDNMGA.

    ``mask_predictor=False`` leaves the MP module out (``self.mask`` is None): the decomposed -D network (Base +
    Refine, the paper's D-Net params) for modes ``"dense"``, ``"base"`` and ``"all"`` (whose ``mask`` is then None).
    """

    def __init__(
        self,
        in_channels: PositiveInt,
        base: SubNetwork,
        refine: SubNetwork,
        dim: PositiveInt,
        k: NonNegativeInt | float,
        out_channels: PositiveInt = 3,
        patch_size: PositiveInt = 4,
        halo: NonNegativeInt = 1,
        mask_kernel_size: PositiveInt = 5,
        temperature: PositiveFloat = 1.0,
        mode: Mode = "mask",
        mask_predictor: bool = True,
    ) -> None:
        super().__init__()
        for name, mod in (("base", base), ("refine", refine)):
            if not isinstance(mod, nn.Module):
                raise ValueError(f"{name} must be an nn.Module, got {type(mod).__name__}")
        resolve_k(k, 1)  # validates k
        if mode not in ("mask", "all", "dense", "base"):
            raise ValueError(f"mode must be one of 'mask', 'all', 'dense', 'base', got {mode!r}")
        if mode == "mask" and not mask_predictor:
            raise ValueError("mode 'mask' needs the mask predictor (mask_predictor=False builds the -D network)")
        declared = getattr(base, "out_channels", None)
        if isinstance(declared, Sequence) and len(declared) >= 2 and tuple(declared[:2]) != (out_channels, dim):
            raise ValueError(
                f"base declares out_channels {list(declared)} but out_channels={out_channels}, dim={dim} were given"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.dim = dim
        self.k = k
        self.patch_size = patch_size
        self.halo = halo
        self.mode: Mode = mode
        self.base = base
        self.mask = (
            MaskPredictor(dim, patch_size=patch_size, kernel_size=mask_kernel_size, temperature=temperature)
            if mask_predictor
            else None
        )
        self.refine = refine
        self.last: MaskGuidedOutput | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last = self.run(x)
        return self.last.sr

    def _base(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], int]:
        out = self.base(x)
        if not isinstance(out, (tuple, list)) or len(out) < 2:
            raise TypeError("mask_guided: base must return a tuple (coarse, feat, *extras)")
        coarse, feats = out[0], list(out[1:])
        h, w = x.shape[-2:]
        s = coarse.shape[-2] // h
        if s < 1 or coarse.shape[-2:] != (s * h, s * w) or coarse.shape[1] != self.out_channels:
            raise ValueError(
                f"mask_guided: base coarse image {tuple(coarse.shape)} is not (B, {self.out_channels}, s*{h}, s*{w})"
            )
        if feats[0].shape[1] != self.dim:
            raise ValueError(f"mask_guided: base feature has {feats[0].shape[1]} channels, expected dim={self.dim}")
        for f in feats:
            if f.shape[-2:] != (h, w):
                raise ValueError(f"mask_guided: base LR tensors must be {h}x{w}, got {tuple(f.shape)}")
        return coarse, feats, s

    def _strip(self, hr: torch.Tensor, core: tuple[int, int], margin: int) -> torch.Tensor:
        if hr.shape[-2:] == core:
            return hr
        if margin and hr.shape[-2:] == (core[0] + 2 * margin, core[1] + 2 * margin):
            return hr[..., margin : margin + core[0], margin : margin + core[1]]
        raise ValueError(
            f"mask_guided: refine output {tuple(hr.shape)} is neither {core} nor that plus a {margin}-pixel HR halo"
        )

    def run(self, x: torch.Tensor, k: int | float | None = None, mode: Mode | None = None) -> MaskGuidedOutput:
        """One forward pass returning all intermediate results (see :class:`MaskGuidedOutput`)."""
        mode = self.mode if mode is None else mode
        coarse, feats, s = self._base(x)
        h, w = x.shape[-2:]
        if mode == "base":
            return MaskGuidedOutput(coarse, coarse, None, None, 0, s)
        if mode == "dense":
            hal = self.halo
            padded = [F.pad(f, (hal, hal, hal, hal)) if hal else f for f in feats]
            sr = self._strip(self.refine(*padded), (s * h, s * w), s * hal)
            return MaskGuidedOutput(sr, coarse, None, None, 0, s)
        if mode not in ("mask", "all"):
            raise ValueError(f"mode must be one of 'mask', 'all', 'dense', 'base', got {mode!r}")
        p = self.patch_size
        feats_p = [pad_to_multiple(f, p) for f in feats]
        hp, wp = feats_p[0].shape[-2:]
        coarse_p = F.pad(coarse, (0, s * (wp - w), 0, s * (hp - h))) if (hp, wp) != (h, w) else coarse
        n = (hp // p) * (wp // p)
        kk = n if mode == "all" else resolve_k(self.k if k is None else k, n)
        if self.mask is None and mode == "mask":
            raise ValueError("mode 'mask' needs the mask predictor (this network was built with mask_predictor=False)")
        mask = self.mask(feats_p[0]) if self.mask is not None else None
        grid = mask if mask is not None else feats_p[0].new_zeros(feats_p[0].shape[0], 1, hp // p, wp // p)
        idx = select_topk(grid, kk)  # mode "all" without a mask predictor: every patch (k == n needs no mask)
        if kk == 0:
            sr = coarse_p.clone()
        else:
            crops = [crop_patches(f, idx, p, self.halo) for f in feats_p]
            hr = self._strip(self.refine(*crops), (s * p, s * p), s * self.halo)
            sr = paste_patches(coarse_p, hr, idx)
        if (hp, wp) != (h, w):
            sr = sr[..., : s * h, : s * w]
        return MaskGuidedOutput(sr, coarse, mask, idx, kk, s)
