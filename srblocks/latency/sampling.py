"""Concrete candidates of a search template without Optuna: for calibrating a table on the models a search will
meet, and for the latency-model benchmark."""

from __future__ import annotations

import math
import random
from typing import Any, Iterator

from ..search.space import Directive, FixedSampler, ParamSampler, SearchSpace

__all__ = ["RandomSampler", "template_candidates"]


class RandomSampler(ParamSampler):
    """Uniform choices and ranges (log-uniform where the directive says ``log``), from a seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, d: Directive) -> Any:
        return self.rng.choice(d.labels)

    def number(self, d: Directive) -> int | float:
        low, high = float(d.low), float(d.high)  # type: ignore[arg-type]
        if d.kind == "int":
            if d.log:
                return int(round(math.exp(self.rng.uniform(math.log(low), math.log(high)))))
            step = int(d.step or 1)
            return int(low) + step * self.rng.randrange((int(high) - int(low)) // step + 1)
        if d.step:
            return low + d.step * self.rng.randrange(int(round((high - low) / d.step)) + 1)
        if d.log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        return self.rng.uniform(low, high)


def template_candidates(space: SearchSpace, count: int, seed: int = 0, *,
                        with_seeds: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, concrete spec mapping): the template's seeded paper designs first (with ``with_seeds``), then
    ``count`` random samples (``<space>_sample<i>``)."""
    if with_seeds:
        for label, params in space.settings.seeds.items():
            spec = space.sample(FixedSampler(params, strict=False))
            spec["name"] = f"{space.file.name}_{label}"
            yield spec["name"], spec
    rng = random.Random(seed)
    for i in range(count):
        spec = space.sample(RandomSampler(rng))
        spec["name"] = f"{space.file.name}_sample{i}"
        yield spec["name"], spec
