"""Specs: the pydantic schema of architecture YAML files, their loading and the safe expression evaluator."""

from .expr import ExpressionError, evaluate
from .loader import LoadedSpec, load_spec, shipped_spec_names, shipped_spec_path
from .schema import ArchSpec, ExpectedEntry, GraphSpec, NodeSpec, RepeatSpec

__all__ = [
    "ArchSpec",
    "ExpectedEntry",
    "ExpressionError",
    "GraphSpec",
    "LoadedSpec",
    "NodeSpec",
    "RepeatSpec",
    "evaluate",
    "load_spec",
    "shipped_spec_names",
    "shipped_spec_path",
]
