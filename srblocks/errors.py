"""Errors raised for bad user input; each names the file, the YAML path and the node where the problem is.

Every failure caused by user input (a spec, variable overrides, a checkpoint, an image, a command-line argument) is
an :class:`SrblocksError`; the command line prints it in one or two lines and exits with status 2. Messages never
embed a user value unbounded: :func:`brief` is the one way a value enters a message (a short, truncated repr that
is safe for huge integers, long strings, deep or self-referencing containers), and :class:`SpecError` clips its
whole text to :data:`MAX_MESSAGE` characters.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pydantic

__all__ = ["SrblocksError", "SpecError", "NonFiniteError", "brief", "clip", "format_pydantic_error", "MAX_MESSAGE"]

#: longest error message (characters); longer ones are cut in the middle
MAX_MESSAGE = 2000
#: default length of one value in a message
BRIEF = 80


class SrblocksError(Exception):
    """Base class of errors caused by user input (specs, overrides, checkpoints, images, CLI arguments)."""


class SpecError(SrblocksError, ValueError):
    """A spec that cannot become a model. ``str()`` reads ``source: yaml.path: node 'id': message``."""

    def __init__(self, message: str, *, source: str | None = None, path: str | None = None, node: str | None = None):
        self.message, self.source, self.path, self.node = message, source, path, node
        super().__init__(self._format())

    def _format(self) -> str:
        where = [clip(str(w), 300) for w in (self.source, self.path) if w]
        if self.node:
            where.append(f"node {brief(self.node)}")
        return clip(": ".join([*where, self.message]), MAX_MESSAGE)

    def located(self, *, source: str | None = None, path: str | None = None) -> "SpecError":
        """The same error with a source/path filled in where it was missing (for nested specs)."""
        return SpecError(
            self.message, source=self.source or source, path=self.path or path, node=self.node
        )


class NonFiniteError(SrblocksError, ValueError):
    """NaN or infinite numbers where finite ones are required (checkpoint weights, a model's output)."""


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and end around ``...``."""
    if len(text) <= limit:
        return text
    head = max(1, (limit - 5) * 2 // 3)
    tail = max(0, limit - 5 - head)
    return f"{text[:head]} ... {text[len(text) - tail:]}" if tail else f"{text[:head]} ..."


def brief(value: Any, limit: int = BRIEF) -> str:
    """A repr of ``value`` of at most ``limit`` characters, cheap whatever the value is.

    Huge integers are described by their number of digits (Python refuses to print more than 4300), long strings
    and containers are cut (``...``), containers are entered at most 3 levels deep (self-references and YAML alias
    bombs cost nothing), tensors and arrays show their type, shape and dtype.
    """
    out: list[str] = []
    _brief(value, out, [limit + 4], 0)
    text = "".join(out)
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def _brief(value: Any, out: list[str], budget: list[int], depth: int) -> None:
    if budget[0] <= 0:
        return
    text = _scalar(value, budget[0])
    if text is None:
        if isinstance(value, dict):
            opening, closing, items = "{", "}", value.items()
        elif isinstance(value, (list, tuple, set, frozenset)):
            opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")") if isinstance(
                value, tuple) else ("{", "}")
            items = value
        else:
            text = _other(value)
        if text is None:
            if depth >= 3:
                text = f"{opening}...{closing}" if len(value) else f"{opening}{closing}"
            else:
                _emit(opening, out, budget)
                for k, item in enumerate(items):
                    if budget[0] <= 0:
                        return
                    if k:
                        _emit(", ", out, budget)
                    if isinstance(value, dict):
                        _brief(item[0], out, budget, depth + 1)
                        _emit(": ", out, budget)
                        _brief(item[1], out, budget, depth + 1)
                    else:
                        _brief(item, out, budget, depth + 1)
                _emit(closing, out, budget)
                return
    _emit(text, out, budget)


def _emit(text: str, out: list[str], budget: list[int]) -> None:
    out.append(text[: max(0, budget[0])])
    budget[0] -= len(text)


def _scalar(value: Any, room: int) -> str | None:
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        bits = value.bit_length()
        if bits > 256:
            digits = int(bits * math.log10(2)) + 1
            return f"<{'-' if value < 0 else ''}int of about {digits} digits>"
        return repr(value)
    if isinstance(value, (str, bytes)):
        n = max(8, room)
        if len(value) <= n:
            return repr(value)
        r = repr(value[:n])
        return f"{r[:-1]}...{r[-1]}"
    return None


def _other(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        try:
            return f"<{type(value).__name__} of shape {tuple(shape)}, {value.dtype}>"
        except Exception:  # noqa: BLE001 - a description is best effort
            return f"<{type(value).__name__}>"
    module = type(value).__module__ or ""
    if module.startswith(("torch", "srblocks")):
        return f"<{type(value).__name__}>"
    try:
        return clip(repr(value), 200)
    except Exception:  # noqa: BLE001 - a description is best effort
        return f"<{type(value).__name__}>"


def format_pydantic_error(err: "pydantic.ValidationError", prefix: str = "") -> tuple[str, str]:
    """(YAML path of the first problem, message listing the problems) for a pydantic validation error.

    Values are shown with :func:`~srblocks.errors.brief` (bounded); at most 8 problems are listed."""
    problems, first_path = [], None
    errors = err.errors()
    for e in errors[:8]:
        loc = ".".join(clip(str(p), 60) if not isinstance(p, int) else f"[{p}]" for p in e["loc"]).replace(".[", "[")
        full = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        first_path = first_path or full
        value = f" (got {brief(e['input'])})" if e["type"] not in ("missing",) and not isinstance(e["input"], dict) \
            else ""
        problems.append(f"{loc or full or '<root>'}: {clip(str(e['msg']), 300)}{value}")
    if len(errors) > 8:
        problems.append(f"and {len(errors) - 8} more problem(s)")
    return first_path or prefix, "; ".join(problems)
