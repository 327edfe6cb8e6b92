"""Search spaces: arch-spec templates in which any value may be a sampling directive.

Directives (a mapping with exactly one of these keys; ``name`` optionally names the Optuna parameter):

* ``{choice: [a, b, ...]}``: one of the options. Options may be scalars, mappings (e.g. whole nodes) or lists of
  nodes; a chosen list of nodes is spliced into the surrounding ``nodes:`` list, so a stage can be "one of several
  sub-graphs". Options are sampled recursively, so they may contain directives of their own (conditional space).
* ``{int: [low, high], step: 1, log: false}`` and ``{float: [low, high], step: null, log: false}``: a number.

Parameter names default to the YAML path of the directive (``variables.dim``, ``nodes[2].repeat``). Choice options
are presented to Optuna as labels: the value itself for scalars, the block name for a node, the first node's block
for a list of nodes (made unique with ``#k``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

import pydantic

from ..errors import SpecError
from ..spec.loader import format_pydantic_error

__all__ = ["Directive", "SearchFile", "SearchSpace", "load_search_space", "ParamSampler", "FixedSampler"]

_DIRECTIVE_KEYS = {"choice", "int", "float"}
_OPTION_KEYS = {"name", "step", "log"}


@dataclass(frozen=True)
class Directive:
    """One sampling directive found in the template."""

    name: str
    path: str
    kind: str  # "choice" | "int" | "float"
    options: tuple[Any, ...] = ()
    labels: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False


def _is_directive(value: Any) -> bool:
    return isinstance(value, Mapping) and len(_DIRECTIVE_KEYS & set(value)) == 1 and set(value) <= (
        _DIRECTIVE_KEYS | _OPTION_KEYS)


def _label(option: Any, index: int) -> Any:
    if option is None or isinstance(option, (bool, int, float, str)):
        return option
    if isinstance(option, Mapping) and isinstance(option.get("block"), str):
        return option["block"]
    if isinstance(option, list) and option and isinstance(option[0], Mapping):
        first = option[0]
        if isinstance(first.get("block"), str):
            return first["block"]
        if "repeat" in first and first.get("nodes") and isinstance(first["nodes"][0].get("block"), str):
            return first["nodes"][0]["block"]
    return f"option{index}"


def _unique(labels: list[Any]) -> list[Any]:
    seen: dict[Any, int] = {}
    out = []
    for label in labels:
        if label in seen:
            seen[label] += 1
            out.append(f"{label}#{seen[label]}")
        else:
            seen[label] = 0
            out.append(label)
    return out


def _parse_directive(value: Mapping[str, Any], path: str, source: str) -> Directive:
    kind = next(iter(_DIRECTIVE_KEYS & set(value)))
    name = value.get("name", path)
    if kind == "choice":
        options = value["choice"]
        if not isinstance(options, list) or not options:
            raise SpecError("choice needs a non-empty list of options", source=source, path=path)
        labels = _unique([_label(o, i) for i, o in enumerate(options)])
        return Directive(name, path, kind, tuple(options), tuple(labels))
    bounds = value[kind]
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)):
        raise SpecError(f"{kind} needs [low, high], got {bounds!r}", source=source, path=path)
    low, high = bounds
    if low > high:
        raise SpecError(f"{kind} range [{low}, {high}] is empty", source=source, path=path)
    if kind == "int" and not all(isinstance(b, int) for b in bounds):
        raise SpecError(f"int range needs integer bounds, got {bounds!r}", source=source, path=path)
    log = bool(value.get("log", False))
    if log and low <= 0:
        raise SpecError("log ranges need low > 0", source=source, path=path)
    return Directive(name, path, kind, low=low, high=high, step=value.get("step"), log=log)


class ParamSampler:
    """Where values come from: an Optuna trial (``OptunaSampler``) or fixed parameters (``FixedSampler``)."""

    def choose(self, d: Directive) -> Any:  # returns a label
        raise NotImplementedError

    def number(self, d: Directive) -> int | float:
        raise NotImplementedError


class OptunaSampler(ParamSampler):
    """Suggest values with an Optuna trial (define-by-run: nested directives become conditional parameters)."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def choose(self, d: Directive) -> Any:
        return self.trial.suggest_categorical(d.name, list(d.labels))

    def number(self, d: Directive) -> int | float:
        if d.kind == "int":
            return self.trial.suggest_int(d.name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
        return self.trial.suggest_float(d.name, float(d.low), float(d.high), step=d.step, log=d.log)


class FixedSampler(ParamSampler):
    """Values from a mapping of parameter name -> value/label; missing names take ``default`` (first option/low)."""

    def __init__(self, params: Mapping[str, Any], *, strict: bool = True) -> None:
        self.params, self.strict, self.used = dict(params), strict, set()

    def _get(self, d: Directive, fallback: Any) -> Any:
        if d.name in self.params:
            self.used.add(d.name)
            return self.params[d.name]
        if self.strict:
            raise KeyError(d.name)
        return fallback

    def choose(self, d: Directive) -> Any:
        return self._get(d, d.labels[0])

    def number(self, d: Directive) -> int | float:
        return self._get(d, d.low)


class SearchSettings(pydantic.BaseModel):
    """The ``search:`` block of a search file: objective, budgets, measurement and training settings."""

    model_config = pydantic.ConfigDict(extra="forbid")

    objective: str = "psnr"
    pareto_objectives: list[str] = pydantic.Field(default_factory=lambda: ["psnr", "latency"])
    budgets: dict[str, str | float | int] = pydantic.Field(default_factory=dict)
    lr_size: tuple[int, int] = (180, 320)
    threads: int = 2
    latency_runs: int = 3
    train_iters: int = 200
    train_seconds: float | None = None
    train_batch_size: int = 8
    train_patch_size: int = 32
    train_lr: float = 1e-3
    validate_every: int = 50
    pruner: Literal["median", "successive_halving", "hyperband", "none"] = "median"
    pruner_min_iters: int = pydantic.Field(50, ge=1, description="first rung (iterations) of successive halving")
    pruner_reduction: int = pydantic.Field(3, ge=2, description="keep 1/reduction of the trials at each rung")
    data: str | None = None
    split_protocol: str = pydantic.Field("ref_x4", description="with data: train on this protocol's training "
                                                               "split, validate on its held-out split")
    seeds: dict[str, dict[str, Any]] = pydantic.Field(default_factory=dict)


class SearchFile(pydantic.BaseModel):
    """A search file: ``name``, ``description``, ``search:`` settings, and ``space:``, the arch-spec template."""

    model_config = pydantic.ConfigDict(extra="forbid")

    name: str
    description: str | None = None
    search: SearchSettings = pydantic.Field(default_factory=SearchSettings)
    space: dict[str, Any]


class SearchSpace:
    """A parsed search file: sample concrete specs from it and check it up front."""

    def __init__(self, file: SearchFile, source: str) -> None:
        self.file, self.source = file, source
        self.directives: dict[str, Directive] = {}
        self._collect(file.space, "space")

    @property
    def settings(self) -> SearchSettings:
        return self.file.search

    def _collect(self, value: Any, path: str) -> None:
        if _is_directive(value):
            d = _parse_directive(value, path.removeprefix("space."), self.source)
            known = self.directives.get(d.name)
            if known is not None and (known.kind, known.labels, known.low, known.high, known.step, known.log) != (
                    d.kind, d.labels, d.low, d.high, d.step, d.log):
                raise SpecError(f"parameter name {d.name!r} is used twice with different ranges or options "
                                f"(also at {known.path}); one name may be shared only by identical directives",
                                source=self.source, path=path)
            self.directives.setdefault(d.name, d)
            for label, option in zip(d.labels, d.options):
                self._collect(option, f"{path}.{label}")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                self._collect(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._collect(item, f"{path}[{index}]")

    def sample(self, sampler: ParamSampler) -> dict[str, Any]:
        """A concrete spec mapping (no directives left); validate/build it with ``srblocks.build_model``."""
        return self._sample(copy.deepcopy(self.file.space), "space", sampler)

    def _sample(self, value: Any, path: str, sampler: ParamSampler) -> Any:
        if _is_directive(value):
            d = _parse_directive(value, path.removeprefix("space."), self.source)
            if d.kind == "choice":
                label = sampler.choose(d)
                if label not in d.labels:
                    raise ValueError(f"{d.name}: {label!r} is not one of {list(d.labels)}")
                index = d.labels.index(label)
                return self._sample(d.options[index], f"{path}.{label}", sampler)
            return sampler.number(d)
        if isinstance(value, Mapping):
            return {k: self._sample(v, f"{path}.{k}", sampler) for k, v in value.items()}
        if isinstance(value, list):
            out: list[Any] = []
            for index, item in enumerate(value):
                sampled = self._sample(item, f"{path}[{index}]", sampler)
                if _is_directive(item) and isinstance(sampled, list) and path.endswith("nodes"):
                    out.extend(sampled)  # a chosen sub-graph (list of nodes) is spliced in place
                else:
                    out.append(sampled)
            return out
        return value

    def corner_params(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Parameter sets that vary one directive at a time from the defaults (first option / low end):
        every option of every choice and both ends of every range. Used by :meth:`check`."""
        yield "defaults", {}
        for d in self.directives.values():
            values = d.labels if d.kind == "choice" else (d.low, d.high)
            for v in values:
                yield f"{d.name}={v!r}", {d.name: v}

    def check(self, build: Callable[[dict[str, Any]], Any]) -> None:
        """Reject the space up front if the default sample or any single choice/range end fails to build,
        naming the offending parameter and the YAML path of its directive."""
        for label, params in self.corner_params():
            spec = self.sample(FixedSampler(params, strict=False))
            try:
                build(spec)
            except SpecError as exc:
                name = next(iter(params), None)
                where = self.directives[name].path if name else "space"
                raise SpecError(f"the space produces an invalid spec when {label}: {exc}", source=self.source,
                                path=where) from None

    def validate_seeds(self) -> None:
        """Seed configurations must name existing parameters with allowed values."""
        for seed, params in self.settings.seeds.items():
            for name, value in params.items():
                d = self.directives.get(name)
                if d is None:
                    raise SpecError(f"seed {seed!r} sets unknown parameter {name!r} (known: {', '.join(self.directives)})",
                                    source=self.source, path=f"search.seeds.{seed}")
                if d.kind == "choice" and value not in d.labels:
                    raise SpecError(f"seed {seed!r}: {name}={value!r} is not one of {list(d.labels)}",
                                    source=self.source, path=f"search.seeds.{seed}.{name}")


def load_search_space(source: str | Path | Mapping[str, Any]) -> SearchSpace:
    """Read and validate a search file (path or mapping)."""
    if isinstance(source, Mapping):
        raw, origin = dict(source), "<mapping>"
    else:
        path = Path(source)
        if not path.is_file():
            raise SpecError(f"search file {str(path)!r} not found")
        origin = str(path)
        from ..spec.loader import read_yaml_file  # the spec limits: size, depth, expanded aliases

        raw = read_yaml_file(path, origin, what="search")
    try:
        file = SearchFile.model_validate(raw)
    except pydantic.ValidationError as exc:
        where, message = format_pydantic_error(exc)
        raise SpecError(message, source=origin, path=where) from None
    space = SearchSpace(file, origin)
    space.validate_seeds()
    return space
