"""``srblocks.save_pretrained`` / ``srblocks.from_pretrained``: one folder (spec.yaml, model.safetensors, card.json)
is a complete model; round trips are bit-exact, damaged or foreign folders give one clear error."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import srblocks
from conftest import TINY_SPEC
from srblocks.pretrained import CARD_FILE, FORMAT_VERSION, SPEC_FILE, WEIGHTS_FILE, PretrainedError

SMALL_SAFMN = {"dim": 8, "n_blocks": 1}
SMALL_FMEN = {"n_feats": 8, "mid_feats": 8, "down_blocks": 1}


def _randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with every floating-point parameter and buffer redrawn (so defaults cannot make a test pass)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=gen) * 0.2 + 0.9 if "running_var" in name else \
                    torch.randn(tensor.shape, generator=gen) * 0.1
                tensor.copy_(noise)
    return model


def _out(model: nn.Module, scale: float = 1.0, seed: int = 1) -> torch.Tensor:
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * scale
    with torch.no_grad():
        return model(x)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _hidden_siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_safmn_round_trip_is_bit_exact(tmp_path: Path) -> None:
    model = _randomized(srblocks.build_model("arch_specs/safmn.yaml", scale=2, **SMALL_SAFMN)).eval()
    folder = srblocks.save_pretrained(model, tmp_path / "safmn_x2")

    assert folder == tmp_path / "safmn_x2"
    assert sorted(p.name for p in folder.iterdir()) == sorted([SPEC_FILE, WEIGHTS_FILE, CARD_FILE])
    card = json.loads((folder / CARD_FILE).read_text())
    info = srblocks.model_info(model)
    assert card["format_version"] == FORMAT_VERSION
    assert (card["spec_name"], card["spec_hash"], card["scale"], card["input_range"]) == \
        ("safmn", info.content_hash(), 2, 1.0)
    assert card["variables"]["dim"] == 8 and card["form"] == "train" and card["dtype"] == "float32"
    assert card["params"] == sum(p.numel() for p in model.parameters())
    assert card["torch_version"] == torch.__version__ and card["srblocks_version"] == srblocks.__version__
    for name in (SPEC_FILE, WEIGHTS_FILE):
        assert card["files"][name]["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    from safetensors import safe_open

    with safe_open(str(folder / WEIGHTS_FILE), "pt") as f:  # the export metadata, not a second copy of it
        meta = f.metadata()
    assert meta["spec_hash"] == info.content_hash() and meta["scale"] == "2" and "psnr_convention" in meta

    loaded = srblocks.from_pretrained(folder)
    assert not loaded.training
    assert srblocks.model_info(loaded).content_hash() == info.content_hash()
    assert torch.equal(_out(loaded), _out(model))
    # spec.yaml on its own builds the same network with the card's variables
    rebuilt = srblocks.build_model(folder / SPEC_FILE, **card["variables"])
    assert srblocks.model_info(rebuilt).content_hash() == info.content_hash()


def test_deployed_fmen_s_round_trips_in_deploy_form(tmp_path: Path) -> None:
    trained = _randomized(srblocks.build_model("arch_specs/fmen_s.yaml", **SMALL_FMEN))
    deployed = srblocks.deploy(trained)
    folder = srblocks.save_pretrained(deployed, tmp_path / "fmen")

    card = json.loads((folder / CARD_FILE).read_text())
    assert card["form"] == "deploy" and card["input_range"] == 255.0
    assert card["params"] == sum(p.numel() for p in deployed.parameters()) < \
        sum(p.numel() for p in trained.parameters())
    loaded = srblocks.from_pretrained(folder)
    assert list(loaded.state_dict()) == list(deployed.state_dict())  # rebuilt in deploy form: no BatchNorm keys
    assert not any(isinstance(m, nn.BatchNorm2d) for m in loaded.modules())
    assert torch.equal(_out(loaded, 255.0), _out(deployed, 255.0))


def test_fmen_s_built_in_deploy_form_is_recorded_as_deploy(tmp_path: Path) -> None:
    model = _randomized(srblocks.build_model("arch_specs/fmen_s.yaml", deploy=True, **SMALL_FMEN)).eval()
    folder = srblocks.save_pretrained(model, tmp_path / "fmen_deploy")

    assert json.loads((folder / CARD_FILE).read_text())["form"] == "deploy"
    assert torch.equal(_out(srblocks.from_pretrained(folder), 255.0), _out(model, 255.0))


def test_training_form_fmen_s_keeps_its_batchnorm_statistics(tmp_path: Path) -> None:
    model = _randomized(srblocks.build_model("arch_specs/fmen_s.yaml", **SMALL_FMEN)).eval()
    folder = srblocks.save_pretrained(model, tmp_path / "fmen_train")

    assert json.loads((folder / CARD_FILE).read_text())["form"] == "train"
    loaded = srblocks.from_pretrained(folder)
    assert any(isinstance(m, nn.BatchNorm2d) for m in loaded.modules())
    assert torch.equal(_out(loaded, 255.0), _out(model, 255.0))


def test_model_from_a_dict_spec_round_trips(tmp_path: Path) -> None:
    model = _randomized(srblocks.build_model(TINY_SPEC, dim=4)).eval()
    assert srblocks.model_info(model).source == "<mapping>"
    folder = srblocks.save_pretrained(model, tmp_path / "nested" / "tiny")  # parents are created

    loaded = srblocks.from_pretrained(str(folder))
    assert srblocks.model_info(loaded).variables == {"scale": 2, "dim": 4}
    assert torch.equal(_out(loaded), _out(model))


def test_extends_is_resolved_in_spec_yaml(tmp_path: Path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text("name: safmn_child\nextends: safmn\nvariables: {dim: 8, n_blocks: 1}\n")
    model = _randomized(srblocks.build_model(child)).eval()
    folder = srblocks.save_pretrained(model, tmp_path / "child")
    child.unlink()  # the folder needs neither the child nor (by name) the base file

    text = (folder / SPEC_FILE).read_text()
    assert "\nextends:" not in text and "nodes:" in text
    assert json.loads((folder / CARD_FILE).read_text())["extends"] == "safmn"
    assert torch.equal(_out(srblocks.from_pretrained(folder)), _out(model))


def test_channels_last_and_half_precision_are_restored(tmp_path: Path) -> None:
    model = _randomized(srblocks.build_model(TINY_SPEC, memory_format="channels_last")).eval().half()
    folder = srblocks.save_pretrained(model, tmp_path / "tiny_half")

    card = json.loads((folder / CARD_FILE).read_text())
    assert (card["memory_format"], card["dtype"]) == ("channels_last", "float16")
    loaded = srblocks.from_pretrained(folder)
    weight = loaded.get_submodule("head").weight
    assert weight.dtype == torch.float16 and weight.is_contiguous(memory_format=torch.channels_last)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_saving_does_not_touch_the_global_rng(tmp_path: Path) -> None:
    model = srblocks.build_model(TINY_SPEC).eval()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    srblocks.save_pretrained(model, tmp_path / "a")
    srblocks.from_pretrained(tmp_path / "a")
    assert torch.equal(torch.rand(3), expected)


def test_existing_folder_is_refused_without_overwrite_and_left_intact(tmp_path: Path) -> None:
    first = _randomized(srblocks.build_model(TINY_SPEC), seed=1).eval()
    second = _randomized(srblocks.build_model(TINY_SPEC), seed=2).eval()
    folder = srblocks.save_pretrained(first, tmp_path / "m")
    before = _snapshot(folder)

    with pytest.raises(PretrainedError, match="not empty.*overwrite=True"):
        srblocks.save_pretrained(second, folder)
    assert _snapshot(folder) == before and _hidden_siblings(folder) == []

    srblocks.save_pretrained(second, folder, overwrite=True)
    assert _snapshot(folder)[WEIGHTS_FILE] != before[WEIGHTS_FILE]
    assert torch.equal(_out(srblocks.from_pretrained(folder)), _out(second))
    assert _hidden_siblings(folder) == []  # neither the temporary nor the old folder is left behind


def test_overwrite_never_deletes_foreign_files(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(PretrainedError, match="notes.txt"):
        srblocks.save_pretrained(srblocks.build_model(TINY_SPEC), folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"] and _hidden_siblings(folder) == []


def test_empty_existing_folder_and_file_target(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    model = srblocks.build_model(TINY_SPEC).eval()
    srblocks.save_pretrained(model, tmp_path / "empty")
    assert (tmp_path / "empty" / CARD_FILE).is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(PretrainedError, match="not a folder"):
        srblocks.save_pretrained(model, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x"


def test_a_crash_while_writing_leaves_no_folder_and_keeps_the_old_one(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import srblocks.fileio

    model = _randomized(srblocks.build_model(TINY_SPEC)).eval()
    real = srblocks.fileio.write_bytes_atomic
    calls = []

    def crash_on_second_file(path, data):  # type: ignore[no-untyped-def]
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(srblocks.fileio, "write_bytes_atomic", crash_on_second_file)
    with pytest.raises(OSError, match="No space"):
        srblocks.save_pretrained(model, tmp_path / "new")
    assert not (tmp_path / "new").exists() and _hidden_siblings(tmp_path / "new") == []
    monkeypatch.undo()

    folder = srblocks.save_pretrained(model, tmp_path / "old")
    before = _snapshot(folder)
    real_rename = os.rename

    def fail_moving_the_new_folder(src, dst):  # type: ignore[no-untyped-def]
        if str(src).endswith(".tmp"):
            raise OSError(5, "Input/output error")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", fail_moving_the_new_folder)
    with pytest.raises(OSError, match="Input/output"):
        srblocks.save_pretrained(_randomized(model, seed=5), folder, overwrite=True)
    monkeypatch.undo()
    assert _snapshot(folder) == before and _hidden_siblings(folder) == []


@pytest.mark.parametrize("name", [WEIGHTS_FILE, SPEC_FILE])
def test_a_tampered_file_fails_its_hash_check(tmp_path: Path, name: str) -> None:
    folder = srblocks.save_pretrained(srblocks.build_model(TINY_SPEC), tmp_path / "m")
    path = folder / name
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01  # one bit in the last tensor / the spec's last line
    path.write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match=rf"{name}: SHA-256 mismatch"):
        srblocks.from_pretrained(folder)


def test_missing_files_and_bad_cards_are_clear_errors(tmp_path: Path) -> None:
    folder = srblocks.save_pretrained(srblocks.build_model(TINY_SPEC), tmp_path / "m")
    card_path = folder / CARD_FILE
    card_text = card_path.read_text()

    (folder / WEIGHTS_FILE).rename(tmp_path / "weights")
    with pytest.raises(PretrainedError, match=rf"{WEIGHTS_FILE}: missing"):
        srblocks.from_pretrained(folder)
    (tmp_path / "weights").rename(folder / WEIGHTS_FILE)

    card_path.unlink()
    with pytest.raises(PretrainedError, match=rf"{CARD_FILE}: missing.*not a complete model folder"):
        srblocks.from_pretrained(folder)

    card_path.write_text(card_text[:-10])
    with pytest.raises(PretrainedError, match=rf"{CARD_FILE}: invalid JSON: .* at line \d+ column \d+"):
        srblocks.from_pretrained(folder)

    card = json.loads(card_text)
    for change, message in [({"format_version": FORMAT_VERSION + 1}, "newer than this srblocks"),
                            ({"format_version": "1"}, "format_version must be a positive integer"),
                            ({"format": "something-else"}, "not a srblocks model card"),
                            ({"form": "fused"}, "'form' must be one of train, deploy")]:
        card_path.write_text(json.dumps({**card, **change}))
        with pytest.raises(PretrainedError, match=message):
            srblocks.from_pretrained(folder)

    with pytest.raises(PretrainedError, match="not found"):
        srblocks.from_pretrained(tmp_path / "nowhere")


def test_a_model_not_built_from_a_spec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PretrainedError, match="not built from a spec by srblocks.build_model"):
        srblocks.save_pretrained(nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2)), tmp_path / "x")
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []


def test_weights_that_fit_neither_form_are_refused(tmp_path: Path) -> None:
    model = srblocks.build_model(TINY_SPEC).eval()
    model.head.extra = nn.Parameter(torch.zeros(1))  # a parameter the spec does not build
    with pytest.raises(PretrainedError, match="fit neither.*unexpected head.extra"):
        srblocks.save_pretrained(model, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_import_srblocks_pretrained_stays_torch_free() -> None:
    code = "import srblocks, srblocks.pretrained, sys; srblocks.pretrained.__all__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
    assert "save_pretrained" in srblocks.__all__ and "from_pretrained" in dir(srblocks)
