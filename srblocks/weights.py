"""Loading checkpoints: official state_dicts (through the spec's key mapping) and our own files.

Accepted files: PyTorch files read with ``torch.load(..., weights_only=True)`` and ``.safetensors``. Wrappers
(``params_ema``, ``params``, ``state_dict``, ``model``, ``net``, ``netG``) are unwrapped (at most
:data:`MAX_WRAPPERS` levels; a checkpoint that contains itself is an error) and a leading ``module.`` (DataParallel)
prefix is stripped. Loading is strict: any missing, unexpected or mis-shaped key is an error that lists them, and
weights with NaN or infinite values are refused, naming the tensor (they would evaluate to a meaningless PSNR and
write black images).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .build import model_info
from .errors import SrblocksError, brief, clip

__all__ = ["WeightsError", "read_state_dict", "official_to_model_keys", "model_to_official_keys",
           "has_official_layout", "load_weights", "save_weights", "check_finite"]

WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "netG", "generator")
PREFIXES = ("module.", "netG.", "model.")


#: wrapper levels (``{"params": {"state_dict": ...}}``) unwrapped at most
MAX_WRAPPERS = 8
#: characters of a checkpoint key that the spec's rename patterns are applied to
MAX_KEY_LENGTH = 1000


class WeightsError(SrblocksError, ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message lists the offending keys."""


def _unwrap(obj: Any, origin: str) -> dict[str, torch.Tensor]:
    seen: set[int] = set()
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        if id(obj) in seen or len(seen) >= MAX_WRAPPERS:
            raise WeightsError(f"{origin}: the checkpoint's wrappers ({', '.join(WRAPPER_KEYS)}) "
                               + ("refer to themselves" if id(obj) in seen else
                                  f"are nested more than {MAX_WRAPPERS} levels deep"))
        seen.add(id(obj))
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        else:
            tops = clip(", ".join(brief(k, 40) for k in list(obj)[:8]), 400)
            raise WeightsError(f"{origin}: not a state_dict and no known wrapper key (top-level keys: {tops})")
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{origin}: expected a state_dict mapping, got {type(obj).__name__}")
    bad = next((k for k in obj if not isinstance(k, str)), None)
    if bad is not None:
        raise WeightsError(f"{origin}: state_dict keys must be strings, got {brief(bad)}")
    state = dict(obj)
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A flat state_dict from a file or mapping (unwrapped, ``module.`` stripped, tensors on CPU)."""
    if isinstance(source, Mapping):
        return _unwrap(source, "<state_dict>")
    path = Path(source)
    try:
        found = path.is_file()
    except (OSError, ValueError):
        found = False
    if not found:
        raise WeightsError(f"weights file {brief(str(path), 300)} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one clear error
        raise WeightsError(f"cannot read weights {brief(str(path), 300)}: {type(exc).__name__}: "
                           f"{clip(str(exc).strip().splitlines()[0] if str(exc).strip() else '', 300)}") from None
    return _unwrap(obj, str(path))


def official_to_model_keys(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official keys with the spec's ``official_checkpoint`` regex renames (and drop listed keys)."""
    mapping = model_info(model).spec.official_checkpoint
    try:
        drops = [re.compile(p) for p in mapping.drop]
        renames = [(re.compile(r.pattern), r.replacement) for r in mapping.renames]
    except re.error as exc:
        raise WeightsError(f"the spec's official_checkpoint has an invalid regular expression: {exc}") from None
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if len(key) > MAX_KEY_LENGTH:
            raise WeightsError(f"checkpoint key {brief(key)} is longer than {MAX_KEY_LENGTH} characters")
        if any(d.fullmatch(key) for d in drops):
            continue
        new = key
        for pattern, replacement in renames:
            try:
                new = pattern.sub(replacement, new)
            except (re.error, IndexError) as exc:
                raise WeightsError(f"official_checkpoint rename {brief(pattern.pattern)} -> {brief(replacement)} "
                                   f"fails on key {brief(key)}: {exc}") from None
            if len(new) > MAX_KEY_LENGTH:
                raise WeightsError(f"official_checkpoint renames make key {brief(key)} longer than "
                                   f"{MAX_KEY_LENGTH} characters")
        if new in out:
            raise WeightsError(f"official keys collide after renaming: {brief(key)} -> {brief(new)}")
        out[new] = value
    return out


