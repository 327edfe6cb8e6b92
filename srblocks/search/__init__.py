"""Budget-constrained architecture search with Optuna over spec templates (see ``search/*.yaml``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name is imported on first use
    from .budgets import Budgets, parse_budgets
    from .report import export_results, trial_rows, winners
    from .runner import InvalidCandidate, SearchOptions, evaluate_candidate, make_storage, open_study, run_search
    from .space import FixedSampler, SearchSpace, load_search_space

_EXPORTS = {
    "Budgets": ".budgets",
    "parse_budgets": ".budgets",
    "export_results": ".report",
    "trial_rows": ".report",
    "winners": ".report",
    "InvalidCandidate": ".runner",
    "SearchOptions": ".runner",
    "evaluate_candidate": ".runner",
    "make_storage": ".runner",
    "open_study": ".runner",
    "run_search": ".runner",
    "FixedSampler": ".space",
    "SearchSpace": ".space",
    "load_search_space": ".space",
}
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)

__all__ = [
    "Budgets",
    "FixedSampler",
    "InvalidCandidate",
    "SearchOptions",
    "SearchSpace",
    "evaluate_candidate",
    "export_results",
    "load_search_space",
    "make_storage",
    "open_study",
    "parse_budgets",
    "run_search",
    "trial_rows",
    "winners",
]
