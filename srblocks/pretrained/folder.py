"""``save_pretrained(model, DIR)`` / ``from_pretrained(DIR)``: a model folder of spec, weights and card.

``DIR/spec.yaml``
    The spec the model was built from, with ``extends`` resolved (a complete spec, no base file needed). Its
    ``variables`` are the spec's own declarations; the values the model was built with are the card's
    ``variables`` (``build_model("DIR/spec.yaml", **card["variables"])`` builds the same network), so the rebuilt
    model has the same :meth:`~srblocks.build.ModelInfo.content_hash` as the saved one.
``DIR/model.safetensors``
    The weights (keys as ``model.state_dict()``) with the metadata every srblocks export carries
    (:func:`srblocks.export.metadata.artifact_metadata`: spec name and hash, scale, input range, PSNR convention,
    form), written by :func:`srblocks.export.safetensors.to_safetensors_bytes`.
``DIR/card.json``
    ``format`` (``"srblocks-pretrained"``) and ``format_version`` (1); ``spec_name``, ``spec_hash``, ``extends``
    (the base the spec was derived from, for information), ``variables``, ``scale``, ``input_range``,
    ``y_convention``, ``params`` (parameter count), ``form`` (``train``, or ``deploy``: the weights are the
    re-parameterized form of :func:`srblocks.deploy`), ``memory_format``, ``dtype`` (of the floating-point weights;
    null if mixed), ``srblocks_version``, ``torch_version``, ``created`` (UTC, ISO 8601), and ``files``: the SHA-256
    and size of ``spec.yaml`` and ``model.safetensors``.

Writing is all or nothing: the three files are written (each fsynced) into a hidden sibling folder
``.DIR.XXXXXXXX.tmp`` that is then renamed onto ``DIR``. With ``overwrite=True`` the old folder is first renamed
aside (``.DIR.XXXXXXXX.old``) and removed only once the new one is in place, so a crash leaves either the old or the
new folder under ``DIR`` (and at worst a hidden ``.tmp``/``.old`` sibling to delete), never a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import struct
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
import yaml
from torch import nn

from ..errors import SrblocksError, brief, clip

if TYPE_CHECKING:
    from ..build import ModelInfo
    from ..spec.loader import LoadedSpec
    from ..spec.schema import ArchSpec

__all__ = ["PretrainedError", "save_pretrained", "from_pretrained", "SPEC_FILE", "WEIGHTS_FILE", "CARD_FILE",
           "FORMAT", "FORMAT_VERSION"]

SPEC_FILE = "spec.yaml"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
#: ``card.json``'s ``format``
FORMAT = "srblocks-pretrained"
#: the card format this srblocks writes and the newest it reads
FORMAT_VERSION = 1
#: largest card.json read (bytes)
MAX_CARD_BYTES = 1 << 20

_FILES = (SPEC_FILE, WEIGHTS_FILE, CARD_FILE)
_FORMS = ("train", "deploy")
_MEMORY_FORMATS = ("contiguous", "channels_last")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
#: top-level spec settings written even when they have their default value (a later default cannot change them)
_EXPLICIT = ("inputs", "variables", "input_range", "y_convention", "dry_run_size", "memory_format")
#: key order of spec.yaml (any other key follows)
_ORDER = ("name", "paper", "description", "notes", "variables", "input_range", "y_convention", "dry_run_size",
          "memory_format", "inputs", "nodes", "output", "mask_guided", "official_checkpoint", "expected")


class PretrainedError(SrblocksError, ValueError):
    """A model that cannot be saved as a model folder, or a folder that is not a complete, intact model folder.

    The message names the folder or file and the problem."""


# --------------------------------------------------------------------------------------------------------- saving
def save_pretrained(model: nn.Module, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``model`` as a model folder ``directory`` (``spec.yaml``, ``model.safetensors``, ``card.json``).

    Args:
        model: a model made by :func:`srblocks.build_model` (weights loaded or trained), in its training form or
            the deploy form of :func:`srblocks.deploy`; the form is found from its parameters and recorded.
        directory: the folder to create; its parent folders are created as needed. An existing empty folder is
            used as if it were new.
        overwrite: replace an existing folder written by ``save_pretrained``. Only a folder holding nothing but
            these three files is replaced (nothing else is ever deleted); the old folder stays complete until the
            new one is.

    Returns:
        The folder's absolute path.

    Raises:
        PretrainedError: ``model`` was not built from a spec, its weights match neither its spec's training nor
            deploy form, its variables are not JSON values, or ``directory`` is a file, a symbolic link, a
            non-empty folder (without ``overwrite``) or a folder with other files; nothing is changed then.
        OSError: the folder cannot be written (its previous content, if any, is then unchanged).
    """
    from .. import __version__
    from ..build import model_info
    from ..export.metadata import artifact_metadata
    from ..export.safetensors import to_safetensors_bytes

    if not isinstance(model, nn.Module):
        raise PretrainedError(f"save_pretrained takes a model built by srblocks.build_model, got {brief(model)}")
    try:
        info = model_info(model)
    except TypeError:
        raise PretrainedError(f"cannot save this {type(model).__name__}: it was not built from a spec by "
                              "srblocks.build_model, so there is no spec to write; build the network with "
                              "srblocks.build_model(spec) and load these weights into it (srblocks.load_weights)"
                              ) from None
    target = _target(directory)
    _check_target(target, overwrite)  # before the expensive part, and again right before the rename
    variables = _json_variables(info)
    spec_bytes = _spec_yaml(info)
    spec = _reparse_spec(spec_bytes, info, variables)
    form = _form(model, spec, variables, info.spec.name)
    metadata = artifact_metadata(model, form=form, fixed_size=None)
    weights = to_safetensors_bytes(model, metadata)
    card = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec_name": info.spec.name,
        "spec_hash": info.content_hash(),
        "extends": info.spec.extends,
        "variables": variables,
        "scale": variables.get("scale"),
        "input_range": float(info.input_range),
        "y_convention": info.spec.y_convention,
        "params": sum(p.numel() for p in model.parameters()),
        "form": form,
        "memory_format": _memory_format(model),
        "dtype": _dtype(model),
        "srblocks_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                  for name, data in ((SPEC_FILE, spec_bytes), (WEIGHTS_FILE, weights))},
    }
    card_bytes = (json.dumps(card, indent=2) + "\n").encode("utf-8")
    _write_folder(target, {SPEC_FILE: spec_bytes, WEIGHTS_FILE: weights, CARD_FILE: card_bytes}, overwrite)
    return target