def has_official_layout(spec: Any) -> bool:
    """Whether ``spec`` (an :class:`~srblocks.spec.schema.ArchSpec`) names an official checkpoint layout.

    By the convention of the shipped specs, ``official_checkpoint.source`` is missing or starts with ``none``
    ("none published", "none verified", "none (...)") when no official implementation stores weights in the layout
    the key map describes; then there are no official key names to write."""
    source = spec.official_checkpoint.source
    return bool(source and source.strip()) and not source.strip().lower().startswith("none")


_REGEX_META = set(".^$*+?{}[]|()")


def _rename_pieces(pattern: str) -> tuple[bool, list[tuple[str, str]], bool] | None:
    """(anchored at start, [("lit", text) | ("grp", regex)], anchored at end) of a rename pattern made only of
    ``^``/``$`` anchors, literal text (``\\.`` style escapes of punctuation) and non-nested capture groups; None for
    anything else (classes, repetitions, alternation outside a group, lookarounds, non-capturing groups)."""
    start = pattern.startswith("^")
    i, n = (1 if start else 0), len(pattern)
    end = n > i and pattern.endswith("$") and not pattern.endswith("\\$")
    n -= 1 if end else 0
    pieces: list[tuple[str, str]] = []
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n or pattern[i + 1].isalnum():
                return None  # \d, \1, \b ... at top level: not literal text
            pieces.append(("lit", pattern[i + 1]))
            i += 2
        elif c == "(":
            if pattern[i + 1: i + 2] == "?":
                return None
            j, depth = i + 1, 1
            while j < n and depth:
                if pattern[j] == "\\":
                    j += 2
                    continue
                if pattern[j] == "[":  # a class inside the group: skip to its end
                    j += 2 if pattern[j + 1: j + 2] in ("]", "^") else 1
                    while j < n and pattern[j] != "]":
                        j += 2 if pattern[j] == "\\" else 1
                elif pattern[j] == "(":
                    return None  # nested groups: their numbering would shift
                elif pattern[j] == ")":
                    depth -= 1
                j += 1
            if depth:
                return None
            pieces.append(("grp", pattern[i + 1: j - 1]))
            i = j
        elif c in _REGEX_META:
            return None
        else:
            pieces.append(("lit", c))
            i += 1
    return start, pieces, end


def _replacement_pieces(replacement: str) -> list[tuple[str, Any]] | None:
    """[("lit", text) | ("ref", group number)] of a ``re.sub`` replacement; None for named groups or escapes."""
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(replacement):
        c = replacement[i]
        if c != "\\":
            out.append(("lit", c))
            i += 1
            continue
        nxt = replacement[i + 1: i + 2]
        if nxt == "\\":
            out.append(("lit", "\\"))
            i += 2
        elif nxt.isdigit() and nxt != "0":
            j = i + 1
            while j < len(replacement) and j < i + 3 and replacement[j].isdigit():
                j += 1
            out.append(("ref", int(replacement[i + 1: j])))
            i = j
        elif nxt == "g":
            m = re.match(r"\\g<(\d+)>", replacement[i:])
            if not m:
                return None
            out.append(("ref", int(m.group(1))))
            i += m.end()
        else:
            return None
    return out


def _invert_rename(pattern: str, replacement: str) -> tuple[re.Pattern[str], str] | None:
    """The rename that undoes ``pattern -> replacement`` (model key -> official key), or None when it cannot be
    derived: the pattern is more than anchors, literal text and capture groups, or a group is not used exactly once
    in the replacement (the official text it matched would be lost)."""
    parsed, repl = _rename_pieces(pattern), _replacement_pieces(replacement)
    if parsed is None or repl is None:
        return None
    start, pieces, end = parsed
    groups = [text for kind, text in pieces if kind == "grp"]
    refs = [g for kind, g in repl if kind == "ref"]
    if sorted(refs) != list(range(1, len(groups) + 1)):
        return None
    inverse_pattern = "^" if start else ""
    for kind, value in repl:
        inverse_pattern += re.escape(value) if kind == "lit" else f"({groups[value - 1]})"
    inverse_pattern += "$" if end else ""
    new_index = {g: k + 1 for k, g in enumerate(refs)}
    inverse_replacement, group = "", 0
    for kind, text in pieces:
        if kind == "lit":
            inverse_replacement += text.replace("\\", "\\\\")
        else:
            group += 1
            inverse_replacement += f"\\g<{new_index[group]}>"
    try:
        return re.compile(inverse_pattern), inverse_replacement
    except re.error:
        return None


