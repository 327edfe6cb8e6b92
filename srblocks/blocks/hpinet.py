"""HPINet blocks: Cascaded Patch Division (CPD), Global Pixel Access (GPA), Intra-Patch Self-Attention (IPSA).

Paper: J. Liu, C. Chen, J. Tang, G. Wu, "From Coarse to Fine: Hierarchical Pixel Integration for Lightweight
Image Super-Resolution", AAAI 2023. Official code: ``passerer/HPINet`` (branch ``cc``). Everything here computes
what the official code computes (not the paper's equations where they differ; see ``docs/reference/hpinet.md``).

Shapes: B batch, C channels (``dim``), H x W feature map, P patch size, n number of CPD windows (patches),
L = P*P tokens per patch. Inside the blocks a patch set is held as *tokens* of shape (B*n, L, C): windows in
row-major window order, pixels of a patch row-major, channels last (the official ``(b n) (h w) c`` layout).

Registered blocks (all map (B, C, H, W) -> (B, C, H, W) and need H, W >= ``patch_size``):

- ``cpd``: CPD divide followed by Patch Aggregation (merge); :func:`cpd_divide` / :func:`cpd_merge` are the
  functional forms used by the other blocks.
- ``gpa``: CPD -> GPA layer (patch matching + cross-attention to the matched patch + FFN) -> merge.
- ``ipsa``: CPD -> IPSA layer (self-attention within each patch + FFN) -> merge.
- ``hpi_block``: one HPINet body stage, ``x + conv3x3(merge(IPSA(IPSA(GPA(CPD(x))))))``.

Differences from the official code, all deliberate: partners are gathered within the same image for batch > 1
(the official eval path takes every image's partners from image 0; batch 1 is identical); inputs smaller than the
patch size raise ``ValueError`` (the official code silently produces wrong output); the library returns the image
in training mode too (the official ``forward(x, target)`` returns the L1 loss).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import PositiveInt
from torch import nn

from ..registry import register_block
from .common import Conv
from .traceable import exporting

__all__ = [
    "CPDGeometry",
    "cpd_geometry",
    "cpd_divide",
    "cpd_merge",
    "hpi_attention",
    "CPD",
    "PatchMatch",
    "HPIAttention",
    "HPIFFN",
    "PreNorm",
    "HPILayer",
    "GPA",
    "IPSA",
    "HPIBlock",
]


# ----------------------------------------------------------------------------------------------------------------
# Cascaded Patch Division (CPD) and Patch Aggregation
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CPDGeometry:
    """Window layout of CPD on an H x W map with patch size P (cached; treat the tensors as read-only).

    Attributes:
        height, width, patch_size: the map size and P (pixels).
        row_starts, col_starts: top / left pixel of every window row / column (the last one clamped to L - P).
        index: (n*P*P,) int64 flat pixel index ``row * W + col`` of every token, in token order.
        divisor: (H*W, 1) float32 per-pixel divisor applied after summing the windows: 2**(number of official
            strip halvings), exact like the official successive ``/= 2``; or the coverage count (``exact_average``).
    """

    height: int
    width: int
    patch_size: int
    exact_average: bool
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]
    index: torch.Tensor
    divisor: torch.Tensor

    @property
    def n_patches(self) -> int:
        """Number of windows n = len(row_starts) * len(col_starts)."""
        return len(self.row_starts) * len(self.col_starts)

    @property
    def tokens_per_patch(self) -> int:
        """L = P * P."""
        return self.patch_size * self.patch_size


def _axis_layout(length: int, ps: int, exact_average: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Window starts along one axis and the per-position divisor of the re-assembly (1-D, int64).

    Official rule (``patch_divide``/``patch_reverse``): step = P - 2; window k exists while k*step < L + step - P and
    starts at min(k*step, L - P). Merge halves, for every k >= 1, the strip [lo_k, k*step + 2) with lo_k = k*step,
    or L - P for the clamped window (the strip end keeps the unclamped start). Where three windows overlap
    ((L - 3) % (P - 2) == 0 and L > P + 1) this gives weight 3/4 instead of 1: the quirk reproduced by default.
    ``exact_average`` divides by the true coverage count instead. The 2-D divisor is the row one times the column one.
    """
    step = ps - 2
    k = torch.arange(0, length + step - ps, step, dtype=torch.int64)
    starts = k.clamp(max=length - ps)
    pos = torch.arange(length, dtype=torch.int64)
    if exact_average:
        divisor = ((pos[None, :] >= starts[:, None]) & (pos[None, :] < starts[:, None] + ps)).sum(0)
    else:
        lo, hi = starts[1:], k[1:] + 2
        divisor = 2 ** ((pos[None, :] >= lo[:, None]) & (pos[None, :] < hi[:, None])).sum(0)
    return starts, divisor


