"""A small, honest trainer for SR models: L1 (+ optional FFT) loss, Adam, cosine schedule with warm-up, gradient
clipping, EMA of the weights, periodic validation PSNR, resumable checkpoints, a seed, and a callback hook.

Recipe (defaults follow SAFMN's configs where the paper states them, ``docs/reference/safmn.md``):

* data: random aligned LR/HR patches with flips/transposes (:class:`srblocks.data.TrainPatchDataset`); sample ``i``
  of the run (iteration ``i // batch_size``) depends only on ``(seed, i)``, so runs and resumed runs see the same
  batches whatever the number of DataLoader workers. Values in the model's ``input_range`` (from the spec).
* loss: mean L1 + ``fft_loss_weight`` x mean L1 between the stacked real/imaginary parts of ``torch.fft.rfft2`` of
  output and target (SAFMN / ShuffleMixer ``FFTLoss``; SAFMN uses weight 0.05). Off by default.
* Adam, betas (0.9, 0.99) (SAFMN), learning rate ``lr`` with a linear warm-up over ``warmup_iterations`` and a
  cosine decay to ``min_lr`` at the end of the run. With a ``time_budget`` the cosine progress is the larger of the
  iteration and elapsed-time fractions, so a time-limited run still anneals.
* gradient clipping of the global L2 norm to ``grad_clip`` (None: off).
* EMA of parameters and buffers with decay ``min(ema_decay, (1 + t) / (10 + t))`` at update t (the usual warm-up,
  so that short runs are not dominated by the initial weights). Validation, ``TrainResult.model`` and the saved
  ``model.safetensors`` use the EMA weights when EMA is on.
* validation every ``val_every`` iterations and at the end: full images of ``val_data``, the spec's PSNR/SSIM
  protocol (:func:`srblocks.evaluate.evaluate`).
* callback: called with a :class:`ValidationReport` after each validation. Return ``True`` (or raise
  :class:`StopTraining`) to stop gracefully (a checkpoint is written); any other exception, e.g.
  ``optuna.TrialPruned``, propagates unchanged. The Optuna pattern::

      def prune(report):
          trial.report(report.psnr, report.iteration)
          if trial.should_prune():
              raise optuna.TrialPruned()

* stop: after ``iterations`` iterations, or once ``time_budget`` seconds of wall time (training + validation, summed
  over resumed sessions) have passed, or by the callback.
* checkpoints (``out_dir``): ``checkpoint.pth`` every ``checkpoint_every`` iterations and at every graceful stop,
  written atomically, read back with ``torch.load(weights_only=True)``. It holds ``params`` and ``params_ema``
  (BasicSR layout, so :func:`srblocks.load_weights` loads the EMA weights from it directly), the optimizer state,
  the iteration, elapsed time, torch RNG states and the config; ``resume=True`` continues from it bit-exactly
  (same weights as an uninterrupted run, tested). ``model.safetensors`` holds the final weights and
  ``log.jsonl`` one JSON line per logged iteration and per validation.
* determinism: with a seed, the same data and the same device/thread count, two runs give identical weights
  (tested on CPU). On CUDA, cuDNN is put in deterministic mode during training (restored afterwards). A time
  budget makes the stopping point (and the schedule) wall-clock dependent.
* device: CUDA when available, else CPU (``device=`` overrides). The model is moved to it. ``threads`` sets the
  CPU thread count during training (restored afterwards); on a CPU shared with other jobs, 1 thread can be many
  times faster than several threads competing for cores.
* memory format: the model trains in ``memory_format`` (default ``"contiguous"``, the layout every stored protocol
  result was trained in; ``"channels_last"``; None keeps the model's) and is handed back in the layout it came in.
  Layouts differ only in float rounding, which a run's trajectory amplifies, so the layout is part of a run's
  reproducibility. channels_last trains faster on CPU (SAFMN x4, batch 16 of 32x32 patches, 2 threads, 6
  interleaved steps: 0.89x [0.85, 0.94] the step time), and is not the default only for that reproducibility.
* mixed precision: ``amp="bf16"`` or ``"fp16"`` (CUDA) autocasts the forward pass (:mod:`srblocks.mixed_precision`);
  default None, plain float32.
* several processes: started by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; ``distributed=False``
  ignores them), the model runs in DistributedDataParallel (NCCL on ``cuda:LOCAL_RANK``, gloo on CPU;
  :mod:`srblocks.distributed`). ``batch_size`` is the global batch: rank r of W trains the r-th slice of B / W
  samples of each iteration's batch, so the ranks together train exactly the single-process samples, and the
  averaged gradient is the single-process gradient up to float summation order (BatchNorm statistics are per rank).
  Every rank loads a checkpoint to resume (on several nodes ``out_dir`` must be a shared file system; the ranks
  check they resume from the same iteration); only rank 0 validates, runs the callback, logs, shows progress and
  writes files, and only its :class:`TrainResult` holds the validations. The logged loss is the mean over ranks.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .build import model_memory_format, set_memory_format
from .data import TrainPatchDataset
from .distributed import DistributedError, RankShard, world_from_env
from .evaluate import _resolve_scale, _samples, evaluate, inference_settings
from .mixed_precision import check_amp, precision_for

if TYPE_CHECKING:
    from .distributed.group import ProcessGroup

__all__ = [
    "TrainConfig",
    "TrainResult",
    "ValidationReport",
    "StopTraining",
    "TrainingDiverged",
    "train",
    "fft_loss",
    "lr_at",
    "CHECKPOINT_NAME",
    "WEIGHTS_NAME",
    "LOG_NAME",
]

CHECKPOINT_NAME = "checkpoint.pth"
WEIGHTS_NAME = "model.safetensors"
LOG_NAME = "log.jsonl"


class StopTraining(Exception):
    """Raise from a callback to end training gracefully (the result's ``stop_reason`` is ``"callback"``)."""


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """Training options (see the module docstring). All fields can also be passed to :func:`train` as keywords."""

    iterations: int = 1000
    time_budget: float | None = None
    batch_size: int = 16
    lr_patch_size: int = 48
    lr: float = 1e-3
    min_lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_iterations: int = 0
    grad_clip: float | None = None
    fft_loss_weight: float = 0.0
    ema_decay: float | None = 0.999
    val_every: int = 500
    checkpoint_every: int | None = None
    log_every: int = 10
    augment: bool = True
    seed: int = 0
    scale: int | None = None
    device: str | None = None
    num_workers: int = 0
    threads: int | None = None
    progress: bool = True
    amp: str | None = None
    distributed: bool | None = None
    memory_format: str | None = "contiguous"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        check_amp(self.amp)
        if self.memory_format not in (None, "contiguous", "channels_last"):
            raise ValueError(f"memory_format must be 'contiguous', 'channels_last' or None (keep the model's), "
                             f"got {self.memory_format!r}")
        if self.distributed not in (None, True, False):
            raise ValueError(f"distributed must be None (from the torchrun environment), True or False, "
                             f"got {self.distributed!r}")
        positive_ints = ("iterations", "batch_size", "lr_patch_size", "val_every", "log_every")
        for name in positive_ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive integer or None, got {self.checkpoint_every!r}")
        if not (isinstance(self.warmup_iterations, (int, np.integer)) and 0 <= self.warmup_iterations):
            raise ValueError(f"warmup_iterations must be an integer >= 0, got {self.warmup_iterations!r}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be a positive number of seconds or None, got {self.time_budget!r}")
        if not self.lr > 0 or not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if self.fft_loss_weight < 0:
            raise ValueError(f"fft_loss_weight must be >= 0, got {self.fft_loss_weight!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


@dataclass(frozen=True)
class ValidationReport:
    """What the callback receives after each validation (PSNR/SSIM in the spec's convention, on ``val_data``)."""

    iteration: int
    psnr: float
    ssim: float | None
    loss: float
    lr: float
    elapsed: float
    per_image: dict[str, float]


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        model: the weights to use: the EMA model when EMA is on, else the trained model (in eval mode).
        raw_model: the optimised (non-averaged) model (the module passed to :func:`train`).
        iterations: iterations completed in total (including resumed ones).
        stop_reason: ``"iterations"``, ``"time_budget"`` or ``"callback"``.
        elapsed: wall seconds spent (summed over resumed sessions).
        history: ``{"iteration", "loss", "lr"}`` every ``log_every`` iterations (loss averaged over the window).
        validations: the :class:`ValidationReport` of every validation.
        out_dir: the run folder, when one was given.
    """

    model: nn.Module
    raw_model: nn.Module
    iterations: int
    stop_reason: str
    elapsed: float
    history: list[dict[str, float]] = field(default_factory=list)
    validations: list[ValidationReport] = field(default_factory=list)
    out_dir: Path | None = None

    @property
    def final_psnr(self) -> float | None:
        return self.validations[-1].psnr if self.validations else None

    @property
    def best_psnr(self) -> float | None:
        return max(v.psnr for v in self.validations) if self.validations else None


def fft_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the real/imaginary parts of ``rfft2`` of two (B, C, H, W) tensors (SAFMN FFTLoss)."""
    a = torch.view_as_real(torch.fft.rfft2(pred.float()))
    b = torch.view_as_real(torch.fft.rfft2(target.float()))
    return F.l1_loss(a, b)


def lr_at(config: TrainConfig, iteration: int, time_fraction: float = 0.0) -> float:
    """Learning rate of update ``iteration`` (0-based): linear warm-up, then cosine from ``lr`` to ``min_lr``."""
    c = config
    if iteration < c.warmup_iterations:
        return c.lr * (iteration + 1) / c.warmup_iterations
    span = max(1, c.iterations - c.warmup_iterations)
    progress = min(1.0, max((iteration - c.warmup_iterations) / span, time_fraction))
    return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _default_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    ema_params = [p for p in ema.parameters()]
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`srblocks.fileio.atomic_write` (temporary file, fsync, rename)."""
    from .fileio import atomic_write

    with atomic_write(path) as f:
        torch.save(obj, f)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


_REPRODUCIBILITY_FIELDS = ("batch_size", "lr_patch_size", "lr", "min_lr", "betas", "weight_decay", "warmup_iterations",
                           "grad_clip", "fft_loss_weight", "ema_decay", "augment", "seed", "iterations", "scale",
                           "amp", "memory_format")


def train(
    model: nn.Module,
    data: object,
    *,
    val_data: object | None = None,
    config: TrainConfig | None = None,
    callback: Callable[[ValidationReport], bool | None] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool | str | os.PathLike[str] = False,
    **options: Any,
) -> TrainResult:
    """Train ``model`` in place on random patches of ``data`` (recipe in the module docstring).

    Args:
        model: a model from :func:`srblocks.build_model` (its spec gives the scale and input range) or any SR module
            (pass ``scale=``).
        data: training images: a folder (EDSR/BasicSR paired layouts or HR only, LR generated with MATLAB bicubic),
            a list of folders or in-memory HR images (anything :class:`srblocks.data.TrainPatchDataset` accepts).
        val_data: validation set (anything :func:`srblocks.evaluate.evaluate` accepts); None: no validation.
        config: a :class:`TrainConfig`; keyword ``options`` override its fields (``iterations=300, lr=5e-4``).
        callback: called with each :class:`ValidationReport`; return True or raise :class:`StopTraining` to stop.
        out_dir: run folder for ``checkpoint.pth``, ``model.safetensors`` and ``log.jsonl`` (created).
        resume: True to continue from ``out_dir/checkpoint.pth`` (error if missing), or a checkpoint path.

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainingDiverged: the loss became NaN/inf.
        ValueError: bad options, or images too small for the patch size.
        srblocks.distributed.DistributedError: under torchrun, a batch that does not split over the ranks, or ranks
            resuming from different checkpoints.
    """
    cfg = dataclasses.replace(config, **options) if config is not None else TrainConfig(**options)
    world = world_from_env() if cfg.distributed is not False else None
    if cfg.distributed and world is None:
        raise DistributedError("distributed=True, but RANK and WORLD_SIZE are not set: start the run with torchrun")
    layout = model_memory_format(model)
    try:
        if world is None:
            result = _train(model, data, val_data, cfg, callback, out_dir, resume, None)
        else:
            from .distributed.group import ProcessGroup

            RankShard(0, 1, cfg.batch_size, world.rank, world.size)  # the batch must split over the ranks: fail early
            result = _train(model, data, val_data, cfg, callback, out_dir, resume,
                            ProcessGroup.start(world, cfg.device))
    finally:
        if cfg.memory_format is not None:  # the model goes back in the layout it came in, also after an error
            set_memory_format(model, layout)
    if cfg.memory_format is not None:
        set_memory_format(result.model, layout)
    return result


def _train(model: nn.Module, data: object, val_data: object | None, cfg: TrainConfig,
           callback: Callable[[ValidationReport], bool | None] | None, out_dir: str | os.PathLike[str] | None,
           resume: bool | str | os.PathLike[str], ranks: "ProcessGroup | None") -> TrainResult:
    """The run of :func:`train`; ``ranks`` is the :class:`srblocks.distributed.ProcessGroup` or None."""
    settings = inference_settings(model)
    scale = _resolve_scale(settings.scale, cfg.scale)
    cfg = dataclasses.replace(cfg, scale=scale)
    device = ranks.device if ranks is not None else _default_device(cfg.device)
    main = ranks is None or ranks.world.is_main
    precision = precision_for(cfg.amp, device)
    scaler = precision.scaler
    run_dir = Path(out_dir) if out_dir is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_every = cfg.checkpoint_every or cfg.val_every

    # -- state -------------------------------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    if cfg.memory_format is not None:
        set_memory_format(model, cfg.memory_format)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.Adam(trainable, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema: nn.Module | None = None
    if cfg.ema_decay is not None:
        ema = copy.deepcopy(model).eval().requires_grad_(False)
    start, elapsed_before, ema_updates = 0, 0.0, 0
    history: list[dict[str, float]] = []
    validations: list[ValidationReport] = []

    ckpt_path: Path | None = None
    if resume:
        ckpt_path = Path(resume) if not isinstance(resume, bool) else (run_dir / CHECKPOINT_NAME if run_dir else None)
        if ckpt_path is None:
            raise ValueError("resume=True needs out_dir (or pass the checkpoint path as resume=)")
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"no checkpoint to resume from at {str(ckpt_path)!r}")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["params"])
        if ema is not None:
            if "params_ema" not in state:
                raise ValueError(f"{ckpt_path} has no EMA weights but ema_decay={cfg.ema_decay}")
            ema.load_state_dict(state["params_ema"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        start = int(state["iteration"])
        elapsed_before = float(state["elapsed"])
        ema_updates = int(state.get("ema_updates", start))
        _set_rng_state(state["rng"])
        saved = json.loads(state["config"])
        changed = [k for k in _REPRODUCIBILITY_FIELDS if k in saved and saved[k] != cfg.to_dict()[k]]
        if changed:
            warnings.warn(f"resuming with changed settings {changed}: the run will differ from an uninterrupted one",
                          stacklevel=3)  # the caller of train()
        history = [dict(h) for h in json.loads(state.get("history", "[]"))]
        validations = [ValidationReport(**v) for v in json.loads(state.get("validations", "[]"))]

    if ranks is not None:
        ranks.check_same(start, "the iteration to resume from (with several nodes, -o RUN_DIR must be on a file "
                                "system every node shares)")
    dataset = TrainPatchDataset(data, scale, cfg.lr_patch_size, length=cfg.iterations * cfg.batch_size,
                                augment=cfg.augment, seed=cfg.seed, value_range=settings.input_range)
    val_samples = list(_samples(val_data, scale)[0]) if val_data is not None and main else None  # decoded once
    if ranks is None:
        loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=range(start * cfg.batch_size, len(dataset)),
                            num_workers=cfg.num_workers, pin_memory=device.type == "cuda", drop_last=True)
        forward_model = model
    else:  # this rank's slice of every global batch; gradients averaged by DDP
        shard = RankShard(start, cfg.iterations, cfg.batch_size, ranks.world.rank, ranks.world.size)
        loader = DataLoader(dataset, batch_size=shard.local_batch, sampler=shard, num_workers=cfg.num_workers,
                            pin_memory=device.type == "cuda", drop_last=True)
        forward_model = ranks.wrap(model)

    eval_model = ema if ema is not None else model
    log_file = (run_dir / LOG_NAME).open("a") if run_dir is not None and main else None

    def log(entry: dict[str, Any]) -> None:
        if log_file is not None:
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()

    def save_checkpoint(iteration: int, elapsed: float) -> None:
        if run_dir is None or not main:
            return
        state = {
            "params": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "iteration": iteration,
            "elapsed": elapsed,
            "ema_updates": ema_updates,
            "rng": _rng_state(),
            "config": json.dumps(cfg.to_dict()),
            "history": json.dumps(history),
            "validations": json.dumps([dataclasses.asdict(v) for v in validations]),
        }
        if ema is not None:
            state["params_ema"] = {k: v.detach().cpu() for k, v in ema.state_dict().items()}
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        _atomic_save(state, run_dir / CHECKPOINT_NAME)

    def validate(iteration: int, loss: float, lr: float, elapsed: float) -> bool:
        """Run validation and the callback; True when the callback asks to stop."""
        if val_samples is None:
            return False
        r = evaluate(eval_model, val_samples, scale)
        report = ValidationReport(iteration, r.mean_psnr, r.mean_ssim, loss, lr, elapsed,
                                  {i.name: i.psnr for i in r.images})
        validations.append(report)
        log({"validation": dataclasses.asdict(report)})
        bar.set_postfix(loss=f"{loss:.4g}", psnr=f"{report.psnr:.2f}")
        if callback is None:
            return False
        try:
            return bool(callback(report))
        except StopTraining:
            return True

    # -- loop --------------------------------------------------------------------------------------------------
    from tqdm.auto import tqdm

    cudnn_flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    previous_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    t_start = time.perf_counter()
    iteration, stop_reason = start, "iterations"
    window: list[float] = []
    last_loss, lr = math.nan, lr_at(cfg, start)
    bar = tqdm(total=cfg.iterations, initial=start, desc="train", unit="it",
               disable=None if cfg.progress and main else True, dynamic_ncols=True)
    try:
        for lr_batch, hr_batch in loader if start < cfg.iterations else []:
            elapsed = elapsed_before + time.perf_counter() - t_start
            if ranks is not None and cfg.time_budget is not None:  # rank 0's clock: one schedule, one stop
                elapsed = ranks.from_main_value(elapsed)
            if cfg.time_budget is not None and elapsed >= cfg.time_budget:
                stop_reason = "time_budget"
                break
            lr = lr_at(cfg, iteration, elapsed / cfg.time_budget if cfg.time_budget else 0.0)
            for group in optimizer.param_groups:
                group["lr"] = lr
            lr_batch = lr_batch.to(device, non_blocking=True)
            hr_batch = hr_batch.to(device, non_blocking=True)
            with precision.autocast():
                sr = forward_model(lr_batch)
            sr = sr.float()  # the loss in float32 (a no-op without amp)
            loss = F.l1_loss(sr, hr_batch)
            if cfg.fft_loss_weight:
                loss = loss + cfg.fft_loss_weight * fft_loss(sr, hr_batch)
            value = float(loss.detach())
            if ranks is not None:
                value = ranks.mean(value)  # the global batch's loss; a NaN on any rank stops every rank
            if not math.isfinite(value):
                raise TrainingDiverged(f"the loss became {value} at iteration {iteration + 1} (lr {lr:.3g}); "
                                       "lower lr or enable grad_clip")
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            if ema is not None:
                ema_updates += 1
                _ema_update(ema, model, min(cfg.ema_decay, (1 + ema_updates) / (10 + ema_updates)))
            iteration += 1
            window.append(value)
            bar.update(1)
            if iteration % cfg.log_every == 0 or iteration == cfg.iterations:
                last_loss = float(np.mean(window))
                window.clear()
                entry = {"iteration": iteration, "loss": last_loss, "lr": lr}
                history.append(entry)
                log(entry)
                bar.set_postfix(loss=f"{last_loss:.4g}",
                                **({"psnr": f"{validations[-1].psnr:.2f}"} if validations else {}))
            stop = False
            if iteration % cfg.val_every == 0 or iteration == cfg.iterations:
                elapsed = elapsed_before + time.perf_counter() - t_start
                stop = validate(iteration, float(np.mean(window)) if window else last_loss, lr, elapsed)
                if ranks is not None:
                    stop = ranks.from_main(stop)  # rank 0 validated and ran the callback
            if stop:
                stop_reason = "callback"
                break
            if iteration % checkpoint_every == 0 and iteration < cfg.iterations:
                save_checkpoint(iteration, elapsed_before + time.perf_counter() - t_start)
            if iteration >= cfg.iterations:
                break
        if stop_reason == "time_budget" and (not validations or validations[-1].iteration != iteration):
            elapsed = elapsed_before + time.perf_counter() - t_start
            validate(iteration, float(np.mean(window)) if window else last_loss, lr, elapsed)
        elapsed = elapsed_before + time.perf_counter() - t_start
        save_checkpoint(iteration, elapsed)
        if run_dir is not None and main:
            from .weights import save_weights

            save_weights(eval_model, run_dir / WEIGHTS_NAME)
    finally:
        bar.close()
        torch.set_num_threads(previous_threads)
        if log_file is not None:
            log_file.close()
        if device.type == "cuda":
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_flags
    model.eval()
    return TrainResult(model=eval_model, raw_model=model, iterations=iteration, stop_reason=stop_reason,
                       elapsed=elapsed, history=history, validations=validations, out_dir=run_dir)