def model_to_official_keys(model: nn.Module, state: Mapping[str, torch.Tensor] | None = None
                           ) -> dict[str, torch.Tensor]:
    """The inverse of :func:`official_to_model_keys`: ``model``'s keys renamed to the official implementation's.

    The spec's ``official_checkpoint`` renames are inverted (applied backwards, last first); each must be made of
    anchors, literal text and capture groups, each group used once in its replacement. The result is checked: the
    forward renames map every official key back to its model key, and no model key is reachable from two official
    names (a map that is not one-to-one, e.g. ``upconv1.`` and ``upconv.`` both -> ``upsampler.0.``, cannot say
    which to write). Official keys the spec drops (RCAN's ``sub_mean``/``add_mean``) have no model counterpart
    and are not written.

    Args:
        model: a model from :func:`srblocks.build_model`.
        state: tensors under ``model``'s own keys (default: ``model.state_dict()``).

    Raises:
        WeightsError: the spec names no official layout (:func:`has_official_layout`), or its map cannot be
            inverted; the message names the spec and the rename.
    """
    info = model_info(model)
    spec = info.spec
    if state is None:
        state = model.state_dict()
    if not has_official_layout(spec):
        raise WeightsError(f"spec {spec.name!r} has no official key layout (official_checkpoint.source: "
                           f"{brief(spec.official_checkpoint.source, 120)}); only its own (srblocks) key names exist")
    inverse = []
    for rename in reversed(spec.official_checkpoint.renames):
        inv = _invert_rename(rename.pattern, rename.replacement)
        if inv is None:
            raise WeightsError(f"spec {spec.name!r}: the official_checkpoint rename {brief(rename.pattern)} -> "
                               f"{brief(rename.replacement)} cannot be inverted (only anchors, literal text and "
                               "capture groups each used once in the replacement can)")
        inverse.append(inv)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        sources = sorted({p.sub(r, key) for p, r in inverse if p.search(key)})
        if len(sources) > 1:
            raise WeightsError(f"spec {spec.name!r}: the official key map is not one-to-one: model key "
                               f"{brief(key)} comes from official {clip(' and '.join(map(repr, sources)), 300)}; "
                               "which official name to write is unknown")
        new = key
        for pattern, replacement in inverse:
            new = pattern.sub(replacement, new)
        if new in out:
            raise WeightsError(f"spec {spec.name!r}: model keys collide as official key {brief(new)}")
        out[new] = value
    back = official_to_model_keys(model, out)
    if set(back) != set(state) or any(back[k] is not state[k] for k in state):
        lost = next((k for k in state if k not in back or back[k] is not state[k]), None)
        official = next((o for o, v in out.items() if lost is not None and v is state[lost]), None)
        raise WeightsError(f"spec {spec.name!r}: inverting the official key map is not exact: model key "
                           f"{brief(lost)} -> official {brief(official)} does not map back (it is dropped or "
                           "renamed to another key)")
    return out


