"""Budget-constrained architecture search (see issue: search)."""
