"""Finding, reading and validating spec files: a path, a shipped spec name (``"safmn"``) or a mapping."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import pydantic
import yaml

from ..errors import SpecError, brief, clip, format_pydantic_error
from .limits import MAX_DEPTH, MAX_DOCUMENT_NODES, MAX_EXTENDS, MAX_SPEC_BYTES, structure_problem
from .schema import ArchSpec

__all__ = ["LoadedSpec", "load_spec", "shipped_spec_names", "shipped_spec_path", "format_pydantic_error",
           "read_yaml_file", "parse_yaml", "close_names", "validated_spec"]


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec, where it came from (file path or ``<mapping>``) and its raw YAML mapping."""

    spec: ArchSpec
    source: str
    raw: Mapping[str, Any]


def _spec_dir() -> Path:
    return Path(str(resources.files("srblocks.arch_specs")))


def shipped_spec_names() -> list[str]:
    """Names of the specs shipped with the package (``arch_specs/*.yaml`` without the extension)."""
    return sorted(p.stem for p in _spec_dir().glob("*.yaml"))


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for names the OS refuses (too long, embedded NUL, ...) instead of an exception."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def close_names(name: str, options: Iterable[str], n: int = 3, cutoff: float = 0.5) -> list[str]:
    """The closest ``options`` to ``name`` (difflib), cheap for any input: long names get no suggestions."""
    if not isinstance(name, str) or len(name) > 100:
        return []
    candidates = [o for o in options if isinstance(o, str) and len(o) <= 100]
    return difflib.get_close_matches(name, candidates[:5000], n=n, cutoff=cutoff)


def shipped_spec_path(name: str) -> Path:
    """Path of a shipped spec by name; unknown names raise :class:`SpecError` with the closest names."""
    path = _spec_dir() / f"{name}.yaml"
    if "/" in name or "\\" in name or not _is_file(path):
        close = close_names(name, shipped_spec_names(), cutoff=0.4)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise SpecError(f"no such spec file or shipped spec name {brief(name)}{hint}")
    return path


def _file_key(path: Path) -> str:
    """The identity of a spec file in an ``extends`` chain: its resolved absolute path."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError, ValueError):
        return str(path.absolute())


def read_yaml_file(path: Path, origin: str, *, what: str = "spec") -> Any:
    """Parse a YAML file within the limits: at most :data:`~.limits.MAX_SPEC_BYTES` bytes, and a document of at
    most :data:`~.limits.MAX_DOCUMENT_NODES` values with aliases expanded and :data:`~.limits.MAX_DEPTH` levels."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read {what}: {_os_reason(exc)}", source=origin) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"the {what} file is larger than {MAX_SPEC_BYTES:,} bytes", source=origin)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"cannot read {what}: not UTF-8 text ({exc.reason} at byte {exc.start})", source=origin) \
            from None
    return parse_yaml(text, origin)


