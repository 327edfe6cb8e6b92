"""The block registry and the core CLI commands (summary, table, blocks, specs)."""

from __future__ import annotations

import json

import pytest
import torch

import srblocks
from srblocks.cli import main
from srblocks.registry import UnknownBlockError, get_block


def test_every_block_has_schema_docstring_and_out_channels() -> None:
    blocks = srblocks.list_blocks()
    for name in ["safm", "ccm", "fmm", "rrrb", "erb", "hfab", "conv", "pixel_shuffle", "layernorm2d", "add"]:
        assert name in blocks
    for name, meta in blocks.items():
        assert meta["summary"], f"block {name} has no docstring"
        assert meta["args"]["type"] == "object"


def test_unknown_block_suggests_closest_names() -> None:
    with pytest.raises(UnknownBlockError, match="did you mean 'hfab'"):
        get_block("hfba")


def test_blocks_are_usable_alone() -> None:
    from srblocks.blocks import CCM, ERB, FMM, HFAB, RRRB, SAFM

    x = torch.rand(2, 48, 17, 19)
    for block in (SAFM(dim=48), CCM(dim=48), FMM(dim=48), RRRB(dim=48), ERB(dim=48), HFAB(dim=48, mid_feats=16)):
        assert block(x).shape == x.shape and block.out_channels == 48


def test_summary_json_has_the_documented_keys(capsys) -> None:
    assert main(["summary", "fmen_s", "--set", "deploy=true", "--lr-size", "256x256", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("params", "macs", "acts", "convs", "peak_memory_bytes"):
        assert key in data
    assert data["macs"] == 22280011776 and data["convs"] == 34 and data["params"] == 341066


def test_summary_reports_latency_when_asked(capsys) -> None:
    assert main(["summary", "safmn", "--set", "n_blocks=1", "--lr-size", "16x16", "--latency", "--runs", "1",
                 "--threads", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["latency_ms"] > 0


def test_table_for_one_spec_passes(capsys) -> None:
    assert main(["table", "safmn"]) == 0
    out = capsys.readouterr().out
    assert "13.555G" in out and "reproduction targets met" in out


def test_bad_spec_exits_2_with_a_one_line_error(capsys) -> None:
    assert main(["summary", "safmn", "--set", "dimm=3"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'dim'" in err and "Traceback" not in err
    assert main(["summary", "no_such_spec"]) == 2


def test_blocks_and_specs_listing(capsys) -> None:
    assert main(["blocks"]) == 0 and "hfab" in capsys.readouterr().out
    assert main(["blocks", "safm"]) == 0 and '"dim"' in capsys.readouterr().out
    assert main(["specs"]) == 0 and "fmen_s" in capsys.readouterr().out


def test_project_block_is_the_identity_at_equal_width() -> None:
    from srblocks.blocks import Projection

    x = torch.rand(1, 8, 5, 6)
    same = Projection(in_channels=8, out_channels=8)
    assert same(x) is x and not list(same.parameters()) and same.out_channels == 8
    wider = Projection(in_channels=8, out_channels=12)
    assert wider(x).shape == (1, 12, 5, 6) and wider.conv.weight.shape == (12, 8, 1, 1)


def test_summary_says_which_reference_figure_the_model_matches(capsys) -> None:
    """HPINet-M x4: the official code's 135.81G MACs are met, the paper's 124.0G are not, and the summary says so."""
    assert main(["summary", "hpinet_m", "--scale", "4", "--json"]) == 0
    rows = {r["metric"]: r for r in json.loads(capsys.readouterr().out)["reproduction"]}
    assert rows["macs"]["expected"] == "135.81G" and rows["macs"]["ok"] is True
    assert rows["macs"]["paper"] == "124.0G" and rows["macs"]["matches_paper"] is False
    assert rows["params"]["ok"] and rows["params"]["matches_paper"] is True
    assert main(["summary", "hpinet_m", "--scale", "4"]) == 0
    text = capsys.readouterr().out
    assert "135.81G (without aten.upsample_bilinear2d): yes; paper 124.0G: no" in text
    assert main(["summary", "hpinet_m", "--scale", "4", "--lr-size", "64x64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reproduction"] == []  # no target stated at that size