def _target(directory: Any) -> Path:
    if not isinstance(directory, (str, os.PathLike)):
        raise PretrainedError(f"a model folder is a path, got {brief(directory)}")
    try:
        target = Path(os.path.abspath(os.fspath(directory)))
    except (TypeError, ValueError) as exc:
        raise PretrainedError(f"invalid folder name {brief(directory)}: {clip(str(exc), 200)}") from None
    if not target.name:
        raise PretrainedError(f"{target}: a model folder cannot be a file system root")
    return target


def _check_target(target: Path, overwrite: bool) -> None:
    """Refuse a target that would lose data: a file, a link, a non-empty folder (unless ``overwrite`` and it
    holds only the files of a model folder)."""
    try:
        if target.is_symlink():
            raise PretrainedError(f"{target} is a symbolic link; save to the folder it points to, or to another name")
        if not target.exists():
            return
        if not target.is_dir():
            raise PretrainedError(f"{target} exists and is not a folder; nothing was written")
        names = sorted(p.name for p in target.iterdir())
    except OSError as exc:
        raise PretrainedError(f"cannot inspect {target}: {exc.strerror or exc}") from None
    if not names:
        return
    if not overwrite:
        raise PretrainedError(f"{target} already exists and is not empty ({_list(names)}); nothing was changed. "
                              "Pass overwrite=True to replace a model folder, or choose another folder")
    other = [n for n in names if n not in _FILES]
    if other:
        raise PretrainedError(f"{target} holds files a model folder does not ({_list(other)}); overwrite=True "
                              f"replaces only a folder of {', '.join(_FILES)}, so nothing was changed. Move those "
                              "files away or choose another folder")