@functools.lru_cache(maxsize=128)
def _geometry_cached(height: int, width: int, ps: int, exact_average: bool, device: torch.device) -> CPDGeometry:
    rows, wr = _axis_layout(height, ps, exact_average)
    cols, wc = _axis_layout(width, ps, exact_average)
    off = torch.arange(ps, dtype=torch.int64)
    r = (rows[:, None] + off)[:, None, :, None]  # (nh, 1, P, 1)
    c = (cols[:, None] + off)[None, :, None, :]  # (1, nw, 1, P)
    index = (r * width + c).reshape(-1)
    divisor = (wr[:, None] * wc[None, :]).reshape(-1, 1).to(torch.float32)
    return CPDGeometry(
        height=height,
        width=width,
        patch_size=ps,
        exact_average=exact_average,
        row_starts=tuple(int(v) for v in rows),
        col_starts=tuple(int(v) for v in cols),
        index=index.to(device),
        divisor=divisor.to(device),
    )


def _check_patch_size(patch_size: int) -> None:
    if patch_size < 3:
        raise ValueError(f"patch_size must be >= 3 (CPD windows overlap by 2 pixels), got {patch_size}")


def cpd_geometry(
    height: int, width: int, patch_size: int, exact_average: bool = False, device: torch.device | str = "cpu"
) -> CPDGeometry:
    """CPD window layout for an H x W map (see :class:`CPDGeometry`); raises ``ValueError`` if H or W < P."""
    _check_patch_size(patch_size)
    if height < patch_size or width < patch_size:
        raise ValueError(
            f"CPD needs a feature map at least patch_size x patch_size ({patch_size}x{patch_size}), got "
            f"{height}x{width}; HPINet's patch division does not pad (use a larger input or a smaller patch_size)"
        )
    return _geometry_cached(int(height), int(width), int(patch_size), bool(exact_average), torch.device(device))


@dataclass(frozen=True)
class _TracedGeometry:
    """The parts of :class:`CPDGeometry` that :func:`cpd_merge` reads, computed from symbolic sizes while exporting
    (``torch.export`` keeps H and W symbolic; the cached geometry would fix them to the example's)."""

    height: int | torch.SymInt
    width: int | torch.SymInt
    patch_size: int
    n_patches: int | torch.SymInt
    index: torch.Tensor
    divisor: torch.Tensor

    @property
    def tokens_per_patch(self) -> int:
        return self.patch_size * self.patch_size


def _traced_geometry(height: int | torch.SymInt, width: int | torch.SymInt, ps: int, exact_average: bool,
                     device: torch.device) -> _TracedGeometry:
    """:func:`_geometry_cached`'s index and divisor from tensor arithmetic on (possibly symbolic) H, W: the same
    integers (the divisor is a power of two or a small count, exact in float32)."""
    rows, wr = _axis_layout(height, ps, exact_average)
    cols, wc = _axis_layout(width, ps, exact_average)
    off = torch.arange(ps, dtype=torch.int64)
    r = (rows[:, None] + off)[:, None, :, None]
    c = (cols[:, None] + off)[None, :, None, :]
    index = (r * width + c).reshape(-1)
    divisor = (wr[:, None] * wc[None, :]).reshape(-1, 1).to(torch.float32)
    return _TracedGeometry(height, width, ps, rows.shape[0] * cols.shape[0], index.to(device), divisor.to(device))


