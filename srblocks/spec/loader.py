"""Finding, reading and validating spec files: a path, a shipped spec name (``"safmn"``) or a mapping."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import pydantic
import yaml

from ..errors import SpecError
from .schema import ArchSpec

__all__ = ["LoadedSpec", "load_spec", "shipped_spec_names", "shipped_spec_path", "format_pydantic_error"]


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


def shipped_spec_path(name: str) -> Path:
    """Path of a shipped spec by name; unknown names raise :class:`SpecError` with the closest names."""
    path = _spec_dir() / f"{name}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(name, shipped_spec_names(), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise SpecError(f"no such spec file or shipped spec name {name!r}{hint}")
    return path


def format_pydantic_error(err: pydantic.ValidationError, prefix: str = "") -> tuple[str, str]:
    """(YAML path of the first problem, message listing every problem) for a pydantic validation error."""
    problems, first_path = [], None
    for e in err.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e["loc"]).replace(".[", "[")
        full = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        first_path = first_path or full
        value = f" (got {e['input']!r})" if e["type"] not in ("missing",) and not isinstance(e["input"], dict) else ""
        problems.append(f"{loc or full or '<root>'}: {e['msg']}{value}")
    return first_path or prefix, "; ".join(problems)


def _merge_with_base(raw: Mapping[str, Any], origin: str, seen: tuple[str, ...]) -> dict[str, Any]:
    """``extends: BASE`` (a shipped name or a path relative to this file): the base spec with this file's keys on top.

    Top-level keys replace the base's, except ``variables``, which are merged (this file's values win, the base's
    order is kept so later defaults can use earlier ones).
    """
    base_ref = raw["extends"]
    if not isinstance(base_ref, str):
        raise SpecError(f"extends must be a spec name or path, got {base_ref!r}", source=origin, path="extends")
    relative = Path(origin).parent / base_ref if not origin.startswith("<") else Path(base_ref)
    target: str | Path = relative if relative.is_file() else base_ref
    if str(target) in seen:
        raise SpecError(f"extends cycle: {' -> '.join([*seen, str(target)])}", source=origin, path="extends")
    try:
        base = load_spec(target, _seen=(*seen, str(target)))
    except SpecError as exc:
        raise SpecError(f"in base spec {base_ref!r}: {exc}", source=origin, path="extends") from None
    merged = dict(base.raw)
    for key, value in raw.items():
        if key == "variables" and isinstance(value, Mapping):
            merged["variables"] = {**dict(base.raw.get("variables", {})), **value}
        else:
            merged[key] = value
    return merged


def load_spec(source: str | Path | Mapping[str, Any] | ArchSpec, *, _seen: tuple[str, ...] = ()) -> LoadedSpec:
    """Read and validate a spec.

    ``source`` is an :class:`ArchSpec`, a mapping (already-parsed YAML), a path to a YAML file, or the name of a
    shipped spec (``"safmn"``, ``"fmen_s"``). Errors are :class:`SpecError` naming the file and YAML path.
    """
    if isinstance(source, ArchSpec):
        return LoadedSpec(source, f"<spec {source.name}>", source.model_dump(exclude_unset=True))
    if isinstance(source, Mapping):
        raw, origin = dict(source), "<mapping>"
    else:
        path = Path(source)
        if not path.is_file():
            if path.suffix in (".yaml", ".yml") and not path.exists():
                candidate = _spec_dir() / path.name  # "arch_specs/safmn.yaml" from any working directory
                if candidate.is_file() and path.parent.name == "arch_specs":
                    path = candidate
                else:
                    raise SpecError(f"spec file {str(source)!r} not found")
            else:
                path = shipped_spec_path(str(source))
        origin = str(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SpecError(f"invalid YAML: {exc}", source=origin) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"cannot read spec: {exc}", source=origin) from None
    if not isinstance(raw, Mapping):
        raise SpecError(f"a spec must be a YAML mapping, got {type(raw).__name__}", source=origin)
    if "extends" in raw:
        raw = _merge_with_base(raw, origin, _seen)
    try:
        spec = ArchSpec.model_validate(raw)
    except pydantic.ValidationError as exc:
        where, message = format_pydantic_error(exc)
        raise SpecError(message, source=origin, path=where) from None
    return LoadedSpec(spec, origin, raw)
