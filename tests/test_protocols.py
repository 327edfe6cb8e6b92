"""srblocks.protocols: protocol files (extends, hashes, errors), the hashed train/val split, the results store
(skip done work, torn lines, concurrent appends), run_protocol and ``srblocks train --protocol``. Tiny model and
synthetic images only (no shared data)."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
import yaml

import srblocks
from conftest import TINY_SPEC, synthetic_images
from srblocks.cli import main
from srblocks.data import write_image
from srblocks.errors import SpecError
from srblocks.protocols import (DataNotFound, ResultsStore, load_protocol, resolve_data, run_protocol,
                                shipped_protocol_names, split_images)

TINY = {**TINY_SPEC, "nodes": TINY_SPEC["nodes"][:4]}


def _data_dir(root: Path, n: int = 8) -> Path:
    """n synthetic HR images in two sub-folders (the split searches recursively)."""
    for i, (name, image) in enumerate(synthetic_images(n, (40, 48), seed=3, noise=4)):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        write_image(folder / f"{name}.png", image)
    return root


def _protocol(tmp_path: Path, iterations: int = 6, **training) -> Path:
    path = tmp_path / "tiny_x2.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny_x2", "version": 1, "scale": 2, "seeds": [0, 1],
        "data": {"val_count": 2, "split_salt": "test", "test_sets": []},
        "training": {"iterations": iterations, "batch_size": 2, "lr_patch_size": 8, "lr": 3e-3, **training}}))
    return path


def test_shipped_reference_protocols_load_and_differ_only_in_length():
    assert {"ref_x4", "ref_x4_long"} <= set(shipped_protocol_names())
    ref, long = load_protocol("ref_x4"), load_protocol("ref_x4_long")
    assert ref.scale == long.scale == 4
    assert long.training.iterations == 3 * ref.training.iterations
    assert long.training.model_dump(exclude={"iterations"}) == ref.training.model_dump(exclude={"iterations"})
    assert long.data == ref.data and ref.content_hash() != long.content_hash()


def test_protocol_hash_ignores_names_and_follows_content(tmp_path):
    path = _protocol(tmp_path)
    a = load_protocol(path)
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(path.read_text().replace("name: tiny_x2", "name: other"))
    assert load_protocol(renamed).content_hash() == a.content_hash()
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"name": "child", "version": 1, "extends": "tiny_x2.yaml",
                                     "training": {"iterations": 7}}))
    c = load_protocol(child)
    assert c.training.iterations == 7 and c.training.batch_size == 2 and c.content_hash() != a.content_hash()


def test_protocol_errors_name_file_and_field(tmp_path):
    with pytest.raises(SpecError, match="no protocol file or shipped protocol named 'ref_x5'.*did you mean"):
        load_protocol("ref_x5")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "version": 1, "scale": 4, "training": {"iterations": 0}}))
    with pytest.raises(SpecError, match=r"bad\.yaml.*training\.iterations"):
        load_protocol(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text(yaml.safe_dump({"name": "loop", "version": 1, "extends": "loop.yaml", "scale": 4,
                                    "training": {"iterations": 1}}))
    with pytest.raises(SpecError, match="extends cycle"):
        load_protocol(loop)


def test_split_is_deterministic_disjoint_and_order_independent(tmp_path):
    root = _data_dir(tmp_path / "data")
    train, val = split_images(root, 2, "salt")
    assert len(val) == 2 and len(train) == 6
    assert not {p.name for p in train} & {p.name for p in val}
    assert [p.name for p in split_images(root, 2, "salt")[1]] == [p.name for p in val]
    # adding an image never moves an old one from train into val unless the new one takes its place
    write_image(root / "b" / "zz_new.png", synthetic_images(1, (40, 48), seed=9)[0][1])
    _, val2 = split_images(root, 2, "salt")
    assert len({p.name for p in val2} - {p.name for p in val} - {"b_zz_new"}) == 0
    with pytest.raises(DataNotFound, match="does not exist"):
        split_images(tmp_path / "missing", 2, "salt")
    with pytest.raises(ValueError, match="holds 9 image.*needs at least one more"):
        split_images(root, 9, "salt")


def test_store_skips_done_units_and_survives_a_torn_last_line(tmp_path):
    store = ResultsStore(tmp_path / "r.jsonl")
    key = {"kind": "x", "spec_hash": "abc", "seed": 0}
    assert not store.has(key)
    store.append(key, {"value": 1.5, "bad": float("nan")})
    assert store.has(key) and store.get(key)["value"] == 1.5 and store.get(key)["bad"] is None
    assert not store.has({**key, "seed": 1})
    with store.path.open("a") as f:
        f.write('{"key": {"kind": "x", "spec_hash": "def"')  # power loss mid-append
    with pytest.warns(UserWarning, match="torn last line"):
        assert len(store.records()) == 1
    store.append({**key, "seed": 2}, {"value": 3})  # the torn line is terminated, not merged into this record
    with pytest.warns(UserWarning, match="unreadable line"):
        assert [r["key"]["seed"] for r in store.records()] == [0, 2]


def _append_many(path: str, worker: int) -> None:
    store = ResultsStore(path)
    for i in range(50):
        store.append({"kind": "x", "worker": worker, "i": i}, {"payload": "y" * 2000})


def test_store_appends_from_several_processes_do_not_interleave(tmp_path):
    path = tmp_path / "r.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    records = ResultsStore(path).records()
    assert len(records) == 150 and len({json.dumps(r["key"], sort_keys=True) for r in records}) == 150


def test_run_protocol_records_once_and_a_rerun_skips(tmp_path):
    data = _data_dir(tmp_path / "data")
    protocol = _protocol(tmp_path)
    store = ResultsStore(tmp_path / "results.jsonl")
    record = run_protocol(TINY, protocol, data=data, store=store, progress=False, tests={"heldout": data / "a"})
    assert record["protocol"] == "tiny_x2" and record["key"]["seed"] == 0 and record["iterations"] == 6
    assert record["params"] == srblocks.profile(srblocks.build_model(TINY), (16, 16)).params
    assert record["val_psnr"] > 0 and set(record["test_psnr"]) == {"heldout"}
    assert record["machine"]["device"] == "cpu" and record["wall_s"] >= 0
    again = run_protocol(TINY, protocol, data=data, store=store, progress=False, tests={"heldout": data / "a"})
    assert again["reused"] and again["val_psnr"] == record["val_psnr"] and len(store.records()) == 1
    other_seed = run_protocol(TINY, protocol, seed=1, data=data, store=store, progress=False, tests={})
    assert other_seed["key"]["seed"] == 1 and len(store.records()) == 2
    # the same network under another name is the same unit of work
    renamed = {**TINY, "name": "tiny_renamed", "description": "same network"}
    assert run_protocol(renamed, protocol, data=data, store=store, progress=False, tests={})["reused"]


def test_run_protocol_is_deterministic_and_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import torch

    data = _data_dir(tmp_path / "data")
    protocol = _protocol(tmp_path, iterations=300)
    a = run_protocol(TINY, protocol, data=data, progress=False, tests={})
    b = run_protocol(TINY, protocol, data=data, progress=False, tests={})
    assert a["val_psnr"] == b["val_psnr"] and a["key"] == b["key"] and not a["resumed"]
    # kill the run at iteration 270 (after the checkpoint at 250); the rerun continues from it to the same result
    step, calls = torch.optim.Adam.step, {"n": 0}

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 270:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(TINY, protocol, data=data, progress=False, tests={}, work_dir=tmp_path / "work")
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    c = run_protocol(TINY, protocol, data=data, progress=False, tests={}, work_dir=tmp_path / "work")
    assert c["resumed"] and c["iterations"] == 300 and c["val_psnr"] == a["val_psnr"]


def test_train_cli_with_protocol(tmp_path, capsys):
    data = _data_dir(tmp_path / "data")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    protocol = _protocol(tmp_path)
    out = tmp_path / "run"
    argv = ["train", str(spec), "--protocol", str(protocol), "--data", str(data), "-o", str(out), "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "under tiny_x2" in text and "validation" in text and "recorded in" in text
    assert len(ResultsStore(out / "results.jsonl").records()) == 1
    assert main(argv) == 0
    assert "already recorded" in capsys.readouterr().out
    assert main(argv + ["--iters", "5"]) == 2
    assert "--iters cannot be combined with --protocol" in capsys.readouterr().err
    assert main(["train", str(spec), "--protocol", "nope_x9", "--data", str(data)]) == 2
    assert "no protocol file or shipped protocol named 'nope_x9'" in capsys.readouterr().err
    assert main(["train", str(spec), "--protocol", str(protocol), "--data", str(tmp_path / "none"), "-o",
                 str(tmp_path / "r2")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_cli_without_protocol_still_requires_its_recipe(tmp_path, capsys):
    assert main(["train", "safmn", "--scale", "4"]) == 2
    assert "--data, --iters, -o required for training without --protocol" in capsys.readouterr().err


def test_resolve_data_without_a_folder_says_what_to_pass(monkeypatch, tmp_path):
    import srblocks.protocols.splits as splits

    monkeypatch.setattr(splits, "default_data_dir", lambda: None)
    with pytest.raises(DataNotFound, match="pass --data DIR"):
        resolve_data(load_protocol("ref_x4"))