def parse_yaml(text: str, origin: str) -> Any:
    """``yaml.safe_load(text)`` after a linear scan of its events that refuses alias bombs and deep nesting."""
    try:
        problem = _scan_events(text)
        if problem is None:
            value = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (libyaml's when available)
            problem = structure_problem(value)  # merge keys (<<) can still expand a document
            if problem is None:
                return value
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {clip(str(exc), 600)}", source=origin) from None
    except (ValueError, TypeError, OverflowError, MemoryError, RecursionError) as exc:  # constructor failures
        raise SpecError(f"invalid YAML: {type(exc).__name__}: {clip(str(exc), 300)}", source=origin) from None
    raise SpecError(problem, source=origin)


#: the YAML loader of spec files: PyYAML's safe loader, with libyaml's parser when it is installed (same values)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _scan_events(text: str) -> str | None:
    """Why a YAML text is too big to load (expanded size or depth), from its parser events, or None."""
    total = 0
    stack: list[list[Any]] = []  # [anchor, expanded size, height] of each open collection
    anchors: dict[str, tuple[int, int]] = {}
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
            if isinstance(event, yaml.ScalarEvent):
                size, height = 1, 0
                if event.anchor:
                    anchors[event.anchor] = (1, 0)
            else:
                if any(entry[0] == event.anchor for entry in stack):
                    return f"the document refers to itself (alias *{clip(str(event.anchor), 40)} inside its anchor)"
                size, height = anchors.get(event.anchor, (1, 0))
            total += size
            if stack:
                stack[-1][1] += size
                stack[-1][2] = max(stack[-1][2], height + 1)
            if len(stack) + height > MAX_DEPTH:
                return f"the document is nested more than {MAX_DEPTH} levels deep"
        elif isinstance(event, yaml.CollectionStartEvent):
            total += 1
            stack.append([event.anchor, 1, 1])
            if len(stack) > MAX_DEPTH:
                return f"the document is nested more than {MAX_DEPTH} levels deep (line {event.start_mark.line + 1})"
        elif isinstance(event, yaml.CollectionEndEvent) and stack:
            anchor, size, height = stack.pop()
            if anchor:
                anchors[anchor] = (size, height)
            if stack:
                stack[-1][1] += size
                stack[-1][2] = max(stack[-1][2], height + 1)
        if total > MAX_DOCUMENT_NODES:
            return (f"the document is too large: more than {MAX_DOCUMENT_NODES:,} values with aliases expanded "
                    "(a YAML alias bomb?)")
    return None


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {clip(str(exc), 200)}"


def _merge_with_base(raw: Mapping[str, Any], origin: str, seen: tuple[str, ...]) -> dict[str, Any]:
    """``extends: BASE`` (a shipped name or a path relative to this file): the base spec with this file's keys on top.

    Top-level keys replace the base's, except ``variables``, which are merged (this file's values win, the base's
    order is kept so later defaults can use earlier ones). Paths are resolved before the cycle check, so
    ``../d/p.yaml`` and ``p.yaml`` are the same file; chains are at most :data:`~.limits.MAX_EXTENDS` long.
    """
    base_ref = raw["extends"]
    if not isinstance(base_ref, str) or not base_ref:
        raise SpecError(f"extends must be a spec name or path, got {brief(base_ref)}", source=origin, path="extends")
    if "\0" in base_ref or len(base_ref) > 1024:
        raise SpecError(f"extends {brief(base_ref)} is not a valid spec name or path", source=origin, path="extends")
    relative = Path(origin).parent / base_ref if not origin.startswith("<") else Path(base_ref)
    target: str | Path = relative if _is_file(relative) else base_ref
    if len(seen) >= MAX_EXTENDS:
        raise SpecError(f"extends chain longer than {MAX_EXTENDS} files", source=origin, path="extends")
    try:
        base = load_spec(target, _seen=seen)  # checks the resolved file against the chain (cycles)
    except SpecError as exc:
        raise SpecError(f"in base spec {brief(base_ref)}: {exc}", source=origin, path="extends") from None
    merged = dict(base.raw)
    for key, value in raw.items():
        if key == "variables" and isinstance(value, Mapping):
            base_vars = base.raw.get("variables", {})
            merged["variables"] = {**(dict(base_vars) if isinstance(base_vars, Mapping) else {}), **value}
        else:
            merged[key] = value
    return merged


def load_spec(source: str | Path | Mapping[str, Any] | ArchSpec, *, _seen: tuple[str, ...] = ()) -> LoadedSpec:
    """Read and validate a spec.

    ``source`` is an :class:`ArchSpec`, a mapping (already-parsed YAML), a path to a YAML file, or the name of a
    shipped spec (``"safmn"``, ``"fmen_s"``). Errors are :class:`SpecError` naming the file and YAML path. Files and
    mappings are checked against the limits of :mod:`srblocks.spec.limits` before anything else reads them.
    """
    if isinstance(source, ArchSpec):
        return LoadedSpec(source, f"<spec {source.name}>", source.model_dump(exclude_unset=True))
    if isinstance(source, Mapping):
        raw, origin = dict(source), "<mapping>"
        problem = structure_problem(raw)
        if problem:
            raise SpecError(problem, source=origin)
        key = None
    else:
        if not isinstance(source, (str, Path)):
            raise SpecError(f"a spec is a file path, a shipped spec name or a mapping, got {brief(source)}")
        if isinstance(source, str) and ("\0" in source or len(source) > 4096):
            raise SpecError(f"no such spec file or shipped spec name {brief(source)}")
        path = Path(source)
        if not _is_file(path):
            if path.suffix in (".yaml", ".yml") and not _exists(path):
                candidate = _spec_dir() / path.name  # "arch_specs/safmn.yaml" from any working directory
                if _is_file(candidate) and path.parent.name == "arch_specs":
                    path = candidate
                else:
                    raise SpecError(f"spec file {brief(str(source), 300)} not found")
            else:
                path = shipped_spec_path(str(source))
        origin = str(path)
        key = _file_key(path)
        if key in _seen:
            chain = " -> ".join([*_seen[_seen.index(key):], key])
            raise SpecError(f"extends cycle: {clip(chain, 600)}", source=origin)
        raw = read_yaml_file(path, origin)
    if not isinstance(raw, Mapping):
        raise SpecError(f"a spec must be a YAML mapping, got {type(raw).__name__}", source=origin)
    if "extends" in raw and raw["extends"] is not None:
        raw = _merge_with_base(raw, origin, (*_seen, key) if key else _seen)
    return validated_spec(raw, origin)


def validated_spec(raw: Mapping[str, Any], origin: str) -> LoadedSpec:
    """``raw`` (a parsed spec mapping, ``extends`` already merged) validated as an :class:`ArchSpec`; a
    :class:`SpecError` naming ``origin`` and the YAML path of the first problem otherwise."""
    try:
        spec = ArchSpec.model_validate(raw)
    except pydantic.ValidationError as exc:
        where, message = format_pydantic_error(exc)
        raise SpecError(message, source=origin, path=where) from None
    return LoadedSpec(spec, origin, raw)
