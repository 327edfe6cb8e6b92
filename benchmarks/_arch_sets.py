"""Architecture sets shared by the search benchmarks (``search_fidelity.py``, ``search_vs_papers.py``).

* :data:`PAPER_MODELS`: shipped x4 specs (and smaller variants of them) whose deploy form has <= 250K params.
  FMEN-S itself has 341,066 deploy params at x4, so only its narrower variants qualify.
* :func:`stratified_hybrids`: samples of ``search/hybrid_x4.yaml`` under 250K deploy params, stratified so that
  every block family appears as often as the others in both stages. The list is generated once and cached in a
  JSON file beside the results, so reruns (and later sessions) train exactly the same architectures.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from srblocks.build import build_model, model_info
from srblocks.protocols import deploy_cost
from srblocks.search.space import OptunaSampler, load_search_space

REPO = Path(__file__).resolve().parents[1]
HYBRID_SPACE = REPO / "search" / "hybrid_x4.yaml"
FAMILIES = ("fmm", "erb", "hpub", "hpi_block", "rfdb")
PARAM_LIMIT = 250_000


@dataclass(frozen=True)
class Arch:
    """One architecture: a label, a spec (shipped name or mapping) and variable overrides."""

    label: str
    spec: Any
    overrides: dict[str, Any] = field(default_factory=dict)
    group: str = "paper"

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "spec": self.spec, "overrides": self.overrides, "group": self.group}


PAPER_MODELS: list[Arch] = [
    Arch("safmn", "safmn"),
    Arch("safmn_dim24", "safmn", {"dim": 24}),
    Arch("safmn_n4", "safmn", {"n_blocks": 4}),
    Arch("hpun_s", "hpun_s"),
    Arch("fsrcnn", "fsrcnn"),
    Arch("rfdn_nf36", "rfdn", {"nf": 36}),
    Arch("fmen_s_nf36", "fmen_s", {"n_feats": 36}),
    Arch("pan_nf36", "pan", {"nf": 36}),
]


def _sample(space, stage1: str, stage2: str, seed: int, limit: int, attempts: int = 200) -> dict[str, Any]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(attempts):
        study.enqueue_trial({"stage1.block": stage1, "stage2.block": stage2})
        trial = study.ask()
        spec = space.sample(OptunaSampler(trial))
        try:
            params = deploy_cost(build_model(spec))["params"]
        except Exception:  # noqa: BLE001 - a sample that does not build is simply not taken
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        if params <= limit:
            return spec
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    raise RuntimeError(f"no sample with stage blocks {stage1}/{stage2} under {limit} params in {attempts} tries")


def stratified_hybrids(cache: Path, per_family: int = 3, limit: int = PARAM_LIMIT) -> list[Arch]:
    """``len(FAMILIES) * per_family`` hybrid samples: stage 1 cycles through the families ``per_family`` times,
    stage 2 takes the family k + 1 places further, so each family is a stage-1 and a stage-2 block
    ``per_family`` times. Cached in ``cache`` (JSON) after the first call."""
    if cache.is_file():
        return [Arch(**a) for a in json.loads(cache.read_text())]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    space = load_search_space(HYBRID_SPACE)
    archs = []
    for k in range(per_family):
        for i, first in enumerate(FAMILIES):
            second = FAMILIES[(i + k + 1) % len(FAMILIES)]
            spec = _sample(space, first, second, seed=1000 * (k + 1) + i, limit=limit)
            label = f"hybrid_{first}+{second}_{k}"
            spec["name"] = label
            archs.append(Arch(label, spec, {}, "hybrid"))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps([a.as_dict() for a in archs], indent=1))
    tmp.replace(cache)
    return archs


def spec_hash(arch: Arch) -> str:
    """Content hash of the architecture at x4 (see :meth:`srblocks.ModelInfo.content_hash`)."""
    return model_info(build_model(arch.spec, **{"scale": 4, **arch.overrides})).content_hash()