def cpd_divide(x: torch.Tensor, patch_size: int, exact_average: bool = False) -> tuple[torch.Tensor, CPDGeometry]:
    """Cascaded Patch Division: (B, C, H, W) -> tokens (B*n, P*P, C) and the geometry needed by :func:`cpd_merge`.

    Overlapping P x P windows (step P - 2, last window shifted to touch the border, no padding), one index gather.
    ``exact_average`` only selects which merge weights the returned geometry carries. While exporting or compiling
    (``torch.compile``), the geometry is computed from the symbolic sizes instead of the cache (same values; H, W
    stay dynamic, and no ``Tensor.item()`` breaks the compiled graph).
    """
    b, c, h, w = x.shape
    if exporting() or torch.compiler.is_compiling():  # the cache's int() of tensors would break the graph
        _check_patch_size(patch_size)
        geo = _traced_geometry(h, w, patch_size, exact_average, x.device)
    else:
        geo = cpd_geometry(h, w, patch_size, exact_average, x.device)
    flat = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
    tokens = flat.index_select(1, geo.index)
    return tokens.view(b * geo.n_patches, geo.tokens_per_patch, c), geo


def cpd_merge(tokens: torch.Tensor, geo: CPDGeometry) -> torch.Tensor:
    """Patch Aggregation: tokens (B*n, P*P, C) -> (B, C, H, W) (a channels-last strided view).

    Sums every window into a zero map (``scatter_add``, windows in row-major order as the official code), then
    divides by the geometry's divisor: the official strip-halving rule, or the coverage count with ``exact_average``.
    """
    bn, length, c = tokens.shape
    b = bn // geo.n_patches
    hw = geo.height * geo.width
    src = tokens.reshape(b, bn // b * length, c)
    index = geo.index.view(1, -1, 1).expand(b, -1, c)
    out = tokens.new_zeros(b, hw, c).scatter_add_(1, index, src)
    divisor = geo.divisor.to(out.dtype)
    out = out / divisor if torch.is_grad_enabled() and out.requires_grad else out.div_(divisor)
    return out.view(b, geo.height, geo.width, c).permute(0, 3, 1, 2)


@register_block("cpd", in_channels="dim", renamed={"channels": "dim"})
class CPD(nn.Module):
    """Cascaded Patch Division then Patch Aggregation (HPINet), (B, C, H, W) -> (B, C, H, W); H, W >= patch_size.

    ``divide`` splits the map into overlapping P x P windows (step P - 2; the last window of a row/column is moved to
    touch the border; no padding) giving tokens (B*n, P*P, C); ``merge`` re-assembles them. ``forward`` is the round
    trip: the identity with ``exact_average=True``; with the default official weighting it is the identity except
    on rows/columns covered by three windows ((L - 3) % (P - 2) == 0, L > P + 1), which get weight 3/4 (9/16 where
    such a row and column cross), as in the official ``patch_reverse``. No parameters.
    """

    def __init__(self, dim: PositiveInt, patch_size: PositiveInt, exact_average: bool = False) -> None:
        super().__init__()
        _check_patch_size(patch_size)
        self.out_channels = dim
        self.patch_size = patch_size
        self.exact_average = exact_average

    def divide(self, x: torch.Tensor) -> tuple[torch.Tensor, CPDGeometry]:
        """(B, C, H, W) -> tokens (B*n, P*P, C), geometry."""
        return cpd_divide(x, self.patch_size, self.exact_average)

    def merge(self, tokens: torch.Tensor, geo: CPDGeometry) -> torch.Tensor:
        """tokens (B*n, P*P, C) -> (B, C, H, W)."""
        return cpd_merge(tokens, geo)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(*self.divide(x))


# ----------------------------------------------------------------------------------------------------------------
# Token-level parts (official module and parameter names)
# ----------------------------------------------------------------------------------------------------------------


def hpi_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, use_sdpa: bool = True
) -> torch.Tensor:
    """softmax(q k^T * scale) v over the last two dims; q, k (..., L, d), v (..., L, dv) -> (..., L, dv).

    ``use_sdpa`` runs ``F.scaled_dot_product_attention``. PyTorch's fused CPU kernel (no L x L matrix in memory) needs
    equal q/k/v widths, so on CPU the narrower side is zero-padded first: zero columns add exact zeros to q k^T (or
    give zero output columns that are sliced off). ``False`` is the explicit form of the official code; both agree to
    float rounding (checked <= 1e-5 in the tests).
    """
    if not use_sdpa:
        attn = torch.matmul(q, k.transpose(-1, -2)) * scale
        return torch.matmul(attn.softmax(-1), v)
    d, dv = q.shape[-1], v.shape[-1]
    if q.device.type == "cpu" and d < dv:
        q, k = F.pad(q, (0, dv - d)), F.pad(k, (0, dv - d))
    elif q.device.type == "cpu" and dv < d:
        return F.scaled_dot_product_attention(q, k, F.pad(v, (0, d - dv)), scale=scale)[..., :dv]
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


