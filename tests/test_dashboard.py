"""optuna-dashboard opens the studies ``srblocks search`` writes, from the journal file and from PostgreSQL, and
shows the trials with readable user attributes (``params_K``, ``macs_G``, ``memory_MiB``, ``latency_ms``,
``blocks``).

Each test starts the real dashboard server (``optuna-dashboard STORAGE --host 127.0.0.1 --port N``) in a
subprocess, reads its JSON API (``/api/studies``, ``/api/studies/<id>``) and stops it in a ``finally``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import optuna
import pytest
import yaml

from _postgres import postgres_url  # noqa: F401  (the fixture: a private PostgreSQL server for this module)
from srblocks.cli import main
from srblocks.search.readable import ReadableAttrsTrial, readable_attrs, spec_summary

TINY = {
    "name": "dash_tiny",
    "search": {"objective": "zero-cost", "lr_size": [16, 16], "budgets": {"params": "60K"},
               "seeds": {"small": {"variables.dim": 8, "variables.n_blocks": 1}}},
    "space": {"extends": "safmn", "name": "dash_tiny",
              "variables": {"scale": 2, "dim": {"choice": [8, 12, 16]}, "n_blocks": {"int": [1, 2]},
                            "ffn_scale": 2.0}},
}
SERVER_START_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - our own local server
        body = response.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


class Dashboard:
    """A running ``optuna-dashboard`` server on 127.0.0.1: ``url``, and :meth:`get` for its JSON API."""

    def __init__(self, storage: str) -> None:
        exe = Path(sys.executable).with_name("optuna-dashboard")
        command = [str(exe)] if exe.is_file() else [sys.executable, "-m", "optuna_dashboard"]
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([*command, storage, "--host", "127.0.0.1", "--port", str(self.port),
                                      "--server", "wsgiref", "--quiet"], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"optuna-dashboard exited with {self.proc.returncode}: "
                                     f"{self.proc.stdout.read()[-2000:]}")
            try:
                _get(self.url + "/api/meta")
                return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"optuna-dashboard did not answer within {SERVER_START_S} s") from None
                time.sleep(0.2)

    def get(self, path: str) -> Any:
        return _get(self.url + path)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _dashboard(storage: str) -> Iterator[Dashboard]:
    pytest.importorskip("optuna_dashboard",
                        reason="optuna-dashboard is not installed (the [test] or [dashboard] extra)")
    server = Dashboard(storage)
    try:
        yield server
    finally:
        server.stop()


def _search(tmp_path: Path, *extra: str) -> Path:
    space = tmp_path / "dash_tiny.yaml"
    space.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    assert main(["search", str(space), "--trials", "3", "--budget", "params=60K,memory=50MB", "-o", str(out),
                 *extra]) == 0
    return out


def _check_study_in_dashboard(server: Dashboard, study: optuna.Study) -> None:
    studies = server.get("/api/studies")["study_summaries"]
    (summary,) = [s for s in studies if s["study_name"] == study.study_name]
    detail = server.get(f"/api/studies/{summary['study_id']}")
    trials = detail["trials"]
    assert [t["number"] for t in trials] == [t.number for t in study.trials] == [0, 1, 2]
    assert [t["state"] for t in trials] == ["Complete"] * 3
    for shown, stored in zip(trials, study.trials):
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        assert float(attrs["params_K"]) == pytest.approx(stored.user_attrs["params"] / 1e3, abs=0.005)
        assert float(attrs["macs_G"]) == pytest.approx(stored.user_attrs["macs"] / 1e9, rel=1e-3)
        assert float(attrs["memory_MiB"]) == pytest.approx(stored.user_attrs["memory"] / 2**20, rel=1e-3)
        variables = stored.user_attrs["spec"]["variables"]
        assert attrs["blocks"] == "safmn (" + ", ".join(f"{k}={v}" for k, v in variables.items()) + ")"
        assert {p["name"]: float(p["param_external_value"]) for p in shown["params"]} == stored.params
    sortable = {a["key"]: a["sortable"] for a in detail["union_user_attrs"]}
    assert sortable["params_K"] and sortable["macs_G"] and sortable["memory_MiB"]  # numeric, sortable columns
    assert "<html" in server.get("/dashboard").lower()


def test_dashboard_opens_the_search_journal(tmp_path):
    out = _search(tmp_path)
    journal = out / "study.journal"
    study = optuna.load_study(study_name="dash_tiny", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    for server in _dashboard(str(journal)):
        _check_study_in_dashboard(server, study)


def _with_driver(url: str) -> str:
    """The URL a user gives the dashboard: SQLAlchemy >= 2.1 reads ``postgresql://`` as psycopg 3, so with only
    psycopg2 installed (the ``postgres`` extra) the driver must be named (docs/search.md says so)."""
    import importlib.util

    return url.replace("postgresql://", "postgresql+psycopg2://", 1) if importlib.util.find_spec("psycopg") is None \
        else url


def test_dashboard_opens_a_postgres_study(tmp_path, postgres_url):  # noqa: F811 - the fixture
    _search(tmp_path, "--storage", postgres_url, "--study", "dash_pg")
    url = _with_driver(postgres_url)
    study = optuna.load_study(study_name="dash_pg", storage=url)
    for server in _dashboard(url):
        _check_study_in_dashboard(server, study)


def test_readable_attributes_are_rounded_in_their_units():
    assert readable_attrs("params", 239520.0) == {"params_K": 239.52}
    assert readable_attrs("macs", 13554915840.0) == {"macs_G": 13.555}
    assert readable_attrs("macs", 628200.0) == {"macs_G": 0.0006282}  # 4 significant digits for toys
    assert readable_attrs("memory", 65.1 * 2**20) == {"memory_MiB": 65.1}
    assert readable_attrs("latency_measured", 41.28374) == {"latency_measured_ms": 41.28}
    assert readable_attrs("latency", None) == readable_attrs("latency", float("nan")) == {}
    assert readable_attrs("psnr", 30.0) == {} and readable_attrs("params", True) == {}
    spec = {"nodes": [{"id": "head", "block": "conv"},
                      {"repeat": 2, "nodes": [{"id": "s.{i}", "block": "hpi_block"}]},
                      {"repeat": 3, "nodes": [{"id": "r.{i}", "block": "rfdb"}, {"id": "p.{i}", "block": "pa"}]},
                      {"id": "tail", "block": "pixel_shuffle"}]}
    assert spec_summary(spec) == "conv, 2x hpi_block, 3x rfdb, 3x pa, pixel_shuffle"
    assert spec_summary("safmn") is None and len(spec_summary({"nodes": [{"block": "b" * 400}]})) == 300
    study = optuna.create_study()
    trial = ReadableAttrsTrial(study.ask())
    trial.set_user_attr("latency", 12.3456)
    trial.set_user_attr("spec", {"extends": "safmn", "variables": {"dim": 8}})
    assert trial.number == 0 and study.trials[0].user_attrs == {
        "latency": 12.3456, "latency_ms": 12.35, "spec": {"extends": "safmn", "variables": {"dim": 8}},
        "blocks": "safmn (dim=8)"}