def _list(names: list[str], n: int = 5) -> str:
    shown = ", ".join(clip(x, 80) for x in names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def _json_variables(info: ModelInfo) -> dict[str, Any]:
    """The resolved variables as JSON values (tuples become lists; the content hash treats them alike)."""
    try:
        return json.loads(json.dumps(info.variables, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise PretrainedError(f"cannot save spec {brief(info.spec.name)}: its variables are not all JSON values "
                              f"({clip(str(exc), 200)}): {brief(info.variables, 300)}") from None


def _spec_yaml(info: ModelInfo) -> bytes:
    """spec.yaml: the spec (extends resolved, so no base file is needed) as YAML, preceded by a comment."""
    spec = info.spec
    full = spec.model_dump(mode="json")
    body = spec.model_dump(mode="json", exclude_defaults=True)
    body.update({k: full[k] for k in _EXPLICIT if k in full})
    body.pop("extends", None)
    ordered = {k: body[k] for k in _ORDER if k in body}
    ordered.update({k: v for k, v in body.items() if k not in ordered})
    base = f" (extends {spec.extends!r} resolved)" if spec.extends else ""
    header = (f"# Spec {spec.name!r}{base} of a model folder written by srblocks.save_pretrained.\n"
              "# The weights (model.safetensors) are for the variable values in card.json \"variables\":\n"
              "# load the folder with srblocks.from_pretrained(FOLDER), or build the network with\n"
              "# srblocks.build_model(\"FOLDER/spec.yaml\", **card[\"variables\"]).\n")
    return (header + yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=120)).encode("utf-8")


def _reparse_spec(data: bytes, info: ModelInfo, variables: dict[str, Any]) -> ArchSpec:
    """The spec read back from spec.yaml's bytes; it must describe the same network (content hash)."""
    from ..build import ModelInfo
    from ..spec.loader import parse_yaml
    from ..spec.schema import ArchSpec

    spec = ArchSpec.model_validate(parse_yaml(data.decode("utf-8"), SPEC_FILE))
    if ModelInfo(spec, SPEC_FILE, variables).content_hash() != info.content_hash():  # pragma: no cover
        raise PretrainedError(f"cannot save spec {brief(info.spec.name)}: it does not survive being written as "
                              "YAML (its content hash changes); please report this")
    return spec


def _signature(model: nn.Module) -> tuple[Any, ...]:
    """What tells a network's forms apart: its state_dict keys and shapes, and the blocks' ``deploy`` flags."""
    state = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
    flags = tuple((name, m.deploy) for name, m in model.named_modules() if isinstance(getattr(m, "deploy", None), bool))
    return state, flags


def _form(model: nn.Module, spec: ArchSpec, variables: dict[str, Any], name: str) -> str:
    """``deploy`` if ``model`` is the network the spec builds after :func:`srblocks.deploy` (or built directly in
    deploy form: blocks with ``deploy=True``, on which :func:`srblocks.deploy` is a no-op), ``train`` if it is the
    network as built; an error if it is neither."""
    from ..build import build_model
    from ..deploy import deploy

    wanted = _signature(model)
    with torch.random.fork_rng(devices=[]):  # building initializes weights: leave the caller's RNG state alone
        fresh = build_model(spec, check_shapes=False, **variables)
        if _signature(fresh) == wanted:  # built as it is; deploy form if its blocks say so (deploy: true)
            return "deploy" if any(getattr(m, "deploy", None) is True for m in model.modules()) else "train"
        trained_keys = fresh.state_dict().keys()
        if _signature(deploy(fresh, inplace=True)) == wanted:
            return "deploy"
    have = model.state_dict().keys()
    missing = [k for k in trained_keys if k not in have]
    unexpected = [k for k in have if k not in trained_keys]
    detail = "; ".join(part for part in (
        f"missing {_list(missing)}" if missing else "", f"unexpected {_list(unexpected)}" if unexpected else "")
        if part) or "same keys, different shapes or deploy flags"
    raise PretrainedError(f"cannot save: the model's parameters and buffers fit neither the network spec "
                          f"{brief(name)} builds with its variables nor that network's deploy form "
                          f"(srblocks.deploy) ({detail}); was it changed after build_model?")


def _memory_format(model: nn.Module) -> str:
    channels_last = any(p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
                        for p in model.parameters())
    return "channels_last" if channels_last else "contiguous"


def _dtype(model: nn.Module) -> str | None:
    kinds = {v.dtype for v in model.state_dict().values() if v.is_floating_point()}
    names = {n for n, d in _DTYPES.items() if d in kinds}
    return names.pop() if len(kinds) == 1 and len(names) == 1 else None


def _sibling(target: Path, suffix: str) -> Path:
    """A new hidden name beside ``target`` (``.NAME.XXXXXXXX.suffix``) that does not exist yet."""
    for _ in range(100):
        path = target.with_name(f".{target.name}.{secrets.token_hex(4)}.{suffix}")
        if not os.path.lexists(path):
            return path
    raise FileExistsError(f"cannot find a free temporary name beside {target}")  # pragma: no cover


def _write_folder(target: Path, files: Mapping[str, bytes], overwrite: bool) -> None:
    """Write ``files`` into a hidden sibling folder, then rename it onto ``target`` (see the module docstring)."""
    from ..fileio import _fsync_folder, write_bytes_atomic

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    tmp.mkdir()
    try:
        for name, data in files.items():
            write_bytes_atomic(tmp / name, data)  # fsyncs the file and the temporary folder
        _check_target(target, overwrite)  # it may have changed while the files were written
        if target.is_dir() and any(target.iterdir()):
            backup = _sibling(target, "old")
            os.rename(target, backup)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(backup, target)
                raise
            _fsync_folder(target.parent)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            try:
                os.rename(tmp, target)  # replaces an empty folder on POSIX; fails if one with files appeared
            except OSError:
                if not (target.is_dir() and not any(target.iterdir())):
                    raise PretrainedError(f"{target} appeared while the model was being written; nothing was "
                                          "changed") from None
                os.rmdir(target)  # Windows does not rename onto an empty folder
                os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_folder(target.parent)


# -------------------------------------------------------------------------------------------------------- loading
def from_pretrained(directory: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a model folder written by :func:`save_pretrained`.

    Checks the SHA-256 of ``spec.yaml`` and ``model.safetensors`` against ``card.json``, builds the network from
    ``spec.yaml`` with the card's variables (and memory format), applies :func:`srblocks.deploy` for a deploy-form
    model, loads the weights strictly and moves the model to ``map_location`` (in the saved dtype).

    Args:
        directory: the model folder.
        map_location: the device of the returned model (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``).

    Returns:
        The model, in eval mode, with its spec attached like any built model (:func:`srblocks.model_info`).

    Raises:
        PretrainedError: the folder or one of its files is missing or unreadable, ``card.json`` is not valid JSON
            or not a card of a format version this srblocks reads, a file's hash differs from the card's, the
            weights are not valid safetensors or do not fit the network, or ``map_location`` is not a usable
            device. The message names the file and the problem.
        SpecError: ``spec.yaml`` (hash intact) does not build with this srblocks.
    """
    from ..build import build_model, model_info
    from ..deploy import deploy

    folder = _folder(directory)
    card = _read_card(folder / CARD_FILE)
    spec_path, weights_path = folder / SPEC_FILE, folder / WEIGHTS_FILE
    spec_data = _read_checked(spec_path, card)
    weights_data = _read_checked(weights_path, card)
    device = _device(map_location)
    loaded = _load_spec(spec_data, spec_path)
    with torch.random.fork_rng(devices=[]):  # the initial weights are replaced: leave the caller's RNG state alone
        model = build_model(loaded, memory_format=card["memory_format"], **card["variables"])
    if card["form"] == "deploy":
        model = deploy(model, inplace=True)
    state = _read_safetensors(weights_data, weights_path, card)
    _load_state(model, state, weights_path, card["form"])
    dtype = _DTYPES[card["dtype"]] if card["dtype"] is not None else None
    try:
        if dtype is None or dtype == torch.float32:
            model.to(device=device)
        else:
            model.to(device=device, dtype=dtype)
    except (RuntimeError, AssertionError) as exc:  # e.g. CUDA not available
        raise PretrainedError(f"cannot move the model to map_location={brief(map_location)}: "
                              f"{clip(str(exc), 300)}") from None
    rebuilt = model_info(model).content_hash()
    if rebuilt != card["spec_hash"]:
        warnings.warn(f"{folder}: the rebuilt network's content hash {rebuilt} differs from the card's "
                      f"{card['spec_hash']} (saved by srblocks {card.get('srblocks_version')!s}); the weights fit it",
                      stacklevel=2)
    return model.eval()


def _folder(directory: Any) -> Path:
    if not isinstance(directory, (str, os.PathLike)):
        raise PretrainedError(f"a model folder is a path, got {brief(directory)}")
    folder = Path(os.fspath(directory))
    try:
        is_dir, exists = folder.is_dir(), folder.exists()
    except (OSError, ValueError) as exc:
        raise PretrainedError(f"cannot read model folder {brief(str(folder), 300)}: {clip(str(exc), 200)}") from None
    if not is_dir:
        what = "is not a folder" if exists else "not found"
        raise PretrainedError(f"model folder {clip(str(folder), 300)} {what}")
    return folder


def _read(path: Path, limit: int | None = None) -> bytes:
    """The bytes of a model folder's file, or a PretrainedError saying it is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
    except FileNotFoundError:
        raise PretrainedError(f"{path}: missing; {path.parent} is not a complete model folder (srblocks."
                              f"save_pretrained writes {', '.join(_FILES)})") from None
    except (OSError, ValueError) as exc:
        raise PretrainedError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if limit is not None and len(data) > limit:
        raise PretrainedError(f"{path}: larger than {limit:,} bytes; not a model card")
    return data


def _read_card(path: Path) -> dict[str, Any]:
    """card.json, checked: a mapping of the supported format and version with the fields the loader uses."""
    data = _read(path, MAX_CARD_BYTES)
    try:
        card = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PretrainedError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise PretrainedError(f"{path}: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise PretrainedError(f"{path}: invalid JSON: nested too deeply") from None

    def bad(message: str) -> PretrainedError:
        return PretrainedError(f"{path}: {message}")

    if not isinstance(card, dict):
        raise bad(f"a model card is a JSON object, got {type(card).__name__}")
    if card.get("format") != FORMAT:
        raise bad(f"not a srblocks model card (format {brief(card.get('format'))}, expected {FORMAT!r})")
    version = card.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad(f"format_version must be a positive integer, got {brief(version)}")
    if version > FORMAT_VERSION:
        from .. import __version__

        raise bad(f"format_version {version} is newer than this srblocks ({__version__}) reads (up to "
                  f"{FORMAT_VERSION}); upgrade srblocks to load this folder")
    checks: dict[str, tuple[Any, str]] = {
        "spec_hash": (lambda v: isinstance(v, str), "a string"),
        "variables": (lambda v: isinstance(v, dict), "an object"),
        "form": (lambda v: v in _FORMS, f"one of {', '.join(_FORMS)}"),
        "memory_format": (lambda v: v in _MEMORY_FORMATS, f"one of {', '.join(_MEMORY_FORMATS)}"),
        "dtype": (lambda v: v is None or v in _DTYPES, f"null or one of {', '.join(_DTYPES)}"),
        "files": (lambda v: isinstance(v, dict), "an object"),
    }
    for key, (ok, what) in checks.items():
        if key not in card:
            raise bad(f"the field {key!r} is missing")
        if not ok(card[key]):
            raise bad(f"{key!r} must be {what}, got {brief(card[key])}")
    for name in (SPEC_FILE, WEIGHTS_FILE):
        entry = card["files"].get(name)
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise bad(f"files.{name}.sha256 must be 64 lowercase hex digits, got {brief(digest)}")
    return card


def _read_checked(path: Path, card: Mapping[str, Any]) -> bytes:
    """The bytes of ``path`` after checking their SHA-256 against the card's."""
    data = _read(path)
    want = card["files"][path.name]["sha256"]
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise PretrainedError(f"{path}: SHA-256 mismatch: the file hashes to {got[:16]}..., {CARD_FILE} records "
                              f"{want[:16]}...; it was changed or damaged after save_pretrained wrote it")
    return data


def _device(map_location: Any) -> torch.device:
    try:
        return torch.device(map_location)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise PretrainedError(f"map_location must be a device such as 'cpu' or 'cuda:0', got {brief(map_location)} "
                              f"({clip(str(exc), 200)})") from None


def _load_spec(data: bytes, path: Path) -> LoadedSpec:
    """spec.yaml from its verified bytes (read once: what was hashed is what is built)."""
    from ..errors import SpecError
    from ..spec.limits import MAX_SPEC_BYTES
    from ..spec.loader import parse_yaml, validated_spec

    origin = str(path)
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"the spec file is larger than {MAX_SPEC_BYTES:,} bytes", source=origin)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", source=origin) from None
    raw = parse_yaml(text, origin)
    if not isinstance(raw, Mapping):
        raise SpecError(f"a spec must be a YAML mapping, got {type(raw).__name__}", source=origin)
    if raw.get("extends") is not None:
        raise SpecError("a model folder's spec is complete and has no extends", source=origin, path="extends")
    return validated_spec(raw, origin)


def _read_safetensors(data: bytes, path: Path, card: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of model.safetensors; its metadata must name the card's network and form."""
    from safetensors.torch import load

    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + size].decode("utf-8"))
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict):
            raise ValueError("__metadata__ is not an object")
        state = load(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure of the file is one error naming it
        raise PretrainedError(f"{path}: not a valid safetensors file ({type(exc).__name__}: "
                              f"{clip(str(exc), 200)})") from None
    for key, want in (("spec_hash", card["spec_hash"]), ("form", card["form"])):
        if key in metadata and metadata[key] != want:
            raise PretrainedError(f"{path}: its metadata {key} {brief(metadata[key])} differs from {CARD_FILE}'s "
                                  f"{brief(want)}; the files come from different model folders")
    return state


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, form: str) -> None:
    """``model.load_state_dict(state, strict=True)``, with a mismatch reported as the keys that differ."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (network: {tuple(expected[k].shape)})" for k in expected
              if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{what} {_list(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected),
                                                             ("shape mismatch", shapes)) if keys]
        raise PretrainedError(f"{path}: the weights do not fit the network {SPEC_FILE} builds ({form} form): "
                              + "; ".join(parts))
    model.load_state_dict(state, strict=True)
