"""Worker of tests/test_distributed.py, started once per rank by ``torchrun`` (2 CPU processes, gloo).

``python -m torch.distributed.run --nproc-per-node 2 tests/_ddp_worker.py OUT_DIR ITERATIONS`` trains the tiny
model three ways in one launch, every rank with the same arguments (as a user's ``torchrun`` would):

* ``OUT_DIR/full``: ITERATIONS iterations without a break;
* ``OUT_DIR/split``: stopped by rank 0's callback at the first validation (ITERATIONS // 2), then resumed to the
  end from the checkpoint (every rank loads it).

Each rank saves its final raw and EMA weights to ``OUT_DIR/rank{R}_{full|split}.pt`` and what its
:class:`TrainResult` holds to ``OUT_DIR/rank{R}.json``. The first ``train`` call creates the process group, the
others reuse it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import synthetic_images  # noqa: E402

import srblocks  # noqa: E402
from srblocks.train import train  # noqa: E402

#: the training options the test's single-process reference uses too
OPTIONS = dict(batch_size=4, lr_patch_size=12, lr=3e-3, warmup_iterations=2, grad_clip=0.5, fft_loss_weight=0.05,
               progress=False, threads=1, log_every=1, device="cpu")
DATA = synthetic_images(4, (40, 48), 0, noise=4)
VAL = synthetic_images(1, (24, 24), 7, noise=4)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """SAFMN with one block and 8 channels at x2 (no BatchNorm), initialised from ``seed``."""
    torch.manual_seed(seed)
    return srblocks.build_model("safmn", scale=2, n_blocks=1, dim=8)


def _weights(result) -> dict[str, torch.Tensor]:
    return {**{f"raw.{k}": v.detach().clone() for k, v in result.raw_model.state_dict().items()},
            **{f"ema.{k}": v.detach().clone() for k, v in result.model.state_dict().items()}}


def main(out: Path, iterations: int) -> None:
    rank = int(os.environ["RANK"])
    opts = dict(OPTIONS, iterations=iterations, val_every=iterations // 2)
    report: dict[str, object] = {"world_size": int(os.environ["WORLD_SIZE"])}
    full = train(tiny_model(), DATA, val_data=VAL, out_dir=out / "full", **opts)
    torch.save(_weights(full), out / f"rank{rank}_full.pt")
    report["full"] = {"iterations": full.iterations, "validations": [v.iteration for v in full.validations],
                      "history": full.history}

    def stop_first(report_: object) -> bool:
        return True

    first = train(tiny_model(), DATA, val_data=VAL, out_dir=out / "split", callback=stop_first, **opts)
    second = train(tiny_model(seed=99), DATA, val_data=VAL, out_dir=out / "split", resume=True, **opts)
    torch.save(_weights(second), out / f"rank{rank}_split.pt")
    report["split"] = {"first": [first.iterations, first.stop_reason], "second": [second.iterations,
                                                                                   second.stop_reason]}
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