def load_weights(
    model: nn.Module, source: str | Path | Mapping[str, Any], *, official: bool = False, strict: bool = True
) -> nn.Module:
    """Load weights into ``model`` in place and return it.

    Args:
        model: a model from :func:`srblocks.build_model` (or any module when ``official`` is False).
        source: a checkpoint path or a state_dict mapping.
        official: the keys are the official implementation's; rename them through the spec's mapping.
        strict: every key must match (names and shapes); errors list the first offending keys.
    """
    state = raw = read_state_dict(source)
    if official:
        state = official_to_model_keys(model, state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:6])}"
                        f"{' ...' if len(unexpected) > 6 else ''}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {'; '.join(mismatched[:4])}")
    if problems:
        origin = "the state_dict" if isinstance(source, Mapping) else str(source)
        hint = _diagnose(model, raw, official)
        raise WeightsError(clip(f"{clip(origin, 300)}: " + (f"{hint}; " if hint else "")
                                + "weights do not fit the model: " + " | ".join(problems), 1500))
    loaded = {k: v for k, v in state.items() if k in own}
    check_finite(loaded, "<state_dict>" if isinstance(source, Mapping) else str(source))
    model.load_state_dict(loaded, strict=strict)
    return model


#: scales tried when weights do not fit a model built from a spec with a ``scale`` variable
CANDIDATE_SCALES = (2, 3, 4, 8)


def _fits(own: Mapping[str, Any], state: Mapping[str, Any]) -> bool:
    return set(own) == set(state) and all(tuple(own[k].shape) == tuple(state[k].shape) for k in own)


def _diagnose(model: nn.Module, raw: Mapping[str, torch.Tensor], official: bool) -> str | None:
    """Why weights that do not fit ``model`` do not: they are for another scale of the same spec ("these weights
    are for x2, the model is x4"), or they use the official key names and need ``official=True``. None when neither
    explains it. Other scales are built on the meta device (no memory, no dry run), only on this error path."""
    try:
        info = model_info(model)
    except TypeError:
        return None

    def keyed(m: nn.Module, as_official: bool) -> Mapping[str, Any] | None:
        if not as_official:
            return raw
        try:
            return official_to_model_keys(m, raw)
        except WeightsError:
            return None

    if not official and info.spec.official_checkpoint is not None:
        mapped = keyed(model, True)
        if mapped is not None and _fits(model.state_dict(), mapped):
            return "these are the official implementation's key names: pass official=True (--official)"
    scale = info.scale
    if not isinstance(scale, int) or "scale" not in info.spec.variables:
        return None
    from .build import build_model

    defaults = info.spec.variables
    given = {k: v for k, v in info.variables.items()
             if k in defaults and not isinstance(defaults[k], str) and v != defaults[k] and k != "scale"}
    for candidate in CANDIDATE_SCALES:
        if candidate == scale:
            continue
        try:
            with torch.device("meta"):
                other = build_model(info.spec, check_shapes=False, **given, scale=candidate)
        except Exception:  # noqa: BLE001 - a scale the spec does not support explains nothing
            continue
        for as_official in (official, not official):
            state = keyed(other, as_official)
            if state is not None and _fits(other.state_dict(), state):
                flag = "" if as_official == official else (
                    " (with official=True)" if as_official else " (without official=True)")
                return f"these weights are for x{candidate}{flag}, the model is x{scale}"
    return None


def check_finite(state: Mapping[str, torch.Tensor], origin: str) -> None:
    """Refuse a state_dict with a NaN or infinite value, naming the first such tensor (WeightsError)."""
    bad = []
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()) \
                and value.device.type != "meta" and not bool(torch.isfinite(value).all()):
            bad.append(key)
    if bad:
        value = state[bad[0]]
        nan = int(torch.isnan(value).sum())
        inf = int(torch.isinf(value).sum())
        more = f" (and {len(bad) - 1} more tensor(s): {clip(', '.join(bad[1:6]), 300)})" if len(bad) > 1 else ""
        raise WeightsError(f"{clip(origin, 300)}: tensor {bad[0]!r} has {nan:,} NaN and {inf:,} infinite value(s) "
                           f"of {value.numel():,}{more}; refusing to load non-finite weights")


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Save ``model.state_dict()`` as ``.safetensors`` (by suffix) or a torch file readable with weights_only.

    The file is written atomically (:func:`srblocks.fileio.atomic_write`): an interrupted save leaves the previous
    file (or none), never a truncated one."""
    from .fileio import atomic_write

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_write(path) as f:
        if path.suffix == ".safetensors":
            from safetensors.torch import save

            f.write(save(state))
        else:
            torch.save(state, f)
    return path
