"""MGA's three training steps (Hu et al., ECCV 2022, section 3.5) for any mask-guided model.

The model is one from a spec with ``mask_guided:`` (its :class:`~srblocks.blocks.mga.MaskGuided` is ``model.mga``) or
a ``MaskGuided`` itself. The same module goes through the three steps; only its ``mode`` and the trainable parts
change:

1. :func:`train_d_net` - **D-Net**: Base-Net + Refine-Net run densely (``mode="dense"``), L1 on the SR output. This is
   :func:`srblocks.train.train` unchanged (its recipe, checkpoints, validation, EMA), with the MP module frozen.
2. :func:`train_all_net` - **All-Net**, initialised from step 1: the Refine-Net runs on *all* cropped patches
   (``mode="all"``) so it learns to work on small windows. Loss of the official ``train_all.py``:
   ``refine_weight * L1(SR, HR) + coarse_weight * L1(coarse, HR)`` (10 and 1), which also trains the Base-Net's
   own upsampler (the dense D-Net output never uses it). MP module frozen.
3. :func:`train_mask_predictor` - **MP module** only, Base-Net and Refine-Net frozen (and in eval mode): L1 between
   the predicted error mask and the "ground truth" of the official ``train_mask.py``
   (:func:`~srblocks.blocks.mga.error_mask_target`: Y of |All-Net output - coarse image|, min-max normalised,
   averaged per p*s x p*s HR patch, normalised again), times ``mask_weight`` (10). Afterwards the model is in
   ``mode="mask"``, the accelerated -M network.

Steps 2 and 3 need losses that :func:`srblocks.train.train` cannot express (it trains ``L1(model(lr), hr)`` only), so
they run a small loop with the same ingredients: :class:`srblocks.data.TrainPatchDataset` (same patches for a given
seed), Adam, :func:`srblocks.train.lr_at` (linear warm-up + cosine), optional gradient clipping, a thread setting and
a loss history every ``log_every`` iterations. They take the same keyword options as :class:`srblocks.train.TrainConfig`
(``iterations``, ``batch_size``, ``lr_patch_size``, ``lr``, ``min_lr``, ``warmup_iterations``, ``betas``,
``grad_clip``, ``seed``, ``threads``, ``device``, ``augment``, ``log_every``, ``num_workers``; EMA, validation and
checkpoints are not offered there).

Paper settings (section 4.1), which :data:`PAPER_SETTINGS` lists: Adam with default betas, batch 32, LR patch 64,
600K iterations for steps 1 and 2 in three cosine periods of 200K (2K warm-up 4e-5 -> 4e-4, decay to 1e-7), 100K for
step 3. A single cosine period is used here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .blocks.mga import MaskGuided, error_mask_target
from .data import TrainPatchDataset
from .evaluate import _resolve_scale, inference_settings
from .train import TrainConfig, TrainingDiverged, TrainResult, lr_at, train

__all__ = [
    "PAPER_SETTINGS",
    "StepResult",
    "find_mask_guided",
    "train_d_net",
    "train_all_net",
    "train_mask_predictor",
]

#: The paper's training settings per step (one cosine period of the paper's three is used by these helpers).
PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    "d_net": {"iterations": 600_000, "batch_size": 32, "lr_patch_size": 64, "lr": 4e-4, "min_lr": 1e-7,
              "warmup_iterations": 2_000, "betas": (0.9, 0.999)},
    "all_net": {"iterations": 600_000, "batch_size": 32, "lr_patch_size": 64, "lr": 4e-4, "min_lr": 1e-7,
                "warmup_iterations": 2_000, "betas": (0.9, 0.999)},
    "mask": {"iterations": 100_000, "batch_size": 32, "lr_patch_size": 64, "lr": 4e-4, "min_lr": 1e-7,
             "warmup_iterations": 2_000, "betas": (0.9, 0.999)},
}

#: Defaults of these helpers where TrainConfig's differ from the paper (Adam's default betas, no EMA).
_DEFAULTS: dict[str, Any] = {"betas": (0.9, 0.999), "lr": 4e-4, "min_lr": 1e-7, "ema_decay": None}


@dataclass
class StepResult:
    """Outcome of :func:`train_all_net` / :func:`train_mask_predictor`.

    Attributes:
        step: ``"all_net"`` or ``"mask"``.
        iterations: iterations run.
        elapsed: wall seconds.
        history: ``{"iteration", "loss", "lr"}`` every ``log_every`` iterations (loss averaged over the window).
        losses: the loss of every iteration.
    """

    step: str
    iterations: int
    elapsed: float
    history: list[dict[str, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def mean_loss(self, first: bool, fraction: float = 0.2) -> float:
        """Mean loss over the first (or last) ``fraction`` of the iterations (at least one)."""
        n = max(1, int(len(self.losses) * fraction))
        return float(np.mean(self.losses[:n] if first else self.losses[-n:]))


def find_mask_guided(model: nn.Module) -> MaskGuided:
    """The :class:`MaskGuided` of a mask-guided model (``model.mga``, the model itself, or its only one)."""
    if isinstance(model, MaskGuided):
        return model
    found = [m for m in model.modules() if isinstance(m, MaskGuided)]
    if len(found) != 1:
        raise ValueError(f"expected a model with exactly one mask_guided block (a spec with mask_guided:), found "
                         f"{len(found)}")
    return found[0]


@contextlib.contextmanager
def _mode(mg: MaskGuided, mode: str) -> Iterator[None]:
    previous = mg.mode
    mg.mode = mode  # type: ignore[assignment]
    try:
        yield
    finally:
        mg.mode = previous


@contextlib.contextmanager
def _frozen(*modules: nn.Module | None) -> Iterator[None]:
    params = [p for m in modules if m is not None for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _config(options: dict[str, Any], config: TrainConfig | None) -> TrainConfig:
    merged = {**_DEFAULTS, **options} if config is None else options
    return dataclasses.replace(config, **merged) if config is not None else TrainConfig(**merged)


def train_d_net(
    model: nn.Module, data: object, *, val_data: object | None = None, config: TrainConfig | None = None, **options: Any
) -> TrainResult:
    """Step 1: train the decomposed network (dense Base + Refine) with :func:`srblocks.train.train`.

    ``options`` are :class:`~srblocks.train.TrainConfig` fields (defaults here: Adam betas (0.9, 0.999), lr 4e-4,
    min_lr 1e-7, no EMA; with ``ema_decay`` set, the averaged weights are copied into ``model`` at the end). The MP
    module is frozen; ``model``'s mode is restored afterwards. Returns the :class:`~srblocks.train.TrainResult`.
    """
    mg = find_mask_guided(model)
    cfg = _config(options, config)
    with _mode(mg, "dense"), _frozen(mg.mask):
        result = train(model, data, val_data=val_data, config=cfg)
    if result.model is not result.raw_model:
        model.load_state_dict(result.model.state_dict())
    return result


def _loop(
    model: nn.Module,
    data: object,
    cfg: TrainConfig,
    params: list[nn.Parameter],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    step: str,
) -> StepResult:
    settings = inference_settings(model)
    scale = _resolve_scale(settings.scale, cfg.scale)
    device = torch.device(cfg.device) if cfg.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not params:
        raise ValueError(f"{step}: nothing to train (no parameters)")
    torch.manual_seed(cfg.seed)
    model.to(device)
    dataset = TrainPatchDataset(data, scale, cfg.lr_patch_size, length=cfg.iterations * cfg.batch_size,
                                augment=cfg.augment, seed=cfg.seed, value_range=settings.input_range)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                        drop_last=True, pin_memory=device.type == "cuda")
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    previous_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    result = StepResult(step, 0, 0.0)
    window: list[float] = []
    start = time.perf_counter()
    try:
        for it, (lr_batch, hr_batch) in enumerate(loader):
            lr_value = lr_at(cfg, it)
            for group in optimizer.param_groups:
                group["lr"] = lr_value
            loss = loss_fn(lr_batch.to(device), hr_batch.to(device))
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDiverged(f"{step}: the loss became {value} at iteration {it + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            result.losses.append(value)
            window.append(value)
            result.iterations = it + 1
            if result.iterations % cfg.log_every == 0 or result.iterations == cfg.iterations:
                result.history.append({"iteration": result.iterations, "loss": float(np.mean(window)), "lr": lr_value})
                window.clear()
            if result.iterations >= cfg.iterations:
                break
    finally:
        torch.set_num_threads(previous_threads)
        result.elapsed = time.perf_counter() - start
    return result


def train_all_net(
    model: nn.Module,
    data: object,
    *,
    refine_weight: float = 10.0,
    coarse_weight: float = 1.0,
    config: TrainConfig | None = None,
    **options: Any,
) -> StepResult:
    """Step 2: train the All-Net (Refine-Net on every cropped patch) from the D-Net weights.

    Loss ``refine_weight * L1(SR, HR) + coarse_weight * L1(coarse, HR)`` (official ``train_all.py``: 10 and 1).
    Base-Net and Refine-Net train, the MP module is frozen. ``options``: TrainConfig fields (see module docstring).
    The model is left in train mode with its previous ``mode``.
    """
    mg = find_mask_guided(model)
    cfg = _config(options, config)

    def loss_fn(lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        out = mg.run(lr, mode="all")
        return refine_weight * F.l1_loss(out.sr, hr) + coarse_weight * F.l1_loss(out.coarse, hr)

    model.train()
    with _frozen(mg.mask):
        params = [p for p in model.parameters() if p.requires_grad]
        return _loop(model, data, cfg, params, loss_fn, "all_net")


def train_mask_predictor(
    model: nn.Module,
    data: object,
    *,
    mask_weight: float = 10.0,
    config: TrainConfig | None = None,
    **options: Any,
) -> StepResult:
    """Step 3: train only the MP module against the coarse-vs-All-Net error target; Base and Refine frozen.

    Per batch: the All-Net pass (``mode="all"``) gives the coarse image, the refined image and the predicted mask
    (only the MP module records gradients); the target is :func:`error_mask_target` (pool size p*s, right for every
    scale); loss ``mask_weight * L1(mask, target)`` (official ``train_mask.py``: 10). Base/Refine stay in eval mode
    during the step. Afterwards the model's mode is ``"mask"`` (the -M network).
    """
    mg = find_mask_guided(model)
    if mg.mask is None:
        raise ValueError("this network has no MP module (mask_predictor: false, a -D spec); build the -M spec")
    cfg = _config(options, config)

    def loss_fn(lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        out = mg.run(lr, mode="all")
        assert out.mask is not None
        target = error_mask_target(out.coarse.detach(), out.sr.detach(), mg.patch_size, out.scale)
        return mask_weight * F.l1_loss(out.mask, target)

    model.train()
    mg.base.eval()
    mg.refine.eval()
    with _frozen(mg.base, mg.refine):
        result = _loop(model, data, cfg, list(mg.mask.parameters()), loss_fn, "mask")
    mg.mode = "mask"
    return result
