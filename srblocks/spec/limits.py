"""Resource limits of reading, evaluating and building a spec (documented in ``docs/spec_format.md``).

A few bytes of YAML must not be able to hang the assembler or exhaust memory: every input is bounded where it enters
(file size, document size with aliases expanded, nesting depth, ``extends`` chain) and every value the assembler
computes is bounded where it is made (integer magnitude, string and list length, work per expression, repeat and
node counts, tensor elements and modules a build creates). The limits are far above what real networks need
(the largest shipped spec: 5 KB, 462 YAML nodes, depth 12, 2,467 modules, 16M parameters) and each exceeded limit
is a :class:`~srblocks.errors.SpecError` naming it.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Generator, Iterator, Mapping
from typing import Any

__all__ = [
    "MAX_SPEC_BYTES", "MAX_DOCUMENT_NODES", "MAX_DEPTH", "MAX_EXTENDS", "MAX_EXPRESSION_LENGTH", "MAX_INT_BITS",
    "MAX_STRING", "MAX_ITEMS", "MAX_EVAL_WORK", "MAX_REPEAT", "MAX_NODES", "MAX_ID_LENGTH", "MAX_BUILD_WORK",
    "MAX_MODULES", "MAX_ELEMENTS", "MAX_DRY_RUN_SIDE", "structure_problem",
]

#: bytes of one spec file (and of each file in its ``extends`` chain)
MAX_SPEC_BYTES = 1 << 20
#: YAML nodes of one document (or mapping / override value) with aliases expanded: refuses "billion laughs"
MAX_DOCUMENT_NODES = 100_000
#: nesting depth of mappings and lists in a document (and of a value given as an override)
MAX_DEPTH = 64
#: length of an ``extends`` chain
MAX_EXTENDS = 16
#: characters of one expression
MAX_EXPRESSION_LENGTH = 500
#: bits of an integer value made or used by an expression (|n| < 2**128)
MAX_INT_BITS = 128
#: characters of a string value made by an expression or a template
MAX_STRING = 10_000
#: elements of a list value made by an expression (counted through nested lists)
MAX_ITEMS = 10_000
#: work units of one expression evaluation (one per syntax node evaluated and per element of each value made)
MAX_EVAL_WORK = 100_000
#: iterations of one ``repeat``
MAX_REPEAT = 10_000
#: nodes of a graph after expansion, sub-graphs included
MAX_NODES = 10_000
#: characters of a node id or graph input name
MAX_ID_LENGTH = 200
#: work units of expanding a spec (repeat iterations, templates rendered, argument values evaluated)
MAX_BUILD_WORK = 5_000_000
#: modules created while building one model
MAX_MODULES = 20_000
#: tensor elements (parameters, buffers, temporaries) allocated while building one model: 2**27, 512 MiB of
#: float32 (the largest SR networks have about 45M parameters)
MAX_ELEMENTS = 1 << 27
#: largest side of ``dry_run_size`` (LR pixels)
MAX_DRY_RUN_SIDE = 4096


def structure_problem(value: Any, *, max_nodes: int = MAX_DOCUMENT_NODES, max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``value`` (parsed YAML: mappings, lists, scalars) is too big to process, or None when it is not.

    Counts every mapping, list, key and scalar as one node, entering shared (aliased) objects each time they occur,
    and stops as soon as a limit is passed, so the check costs at most ``max_nodes`` steps even for self-referencing
    values or alias bombs.
    """
    too_large = (f"the document is too large: more than {max_nodes:,} values with aliases expanded "
                 "(a YAML alias bomb?)")
    count = 0
    open_ids: set[int] = set()  # containers on the path from the root: meeting one again is a cycle
    stack: list[tuple[Any, int, bool]] = [(value, 0, False)]
    while stack:
        item, depth, leaving = stack.pop()
        if leaving:
            open_ids.discard(id(item))
            continue
        count += 1
        if count > max_nodes:
            return too_large
        if isinstance(item, (str, bytes, bytearray)):
            if len(item) > MAX_SPEC_BYTES:
                return f"a string of {len(item):,} characters (more than {MAX_SPEC_BYTES:,})"
            continue
        if isinstance(item, range):
            count += len(item)
            if count > max_nodes:
                return too_large
            continue
        if isinstance(item, (Iterator, Generator)):
            return f"the document holds an iterator ({type(item).__name__}), not a list"
        if isinstance(item, (Mapping, list, tuple, set, frozenset, collections.deque)) and item:
            if id(item) in open_ids:
                return "the document refers to itself (a container inside itself)"
            if depth >= max_depth:
                return f"the document is nested more than {max_depth} levels deep"
            children = list(item.values()) if isinstance(item, Mapping) else list(item)
            count += len(item) if isinstance(item, Mapping) else 0
            if count + len(children) > max_nodes * 2:
                return too_large
            open_ids.add(id(item))
            stack.append((item, depth, True))
            stack.extend((v, depth + 1, False) for v in children)
    return None


def int_digits(value: int) -> int:
    """Approximate decimal digits of an integer (without printing it)."""
    return int(value.bit_length() * math.log10(2)) + 1
