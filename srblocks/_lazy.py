"""Lazy package attributes (PEP 562): a package's public names are imported on first use, not at ``import``.

``import srblocks`` and ``srblocks --help`` then cost milliseconds instead of the seconds torch, optuna and timm take
to import; ``srblocks.build_model`` (or ``from srblocks import build_model``) imports what it needs the first time.
Submodules (``srblocks.blocks``) are found the same way, as if the package had imported them.

A public function named like the submodule that defines it (``srblocks.profile``, ``srblocks.train``,
``srblocks.deploy``, ``srblocks.evaluate``) stays the function: importing a submodule makes Python bind it on its
package, which would hide the function, so the package's module class binds the function instead (what the eager
``from .profile import profile`` used to do).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any, Callable, Mapping

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each public name to the submodule (relative,
    e.g. ``".build"``) that defines it. A resolved name is cached on the package, so the hook runs once per name."""

    def __getattr__(name: str) -> Any:
        module = sys.modules[package]
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
        elif not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    module = sys.modules[package]
    module.__class__ = _LazyPackage
    module._lazy_exports = dict(exports)  # type: ignore[attr-defined]
    return __getattr__, __dir__


class _LazyPackage(types.ModuleType):
    """A package whose exported name ``x`` defined in submodule ``.x`` is not replaced by that submodule."""

    def __setattr__(self, name: str, value: Any) -> None:
        exports = self.__dict__.get("_lazy_exports", {})
        if (exports.get(name) == f".{name}" and isinstance(value, types.ModuleType)
                and value.__name__ == f"{self.__name__}.{name}" and hasattr(value, name)):
            value = getattr(value, name)
        super().__setattr__(name, value)
