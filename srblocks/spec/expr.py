"""A small, safe evaluator for arithmetic in specs (``3 * scale ** 2``, ``patch_sizes[i]``, ``int(dim * 1.5)``).

Python's ``eval`` is never used: the expression is parsed with :mod:`ast` and only numbers, strings, booleans, None,
variable names, lists/tuples, subscripts, arithmetic (+ - * / // % **), comparisons, ``and``/``or``/``not``,
conditional expressions and the functions ``int float round min max abs len`` are allowed. Exponents are bounded so a
spec cannot make the evaluator hang.
"""

from __future__ import annotations

import ast
import operator
from typing import Any, Mapping

__all__ = ["ExpressionError", "evaluate", "render_template"]

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
_FUNCTIONS = {"int": int, "float": float, "round": round, "min": min, "max": max, "abs": abs, "len": len}
_MAX_EXPONENT = 64
_MAX_LENGTH = 500


class ExpressionError(ValueError):
    """An expression that does not parse, uses something not allowed, or fails to evaluate."""


def evaluate(expression: str, variables: Mapping[str, Any]) -> Any:
    """Evaluate ``expression`` with ``variables`` in scope; raises :class:`ExpressionError` naming the problem."""
    if len(expression) > _MAX_LENGTH:
        raise ExpressionError(f"expression longer than {_MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse expression {expression!r}: {exc.msg}") from None
    try:
        return _eval(tree.body, variables)
    except ExpressionError as exc:
        raise ExpressionError(f"in expression {expression!r}: {exc}") from None
    except (ArithmeticError, TypeError, ValueError, IndexError, KeyError) as exc:
        raise ExpressionError(f"in expression {expression!r}: {type(exc).__name__}: {exc}") from None


def _eval(node: ast.AST, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        known = ", ".join(sorted(env)) or "none"
        raise ExpressionError(f"unknown variable {node.id!r} (known: {known})")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left, env), _eval(node.right, env)
        if isinstance(node.op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > _MAX_EXPONENT:
            raise ExpressionError(f"exponent {right} is too large")
        if isinstance(node.op, (ast.Mult, ast.Pow)) and (isinstance(left, (str, list)) or isinstance(right, (str, list))):
            raise ExpressionError("repetition of strings or lists is not allowed")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, env))
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, env) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = _eval(node.left, env)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, env)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body, env) if _eval(node.test, env) else _eval(node.orelse, env)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, env) for e in node.elts]
    if isinstance(node, ast.Subscript):
        return _eval(node.value, env)[_eval(node.slice, env)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords:
            raise ExpressionError("keyword arguments are not allowed in function calls")
        return _FUNCTIONS[node.func.id](*(_eval(a, env) for a in node.args))
    raise ExpressionError(f"{type(node).__name__} is not allowed (only arithmetic on numbers and variables)")


def render_template(template: str, variables: Mapping[str, Any]) -> str:
    """Replace each ``{expression}`` in ``template`` by its value (``"feats.{i}"`` -> ``"feats.3"``)."""
    out, pos = [], 0
    while True:
        start = template.find("{", pos)
        if start < 0:
            out.append(template[pos:])
            return "".join(out)
        end = template.find("}", start)
        if end < 0:
            raise ExpressionError(f"unclosed '{{' in {template!r}")
        out.append(template[pos:start])
        value = evaluate(template[start + 1 : end], variables)
        out.append(str(value))
        pos = end + 1
