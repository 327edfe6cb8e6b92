"""A small, safe evaluator for arithmetic in specs (``3 * scale ** 2``, ``patch_sizes[i]``, ``int(dim * 1.5)``).

Python's ``eval`` is never used: the expression is parsed with :mod:`ast` and only numbers, strings, booleans, None,
variable names, lists/tuples, subscripts, arithmetic (+ - * / // % **), comparisons, ``and``/``or``/``not``,
conditional expressions and the functions ``int float round min max abs len`` are allowed.

Every value is bounded where it is made, so no expression can hang or exhaust memory (limits in
:mod:`srblocks.spec.limits`): integers have at most :data:`~srblocks.spec.limits.MAX_INT_BITS` bits (a power whose
result would be larger is refused before it is computed), floats are finite, strings have at most
:data:`~srblocks.spec.limits.MAX_STRING` characters, lists at most :data:`~srblocks.spec.limits.MAX_ITEMS` elements
(through nested lists), and one evaluation does at most :data:`~srblocks.spec.limits.MAX_EVAL_WORK` units of work.
"""

from __future__ import annotations

import ast
import math
import numbers
import operator
from typing import Any, Callable, Mapping

from ..errors import SrblocksError, brief
from .limits import MAX_EVAL_WORK, MAX_EXPRESSION_LENGTH, MAX_INT_BITS, MAX_ITEMS, MAX_STRING, int_digits

__all__ = ["ExpressionError", "evaluate", "render_template", "check_value"]

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_MAX_EXPONENT = 64
_MAX_LENGTH = MAX_EXPRESSION_LENGTH
_MAX_ROUND_DIGITS = 64
_MAX_NESTING = 100


def _too_deep(tree: ast.AST, limit: int) -> bool:
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return False


def _round(value: Any, ndigits: Any = None) -> Any:
    if ndigits is not None and isinstance(ndigits, int) and abs(ndigits) > _MAX_ROUND_DIGITS:
        raise ExpressionError(f"round() to {ndigits} digits (at most {_MAX_ROUND_DIGITS})")
    return round(value) if ndigits is None else round(value, ndigits)


_FUNCTIONS: dict[str, Callable[..., Any]] = {"int": int, "float": float, "round": _round, "min": min, "max": max,
                                             "abs": abs, "len": len}


class ExpressionError(SrblocksError, ValueError):
    """An expression that does not parse, uses something not allowed, or fails to evaluate."""


def check_value(value: Any, work: list[int] | None = None) -> Any:
    """``value`` if it is within the limits of expression values (see module docstring), else ExpressionError.

    ``work`` is a one-element budget of remaining work units, charged one unit per element inspected."""
    _check(value, work if work is not None else [MAX_EVAL_WORK * 10], 0)
    return value


def _check(value: Any, work: list[int], depth: int) -> int:
    """Element count of ``value``; raises when a limit is passed."""
    work[0] -= 1
    if work[0] < 0:
        raise ExpressionError(f"the expression does too much work (more than {MAX_EVAL_WORK:,} steps)")
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise ExpressionError(f"integer of about {int_digits(value)} digits is too large (the limit is "
                                  f"2**{MAX_INT_BITS})")
        return 1
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionError(f"the value {value!r} is not a finite number")
        return 1
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ExpressionError(f"string of {len(value):,} characters is too long (the limit is {MAX_STRING:,})")
        work[0] -= len(value) // 64
        return 1
    if isinstance(value, (list, tuple, dict)):
        if depth > 32:
            raise ExpressionError("a value nested more than 32 levels deep")
        items = value.values() if isinstance(value, dict) else value
        total = 1
        for item in items:
            total += _check(item, work, depth + 1)
            if total > MAX_ITEMS:
                raise ExpressionError(f"a list of more than {MAX_ITEMS:,} elements (counted through nested lists)")
        return total
    if isinstance(value, complex):
        raise ExpressionError(f"the result {brief(value)} is a complex number")
    if isinstance(value, numbers.Real):  # numpy scalars given as overrides
        return _check(int(value) if isinstance(value, numbers.Integral) else float(value), work, depth)
    raise ExpressionError(f"a value of type {type(value).__name__} cannot be used in an expression (numbers, "
                          "strings, booleans, None, lists and mappings can)")


