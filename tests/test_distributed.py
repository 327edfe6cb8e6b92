"""Training under torchrun: batch sharding, the torchrun environment, two gloo ranks against one process, resume
under DDP, ``srblocks train`` (recipe and ``--protocol``) under torchrun, and mixed precision on CPU.

The launches start ``python -m torch.distributed.run --nproc-per-node 2`` on 127.0.0.1 with a free port, 1 thread
per rank, tiny SAFMN (1 block, 8 channels, x2) and synthetic images.

Tolerance of DDP against one process: after 6 Adam iterations (warm-up, FFT loss, gradient clipping, EMA), the raw
and EMA weights (|w| <= ~1) differ by at most 3.0e-8 (measured on this CPU). The only difference is float32
summation order: the single process averages the L1/FFT loss over 4 samples in one reduction, DDP averages two
2-sample means with an all-reduce. The model has no BatchNorm, so nothing else depends on the split. The test
allows 1e-5 absolute (more than 300x the measured difference, still far below one learning-rate step, 3e-3).
Between the two ranks and between an uninterrupted and a resumed DDP run the weights are bit-identical.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from _ddp_worker import DATA, OPTIONS, VAL, tiny_model
from conftest import synthetic_images
from srblocks.cli import main
from srblocks.data import write_image
from srblocks.distributed import DistributedError, RankShard, World, is_main_process, world_from_env
from srblocks.mixed_precision import AmpError
from srblocks.protocols import ResultsStore, run_protocol
from srblocks.train import LOG_NAME, train

HERE = Path(__file__).resolve().parent
#: largest |DDP - single process| allowed on any weight (measured: 3.0e-8, see the module docstring)
DDP_ATOL = 1e-5
TORCHRUN_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc-per-node 2`` on localhost (gloo on CPU, 1 thread per rank); fails the test on error."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=os.pathsep.join([str(HERE), env.get(
        "PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S)
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


# -- sharding and the environment (no processes) -----------------------------------------------------------------


def test_rank_shards_together_are_exactly_the_single_process_batches():
    batch, world, start, iterations = 12, 3, 2, 7
    single = list(range(start * batch, iterations * batch))
    shards = [RankShard(start, iterations, batch, r, world) for r in range(world)]
    assert all(s.local_batch == 4 and len(s) == (iterations - start) * 4 for s in shards)
    for t in range(iterations - start):
        union = sorted(i for s in shards for i in list(s)[t * 4:(t + 1) * 4])
        assert union == single[t * batch:(t + 1) * batch]
    assert list(shards[1]) == [shards[1][k] for k in range(len(shards[1]))] == shards[1][:]
    assert shards[2][-1] == iterations * batch - 1 and list(RankShard(start, iterations, batch)) == single
    with pytest.raises(IndexError):
        shards[0][len(shards[0])]
    with pytest.raises(DistributedError, match="batch size 10 does not split over 3 processes"):
        RankShard(0, 5, 10, 0, 3)


def test_world_from_env_reads_torchrun_variables_and_rejects_bad_ones():
    assert world_from_env({}) is None and is_main_process({})
    assert world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    assert not is_main_process({"RANK": "3", "WORLD_SIZE": "4"}) and is_main_process({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(DistributedError, match="RANK='x' is not an integer"):
        world_from_env({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(DistributedError, match=r"RANK=2 is not in 0..WORLD_SIZE-1 \(WORLD_SIZE=2\)"):
        world_from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_a_batch_that_does_not_split_is_refused_before_any_process_group(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(DistributedError, match="batch size 4 does not split over 3 processes"):
        train(tiny_model(), DATA, iterations=2, **OPTIONS)
    # distributed=False ignores the environment: a plain run
    assert train(tiny_model(), DATA, iterations=1, val_every=1, distributed=False, **OPTIONS).iterations == 1
    monkeypatch.delenv("RANK")
    with pytest.raises(DistributedError, match="start the run with torchrun"):
        train(tiny_model(), DATA, iterations=1, distributed=True, **OPTIONS)


# -- two gloo ranks ----------------------------------------------------------------------------------------------


def _single_process_weights(iterations: int) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    r = train(tiny_model(), DATA, val_data=VAL, iterations=iterations, val_every=iterations // 2, **OPTIONS)
    weights = {**{f"raw.{k}": v for k, v in r.raw_model.state_dict().items()},
               **{f"ema.{k}": v for k, v in r.model.state_dict().items()}}
    return weights, r.history


def test_two_gloo_ranks_train_the_single_process_weights_and_resume_exactly(tmp_path):
    iterations = 6
    _torchrun(str(HERE / "_ddp_worker.py"), str(tmp_path), str(iterations), cwd=tmp_path)
    single, history = _single_process_weights(iterations)
    full = [torch.load(tmp_path / f"rank{r}_full.pt", weights_only=True) for r in (0, 1)]
    split = torch.load(tmp_path / "rank0_split.pt", weights_only=True)
    assert full[0].keys() == single.keys() == split.keys()
    for k in single:
        assert torch.equal(full[0][k], full[1][k]), f"ranks differ in {k}"
        assert torch.equal(full[0][k], split[k]), f"resumed DDP run differs from the uninterrupted one in {k}"
        diff = (full[0][k] - single[k]).abs().max().item()
        assert diff <= DDP_ATOL, f"{k}: DDP differs from one process by {diff:.3g} > {DDP_ATOL}"
    assert any(not torch.equal(full[0][k], tiny_model().state_dict()[k.split(".", 1)[1]]) for k in single)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["world_size"] == 2
    assert reports[0]["full"]["validations"] == [3, 6] and reports[1]["full"]["validations"] == []  # rank 0 only
    ddp_losses = [h["loss"] for h in reports[0]["full"]["history"]]
    assert ddp_losses == [h["loss"] for h in reports[1]["full"]["history"]]  # the mean over ranks, on every rank
    assert ddp_losses == pytest.approx([h["loss"] for h in history], abs=1e-6)
    assert reports[0]["split"] == {"first": [3, "callback"], "second": [6, "iterations"]}
    # one writer: every iteration and validation is logged once, in order, across the stop and the resume
    log = [json.loads(x) for x in (tmp_path / "split" / LOG_NAME).read_text().splitlines()]
    assert [e.get("iteration", e.get("validation", {}).get("iteration")) for e in log] == [1, 2, 3, 3, 4, 5, 6, 6]


def _images_dir(root: Path) -> Path:
    for i, (name, image) in enumerate(synthetic_images(6, (40, 48), seed=3, noise=4)):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        write_image(folder / f"{name}.png", image)
    return root


def test_train_cli_under_torchrun_recipe_and_protocol(tmp_path):
    data = _images_dir(tmp_path / "data")
    protocol = tmp_path / "tiny_x2.yaml"
    protocol.write_text(yaml.safe_dump({
        "name": "tiny_x2", "version": 1, "scale": 2, "seeds": [0],
        "data": {"val_count": 2, "split_salt": "test", "test_sets": []},
        "training": {"iterations": 4, "batch_size": 2, "lr_patch_size": 8, "lr": 3e-3}}))
    spec = ["safmn", "--set", "n_blocks=1", "--set", "dim=8"]
    done = _torchrun("-m", "srblocks", "train", *spec, "--protocol", str(protocol), "--data", str(data), "-o",
                     str(tmp_path / "proto"), "--device", "cpu", "--no-progress", cwd=tmp_path)
    assert done.stdout.count("recorded in") == 1, done.stdout  # rank 0 reports
    (record,) = ResultsStore(tmp_path / "proto" / "results.jsonl").records()
    assert record["world_size"] == 2 and record["iterations"] == 4
    single = run_protocol("safmn", protocol, data=data, progress=False, overrides={"n_blocks": 1, "dim": 8},
                          tests={}, device="cpu")
    assert single["key"] == record["key"] and "world_size" not in single
    assert record["val_psnr"] == pytest.approx(single["val_psnr"], abs=1e-3)  # rounded to 4 decimals in the record

    run = tmp_path / "recipe"
    recipe = ["-m", "srblocks", "train", *spec, "--scale", "2", "--data", str(data / "a"), "--iters", "4",
              "--batch-size", "2", "--patch-size", "8", "-o", str(run), "--device", "cpu", "--no-progress"]
    done = _torchrun(*recipe, cwd=tmp_path)
    assert done.stdout.count("4 iterations in") == 1, done.stdout
    assert (run / "model.safetensors").is_file()
    assert json.loads((run / "run.json").read_text())["config"]["batch_size"] == 2


# -- mixed precision ---------------------------------------------------------------------------------------------


def test_bf16_autocast_trains_on_cpu_near_float32_and_fp16_needs_cuda(tmp_path, capsys):
    f32 = train(tiny_model(), DATA, iterations=4, val_every=4, **OPTIONS)
    bf16 = train(tiny_model(), DATA, iterations=4, val_every=4, amp="bf16", out_dir=tmp_path / "bf16",
                 **OPTIONS)
    a, b = f32.raw_model.state_dict(), bf16.raw_model.state_dict()
    diffs = [(a[k] - b[k]).abs().max().item() for k in a]
    assert 0 < max(diffs) < 0.05  # bfloat16 rounding (8 bits of mantissa) changes the steps a little, not the run
    assert all(v.dtype == torch.float32 for v in b.values())  # weights stay float32
    assert json.loads(torch.load(tmp_path / "bf16" / "checkpoint.pth", weights_only=True)["config"])["amp"] == "bf16"
    with pytest.raises(AmpError, match="amp='fp16' needs a CUDA device"):
        train(tiny_model(), DATA, iterations=1, amp="fp16", **OPTIONS)
    with pytest.raises(AmpError, match="amp must be one of bf16, fp16 or None, got 'fp8'"):
        train(tiny_model(), DATA, iterations=1, amp="fp8", **OPTIONS)
    data = _images_dir(tmp_path / "data")
    argv = ["train", "safmn", "--set", "n_blocks=1", "--set", "dim=8", "--scale", "2", "--data", str(data), "--iters",
            "1", "--patch-size", "8", "-o", str(tmp_path / "r"), "--device", "cpu", "--amp", "fp16", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "amp='fp16' needs a CUDA device" in err