class HPIAttention(nn.Module):
    """HPINet attention on tokens (N, L, C) -> (N, L, C): Q, K to ``qk_dim`` and V to C (no bias), no output projection.

    Self-attention when ``y`` is None, else cross-attention (K, V from ``y``, (N, L', C), used as given: the official
    GPA layer does not normalise the partner tokens). Scale ``qk_dim ** -0.5`` (also with several heads).
    Parameters ``to_q``, ``to_k``, ``to_v`` as in the official code.
    """

    use_sdpa: bool = True

    def __init__(self, dim: int, qk_dim: int, heads: int = 1) -> None:
        super().__init__()
        if qk_dim % heads or dim % heads:
            raise ValueError(f"dim ({dim}) and qk_dim ({qk_dim}) must be divisible by heads ({heads})")
        self.dim, self.qk_dim, self.heads = dim, qk_dim, heads
        self.scale = qk_dim**-0.5
        self.to_q = nn.Linear(dim, qk_dim, bias=False)
        self.to_k = nn.Linear(dim, qk_dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if not self.use_sdpa:
            return self._explicit(x, y)
        h, dq, dv = self.heads, self.qk_dim // self.heads, self.dim // self.heads
        # On CPU, PyTorch's fused flash kernel needs equal q/k/v head widths: the narrower projections get zero
        # output rows (exact zeros in q k^T, or zero v columns sliced off afterwards). Elsewhere (the meta device used
        # for MAC counting, which then sees the official matmul shapes; CUDA) SDPA takes the unequal widths as they are.
        if x.device.type == "cpu":
            dq = dv_pad = max(dq, dv)
        else:
            dv_pad = dv
        wq, wk = (_pad_heads(lin.weight, h, dq) for lin in (self.to_q, self.to_k))
        wv = _pad_heads(self.to_v.weight, h, dv_pad)
        if y is None:  # one GEMM for q, k and v
            q, k, v = F.linear(x, torch.cat([wq, wk, wv])).split([h * dq, h * dq, h * dv_pad], dim=-1)
        else:
            q = F.linear(x, wq)
            k, v = F.linear(y, torch.cat([wk, wv])).split([h * dq, h * dv_pad], dim=-1)
        q, k, v = (rearrange(t, "n l (h d) -> n h l d", h=h) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        if dv_pad != dv:
            out = out[..., :dv]
        return rearrange(out, "n h l d -> n l (h d)")

    def _explicit(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The official form: separate projections, explicit softmax(q k^T * scale) v."""
        q = self.to_q(x)
        k, v = (self.to_k(x), self.to_v(x)) if y is None else (self.to_k(y), self.to_v(y))
        q, k, v = (rearrange(t, "n l (h d) -> n h l d", h=self.heads) for t in (q, k, v))
        out = hpi_attention(q, k, v, self.scale, use_sdpa=False)
        return rearrange(out, "n h l d -> n l (h d)")


def _pad_heads(weight: torch.Tensor, heads: int, d: int) -> torch.Tensor:
    """Linear weight (heads*dh, C) -> (heads*d, C) with zero rows appended inside every head (d >= dh)."""
    dh = weight.shape[0] // heads
    if dh == d:
        return weight
    return F.pad(weight.view(heads, dh, -1), (0, 0, 0, d - dh)).reshape(heads * d, -1)


class HPIFFN(nn.Module):
    """Token FFN (N, L, C) -> (N, L, C): ``fc1`` (C -> hidden, bias), exact GELU, ``fc2`` (hidden -> C, bias)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PreNorm(nn.Module):
    """``fn(LayerNorm(x), ...)`` with LayerNorm eps 1e-5, affine (parameters ``norm``, ``fn`` as the official code)."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor | None) -> torch.Tensor:
        return self.fn(self.norm(x), **kwargs)


def _residual(x: torch.Tensor, update: torch.Tensor, inplace: bool) -> torch.Tensor:
    # In-place only when allowed by the caller (x is a fresh tensor it owns) and no autograd graph is recorded.
    if inplace and not (torch.is_grad_enabled() and (x.requires_grad or update.requires_grad)):
        return x.add_(update)
    return x + update


class HPILayer(nn.ModuleList):
    """One pre-LN transformer layer on tokens (N, L, C) -> (N, L, C); entries ``0`` = PreNorm(attention),
    ``1`` = PreNorm(FFN) as an official ``blocks.i.layers.j``.

    ``x = x + Attn(LN(x), y)`` (``y`` None: self-attention, IPSA; else cross-attention to raw partner tokens, GPA),
    then ``x = x + FFN(LN(x))``.
    """

    def __init__(self, dim: int, qk_dim: int, mlp_dim: int, heads: int = 1) -> None:
        super().__init__([PreNorm(dim, HPIAttention(dim, qk_dim, heads)), PreNorm(dim, HPIFFN(dim, mlp_dim))])

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, y: torch.Tensor | None = None, inplace: bool = False
    ) -> torch.Tensor:
        """``inplace=True`` lets inference (no autograd) add the residuals into ``x`` itself."""
        attn, ff = self[0], self[1]
        x = _residual(x, attn(x, y=y), inplace)
        return _residual(x, ff(x), inplace)


class PatchMatch(nn.Module):
    """GPA patch matching (official ``Match``): one partner patch per patch among the n patches of the same image.

    tokens (B*n, L, C) -> partner tokens (B*n, L, C). Descriptor = mean over the patch's pixels, LayerNorm (the only
    parameters, ``norm``); similarity S = (q q^T) * C**-0.5 - 100 I (soft self-exclusion). Eval: partner = argmax_j S
    (first index on ties). Training: hard Gumbel-softmax (tau 1, straight-through) over j, then the one-hot mix.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.norm = nn.LayerNorm(dim)

    def similarity(self, tokens: torch.Tensor, n: int) -> torch.Tensor:
        """(B*n, L, C) -> S (B, n, n)."""
        bn, length, c = tokens.shape
        q = self.norm(tokens.reshape(bn // n, n, length, c).mean(dim=2))
        attn = torch.matmul(q, q.transpose(-1, -2)) * self.scale
        return attn - 100 * torch.eye(n, dtype=attn.dtype, device=attn.device)

    @torch.no_grad()
    def partners(self, tokens: torch.Tensor, n: int) -> torch.Tensor:
        """Eval-mode partner index per patch, (B, n) int64 in 0..n-1 (within each image)."""
        return self.similarity(tokens, n).argmax(dim=-1)

    def forward(self, tokens: torch.Tensor, n: int) -> torch.Tensor:
        bn, length, c = tokens.shape
        b = bn // n
        attn = self.similarity(tokens, n)
        if self.training:
            hard = F.gumbel_softmax(attn, tau=1.0, hard=True, dim=-1)  # (B, n, n)
            return torch.matmul(hard, tokens.reshape(b, n, length * c)).view(bn, length, c)
        idx = attn.argmax(dim=-1) + torch.arange(b, device=tokens.device)[:, None] * n
        return tokens.index_select(0, idx.flatten())


# ----------------------------------------------------------------------------------------------------------------
# Registered blocks
# ----------------------------------------------------------------------------------------------------------------


def _check_layer_args(dim: int, qk_dim: int, mlp_dim: int, heads: int, patch_size: int) -> None:
    _check_patch_size(patch_size)
    for name, value in (("dim", dim), ("qk_dim", qk_dim), ("mlp_dim", mlp_dim), ("heads", heads)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if qk_dim % heads or dim % heads:
        raise ValueError(f"dim ({dim}) and qk_dim ({qk_dim}) must be divisible by heads ({heads})")


class _PatchBlock(nn.Module):
    """Shared constructor of the CPD-based blocks (uniform signature, as timm's blocks): checks the arguments, sets
    ``out_channels``, ``patch_size``, ``exact_average``, then ``_build`` adds the block's submodules."""

    def __init__(
        self,
        dim: PositiveInt,
        patch_size: PositiveInt,
        qk_dim: PositiveInt = 32,
        mlp_dim: PositiveInt = 100,
        heads: PositiveInt = 1,
        exact_average: bool = False,
    ) -> None:
        super().__init__()
        _check_layer_args(dim, qk_dim, mlp_dim, heads, patch_size)
        self.out_channels = dim
        self.patch_size, self.exact_average = patch_size, exact_average
        self._build(dim, qk_dim, mlp_dim, heads)

    def _build(self, dim: int, qk_dim: int, mlp_dim: int, heads: int) -> None:
        raise NotImplementedError


@register_block("gpa", in_channels="dim")
class GPA(_PatchBlock):
    """Global Pixel Access (HPINet), (B, C, H, W) -> (B, C, H, W); H, W >= patch_size.

    CPD into P x P patches; each patch picks one partner patch of the same image (:class:`PatchMatch`: pooled
    descriptor, LayerNorm, similarity with self-exclusion, argmax in eval / hard Gumbel-softmax in training); then a
    pre-LN layer ``T += Attn(LN(T), partner)``, ``T += FFN(LN(T))`` (:class:`HPILayer`); patch aggregation. The output
    includes the identity path. Submodules: ``match`` (official ``cross_match.i``), ``layer`` (official
    ``blocks.i.layers.0``).

    Args:
        dim: channels C. patch_size: P (pixels, >= 3). qk_dim: query/key width (default 32, HPINet-M).
        mlp_dim: FFN hidden width (default 100, HPINet-M). heads: attention heads (HPINet uses 1).
        exact_average: true overlap averaging instead of the official 3/4-weight quirk (see ``cpd``).
    """

    def _build(self, dim: int, qk_dim: int, mlp_dim: int, heads: int) -> None:
        self.match = PatchMatch(dim)
        self.layer = HPILayer(dim, qk_dim, mlp_dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, geo = cpd_divide(x, self.patch_size, self.exact_average)
        tokens = self.layer(tokens, self.match(tokens, geo.n_patches), inplace=True)
        return cpd_merge(tokens, geo)


@register_block("ipsa", in_channels="dim")
class IPSA(_PatchBlock):
    """Intra-Patch Self-Attention (HPINet), (B, C, H, W) -> (B, C, H, W); H, W >= patch_size.

    CPD into P x P patches, one pre-LN layer per patch ``T += Attn(LN(T))`` (single head by default, Q/K reduced to
    ``qk_dim``, no output projection) and ``T += FFN(LN(T))``, then patch aggregation (output includes the identity
    path). Submodule ``layer`` (official ``blocks.i.layers.j`` for j = 1, 2). Arguments as :class:`GPA`.
    """

    def _build(self, dim: int, qk_dim: int, mlp_dim: int, heads: int) -> None:
        self.layer = HPILayer(dim, qk_dim, mlp_dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, geo = cpd_divide(x, self.patch_size, self.exact_average)
        return cpd_merge(self.layer(tokens, inplace=True), geo)


@register_block("hpi_block", in_channels="dim")
class HPIBlock(_PatchBlock):
    """One HPINet body stage, (B, C, H, W) -> (B, C, H, W); needs H, W >= patch_size (else ``ValueError``).

    ``x + conv3x3(merge(IPSA(IPSA(GPA(CPD(x))))))``: CPD into P x P patches (step P - 2), GPA (patch matching +
    cross-attention to the partner + FFN), two IPSA layers, patch aggregation (official overlap weighting by default,
    ``exact_average=True`` for true averaging), 3x3 conv (C -> C, bias), residual. Batch > 1: partners are matched
    within each image (batch 1 equals the official output).

    Submodules keep the official sub-structure, so official keys of block i map by regex renames:

    - ``layers.j.0.norm.*``, ``layers.j.0.fn.to_{q,k,v}.weight``, ``layers.j.1.norm.*``, ``layers.j.1.fn.fc{1,2}.*``
      <- ``blocks.i.layers.j...`` (rename ``blocks\\.(\\d+)\\.layers\\.(.*)`` -> ``body.\\1.layers.\\2``);
    - ``match.norm.{weight,bias}`` <- ``cross_match.i.norm.*``
      (``cross_match\\.(\\d+)\\.(.*)`` -> ``body.\\1.match.\\2``);
    - ``conv.{weight,bias}`` <- ``mid_convs.i.*`` (``mid_convs\\.(\\d+)\\.(.*)`` -> ``body.\\1.conv.\\2``).

    ``layers.0`` is the GPA layer, ``layers.1`` and ``layers.2`` the IPSA layers. Parameters per block:
    3 (4C + C (2 qk + C) + 2 C mlp + mlp + C) + 2C + 9C^2 + C (HPINet-M: 54,900 + 112 + 28,280 = 83,292).

    Args:
        dim: channels C. patch_size: CPD patch size P (pixels, >= 3). qk_dim: query/key width (S 24, M 32, L 36).
        mlp_dim: FFN hidden width (S 72, M 100, L 128). heads: attention heads (HPINet uses 1).
        exact_average: true overlap averaging instead of the official 3/4-weight quirk.
    """

    def _build(self, dim: int, qk_dim: int, mlp_dim: int, heads: int) -> None:
        self.layers = nn.ModuleList([HPILayer(dim, qk_dim, mlp_dim, heads) for _ in range(3)])
        self.match = PatchMatch(dim)
        self.conv = Conv(in_channels=dim, out_channels=dim, kernel_size=3)

    @torch.no_grad()
    def partners(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode GPA partner index of every patch for input x (B, C, H, W): (B, n) int64, row-major windows."""
        tokens, geo = cpd_divide(x, self.patch_size, self.exact_average)
        return self.match.partners(tokens, geo.n_patches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, geo = cpd_divide(x, self.patch_size, self.exact_average)
        tokens = self.layers[0](tokens, self.match(tokens, geo.n_patches), inplace=True)
        tokens = self.layers[1](tokens, inplace=True)
        tokens = self.layers[2](tokens, inplace=True)
        return x + self.conv(cpd_merge(tokens, geo))