def evaluate(expression: str, variables: Mapping[str, Any]) -> Any:
    """Evaluate ``expression`` with ``variables`` in scope; raises :class:`ExpressionError` naming the problem."""
    if not isinstance(expression, str):
        raise ExpressionError(f"an expression must be a string, got {brief(expression)}")
    if len(expression) > _MAX_LENGTH:
        raise ExpressionError(f"expression longer than {_MAX_LENGTH} characters: {brief(expression)}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse expression {brief(expression)}: {exc.msg}") from None
    except (ValueError, MemoryError, RecursionError) as exc:  # null bytes, parser limits
        raise ExpressionError(f"cannot parse expression {brief(expression)}: {type(exc).__name__}") from None
    if _too_deep(tree, _MAX_NESTING):
        raise ExpressionError(f"expression nested more than {_MAX_NESTING} levels deep: {brief(expression)}")
    work = [MAX_EVAL_WORK]
    try:
        return _eval(tree.body, variables, work)
    except ExpressionError as exc:
        raise ExpressionError(f"in expression {brief(expression)}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any failure on the spec's values is the expression's
        raise ExpressionError(f"in expression {brief(expression)}: {type(exc).__name__}: "
                              f"{_message(exc)}") from None


def _message(exc: BaseException) -> str:
    try:
        return brief(str(exc), 200)[1:-1]
    except Exception:  # noqa: BLE001 - a message that cannot be printed
        return ""


def _eval(node: ast.AST, env: Mapping[str, Any], work: list[int]) -> Any:
    """One syntax node: its value, checked against the limits (one work unit plus the size of the value)."""
    work[0] -= 1
    return check_value(_eval_node(node, env, work), work)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, complex)


def _eval_node(node: ast.AST, env: Mapping[str, Any], work: list[int]) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        known = ", ".join(sorted(map(str, env))) or "none"
        raise ExpressionError(f"unknown variable {brief(node.id)} (known: {brief(known, 300)[1:-1]})")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left, env, work), _eval(node.right, env, work)
        if isinstance(node.op, (ast.Mult, ast.Pow)) and (isinstance(left, (str, list)) or isinstance(right, (str, list))):
            raise ExpressionError("repetition of strings or lists is not allowed")
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        if isinstance(node.op, ast.Mod) and not (_is_number(left) and _is_number(right)):
            raise ExpressionError("% takes numbers (string formatting is not allowed)")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, env, work))
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, env, work) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = _eval(node.left, env, work)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, env, work)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body, env, work) if _eval(node.test, env, work) else _eval(node.orelse, env, work)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, env, work) for e in node.elts]
    if isinstance(node, ast.Subscript):
        container, index = _eval(node.value, env, work), _eval(node.slice, env, work)
        if not isinstance(container, (list, tuple, str, dict)):
            raise ExpressionError(f"{type(container).__name__} values cannot be indexed")
        return container[index]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords:
            raise ExpressionError("keyword arguments are not allowed in function calls")
        return _FUNCTIONS[node.func.id](*(_eval(a, env, work) for a in node.args))
    raise ExpressionError(f"{type(node).__name__} is not allowed (only arithmetic on numbers and variables)")


def _check_power(base: Any, exponent: Any) -> None:
    """Refuse a power whose result would pass the integer limit, before computing it."""
    if _is_number(exponent) and abs(exponent) > _MAX_EXPONENT:
        raise ExpressionError(f"exponent {brief(exponent)} is too large")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
            raise ExpressionError(f"the power {brief(base)} ** {exponent} is too large (the limit is "
                                  f"2**{MAX_INT_BITS})")


def render_template(template: str, variables: Mapping[str, Any]) -> str:
    """Replace each ``{expression}`` in ``template`` by its value (``"feats.{i}"`` -> ``"feats.3"``).

    The result has at most :data:`~srblocks.spec.limits.MAX_STRING` characters."""
    if not isinstance(template, str):
        raise ExpressionError(f"expected a string, got {brief(template)}")
    out, pos, size = [], 0, 0
    while True:
        start = template.find("{", pos)
        if start < 0:
            out.append(template[pos:])
            size += len(template) - pos
            break
        end = template.find("}", start)
        if end < 0:
            raise ExpressionError(f"unclosed '{{' in {brief(template)}")
        out.append(template[pos:start])
        value = evaluate(template[start + 1 : end], variables)
        text = _short_str(value)
        out.append(text)
        size += start - pos + len(text)
        if size > MAX_STRING:
            break
        pos = end + 1
    if size > MAX_STRING:
        raise ExpressionError(f"the template {brief(template)} gives more than {MAX_STRING:,} characters")
    return "".join(out)


def _short_str(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        text = brief(value, MAX_STRING + 1)
        return text if len(text) <= MAX_STRING else text + "..."
    return str(value)
