"""Errors raised for bad user input; each names the file, the YAML path and the node where the problem is."""

from __future__ import annotations

__all__ = ["SpecError"]


class SpecError(ValueError):
    """A spec that cannot become a model. ``str()`` reads ``source: yaml.path: node 'id': message``."""

    def __init__(self, message: str, *, source: str | None = None, path: str | None = None, node: str | None = None):
        self.message, self.source, self.path, self.node = message, source, path, node
        super().__init__(self._format())

    def _format(self) -> str:
        where = [w for w in (self.source, self.path, f"node {self.node!r}" if self.node else None) if w]
        return ": ".join([*where, self.message])

    def located(self, *, source: str | None = None, path: str | None = None) -> "SpecError":
        """The same error with a source/path filled in where it was missing (for nested specs)."""
        return SpecError(
            self.message, source=self.source or source, path=self.path or path, node=self.node
        )
