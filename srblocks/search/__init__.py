"""Budget-constrained architecture search with Optuna over spec templates (see ``search/*.yaml``)."""

from .budgets import Budgets, parse_budgets
from .report import export_results, trial_rows, winners
from .runner import InvalidCandidate, SearchOptions, evaluate_candidate, make_storage, open_study, run_search
from .space import FixedSampler, SearchSpace, load_search_space

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
