"""State dicts to and from `spandrel <https://github.com/chaiNNer-org/spandrel>`_ (chaiNNer's model loader).

spandrel recognizes an architecture by the key names of a state dict and reads its hyperparameters from tensor
shapes. Of the architectures spandrel 0.4.2 knows, srblocks ships two, with the same layers under the same names:

============  ===================  ===========================================================================
spandrel id   srblocks spec        variables read from the shapes (as spandrel reads them)
============  ===================  ===========================================================================
``SAFMN``     ``safmn`` (safmn_l)  ``dim`` (to_feat), ``n_blocks`` (feats.N), ``ffn_scale`` (CCM hidden / dim),
                                   ``scale`` (to_img.0 has 3 * scale**2 outputs)
``RCAN``      ``rcan`` (rcan_b)    ``n_feats`` and ``scale`` (tail.0 pixel-shuffle convs), ``n_groups``
                                   (body.N - 1), ``n_resblocks`` (body.0.body.N - 1), ``reduction``
                                   (n_feats / channel-attention squeeze width)
============  ===================  ===========================================================================

The key names are the official implementations' (``official_checkpoint`` in the specs; for both specs the ids are
already the official keys). :func:`to_spandrel_state_dict` renames through that map
(:func:`srblocks.weights.model_to_official_keys`) and checks that the network spandrel would build from the names
and shapes is the model's: same keys and shapes, same graph, same layers. :func:`from_spandrel` goes the other way.

Value ranges. spandrel models take and return RGB in [0, 1], as these srblocks specs do (``input_range: 1.0``):

* SAFMN: spandrel's class is the official one; the same weights give the same function.
* RCAN: the official RCAN works on 0..255 images and subtracts / adds the DIV2K RGB mean with fixed 1x1 convs
  (``sub_mean``, ``add_mean``); spandrel keeps that when the state dict has ``sub_mean.weight`` (multiplying its
  [0, 1] input by 255 and dividing the output by 255) and builds RCAN without mean shift and with ``rgb_range`` 1
  when it has not. srblocks' ``rcan`` has no mean shift and takes [0, 1]. So weights srblocks writes have no
  ``sub_mean``/``add_mean`` keys and spandrel runs exactly our network on the same [0, 1] input; a spandrel state
  dict without them loads into ``rcan`` exactly. One with them (an official 0..255 checkpoint) computes
  ``add_mean(net(sub_mean(255 x))) / 255``: :func:`from_spandrel` refuses it unless ``mean_shift="wrap"``, which
  returns :class:`RGBMeanShift` around the srblocks network (the same function, [0, 1] in and out).

"Outputs agree" means: on the same float32 input x in [0, 1], ``ours(x)`` and spandrel's ``descriptor.model(x)``
differ by at most 1e-5 absolute on the [0, 1] scale (``tests/test_interop_spandrel.py``). Measured on CPU with
random weights: 0 in every case, SAFMN, plain RCAN and RCAN through :class:`RGBMeanShift` alike, since both sides
run the same operations in the same order; the bound leaves room for kernels that differ between runs or devices
(RCAN's mean shift runs the network on 0..255 values, whose float32 rounding is divided by 255 at the end).
``descriptor(x)`` (chaiNNer's call) also clamps the output to [0, 1]. Note that spandrel's RCAN scales its input
in place (``x *= rgb_range``): pass it a copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import torch
from torch import nn

from ..build import build_model, model_info
from ..errors import SpecError, brief, clip
from ..weights import WeightsError, load_weights, model_to_official_keys, read_state_dict

__all__ = ["SUPPORTED_ARCHITECTURES", "RGBMeanShift", "SpandrelFormatError", "SpandrelImport",
           "detect_spandrel_architecture", "from_spandrel", "to_spandrel_state_dict", "official_state_dict"]

StateDict = Mapping[str, torch.Tensor]

#: RCAN's fixed mean-shift convs (official 0..255 checkpoints), which srblocks' rcan does not have
MEAN_SHIFT_KEYS = ("sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias")
#: spandrel's RCAN multiplies its [0, 1] input by this when the state dict has a mean shift ("undetectable")
RCAN_RGB_RANGE = 255.0


class SpandrelFormatError(WeightsError):
    """A state dict that is not (or cannot become) a spandrel-format state dict of an architecture srblocks ships;
    the message names what was found."""


def _shape(state: StateDict, key: str, ndim: int, arch: str) -> tuple[int, ...]:
    value = state.get(key)
    if not isinstance(value, torch.Tensor) or value.dim() != ndim:
        got = "missing" if value is None else (f"of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor)
                                               else f"a {type(value).__name__}")
        raise SpandrelFormatError(f"{arch} state dict: {key!r} should be a {ndim}-D tensor, it is {got}")
    return tuple(int(s) for s in value.shape)


def _seq_len(state: StateDict, prefix: str) -> int:
    """1 + the largest N with a key ``{prefix}.N.*`` (spandrel's ``get_seq_len``); 0 when there is none."""
    head = prefix + "."
    found = [int(k[len(head):].split(".", 1)[0]) for k in state
             if k.startswith(head) and k[len(head):].split(".", 1)[0].isdigit()]
    return max(found) + 1 if found else 0


def _safmn_variables(state: StateDict) -> dict[str, Any]:
    dim, colors = _shape(state, "to_feat.weight", 4, "SAFMN")[:2]
    if colors != 3:
        raise SpandrelFormatError(f"SAFMN state dict with {colors} input channels: srblocks' safmn takes RGB (3)")
    hidden = _shape(state, "feats.0.ccm.ccm.0.weight", 4, "SAFMN")[0]
    out = _shape(state, "to_img.0.weight", 4, "SAFMN")[0]
    scale = math.isqrt(out // 3)
    if scale < 1 or 3 * scale * scale != out:
        raise SpandrelFormatError(f"SAFMN state dict: to_img.0 has {out} output channels, not 3 * scale**2")
    return {"scale": scale, "dim": dim, "n_blocks": _seq_len(state, "feats"), "ffn_scale": hidden / dim}


def _rcan_variables(state: StateDict) -> dict[str, Any]:
    if "head.1.weight" in state:
        raise SpandrelFormatError("RCAN state dict with a pixel-unshuffle head (head.1: spandrel's unshuffle_mod "
                                  "variant): srblocks' rcan has no such head")
    n_feats, colors, kh, kw = _shape(state, "head.0.weight", 4, "RCAN")
    out_colors = _shape(state, "tail.1.weight", 4, "RCAN")[0]
    if colors != 3 or out_colors != 3:
        raise SpandrelFormatError(f"RCAN state dict with {colors} input / {out_colors} output channels: srblocks' "
                                  "rcan maps RGB to RGB")
    if (kh, kw) != (3, 3):
        raise SpandrelFormatError(f"RCAN state dict with {kh}x{kw} convolutions: srblocks' rcan uses 3x3")
    scale = 1
    for i in range(0, 10, 2):  # the upsampler: conv, pixel shuffle, conv, pixel shuffle... (spandrel's reading)
        key = f"tail.0.{i}.weight"
        if key not in state:
            break
        out, inp = _shape(state, key, 4, "RCAN")[:2]
        scale *= math.isqrt(out // inp) if inp else 0
    squeeze = _shape(state, "body.0.body.0.body.3.conv_du.0.weight", 4, "RCAN")[0]
    if scale < 2 or squeeze < 1:
        raise SpandrelFormatError(f"RCAN state dict with an upsampler of scale {scale} and a channel-attention "
                                  f"width {squeeze}: srblocks' rcan is x2, x3, x4 or x8")
    return {"scale": scale, "n_feats": n_feats, "n_groups": _seq_len(state, "body") - 1,
            "n_resblocks": _seq_len(state, "body.0.body") - 1, "reduction": n_feats // squeeze}


@dataclass(frozen=True)
class _Family:
    architecture: str  # spandrel's Architecture.id
    spec: str  # the shipped srblocks spec built for it
    detect: tuple[tuple[str, ...], ...]  # spandrel's KeyCondition: all keys of any one of these sets
    variables: Callable[[StateDict], dict[str, Any]]
    mean_shift: bool = False  # may carry RCAN's sub_mean / add_mean

    def matches(self, state: StateDict) -> bool:
        return any(all(k in state for k in keys) for keys in self.detect)


#: spandrel 0.4.2's detection conditions (spandrel/architectures/{SAFMN,RCAN}/__init__.py), in its order
_FAMILIES = (
    _Family("SAFMN", "safmn", (("to_feat.weight", "feats.0.norm1.weight", "feats.0.norm2.weight",
                                "feats.0.safm.mfr.0.weight", "feats.0.safm.mfr.3.weight", "feats.0.safm.aggr.weight",
                                "feats.0.ccm.ccm.0.weight", "feats.0.ccm.ccm.2.weight", "to_img.0.weight"),),
            _safmn_variables),
    _Family("RCAN", "rcan", (("head.0.weight", "tail.1.weight", "body.0.body.0.body.0.weight",
                              "body.0.body.0.body.3.conv_du.0.weight"),
                             ("head.1.weight", "tail.1.weight", "body.0.body.0.body.0.weight",
                              "body.0.body.0.body.3.conv_du.0.weight")),
            _rcan_variables, mean_shift=True),
)

#: spandrel architecture ids that srblocks converts (spandrel's ``descriptor.architecture.id``)
SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(f.architecture for f in _FAMILIES)


def _family(state: StateDict) -> _Family | None:
    return next((f for f in _FAMILIES if f.matches(state)), None)


def detect_spandrel_architecture(state_dict: StateDict) -> str | None:
    """The spandrel architecture id (``"SAFMN"``, ``"RCAN"``) whose key condition ``state_dict`` meets, as spandrel
    0.4.2 detects it, among :data:`SUPPORTED_ARCHITECTURES`; None for any other state dict."""
    family = _family(state_dict)
    return family.architecture if family else None


class RGBMeanShift(nn.Module):
    """Official RCAN's range and mean handling around an srblocks network: (B, 3, H, W) RGB in [0, 1] ->
    ``add_mean(model(sub_mean(255 x))) / 255`` (B, 3, sH, sW), what spandrel computes for an RCAN state dict with
    ``sub_mean``/``add_mean``. The two 1x1 convs hold the checkpoint's values (weight eye / std, bias
    -/+ 255 mean / std) and are not trained; ``model`` is the srblocks network (``model_info(wrapper.model)``)."""

    def __init__(self, model: nn.Module, sub_mean: tuple[torch.Tensor, torch.Tensor],
                 add_mean: tuple[torch.Tensor, torch.Tensor], rgb_range: float = RCAN_RGB_RANGE) -> None:
        super().__init__()
        self.model = model
        self.rgb_range = float(rgb_range)
        self.sub_mean = nn.Conv2d(3, 3, 1)
        self.add_mean = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            for conv, (weight, bias) in ((self.sub_mean, sub_mean), (self.add_mean, add_mean)):
                conv.weight.copy_(weight)
                conv.bias.copy_(bias)
                conv.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_mean(self.model(self.sub_mean(x * self.rgb_range))) / self.rgb_range


@dataclass
class SpandrelImport:
    """What :func:`from_spandrel` found and built.

    Attributes:
        architecture: spandrel's id (``"SAFMN"``, ``"RCAN"``).
        spec: the srblocks spec built (``"safmn"``, ``"rcan"``); ``build_model(spec, **variables)`` rebuilds it.
        variables: the spec variables read from the tensor shapes (``scale``, widths, depths).
        model: the model with the weights loaded strictly, in eval mode: the srblocks network, or
            :class:`RGBMeanShift` around it for an RCAN state dict with a mean shift (``mean_shift="wrap"``).
        mean_shift: whether ``model`` is such a wrapper.
    """

    architecture: str
    spec: str
    variables: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None
    mean_shift: bool = False

    @property
    def scale(self) -> int:
        return int(self.variables["scale"])


def _describe_keys(state: StateDict) -> str:
    keys = list(state)
    shown = ", ".join(brief(k, 60) for k in keys[:6])
    return f"{len(keys)} key(s) ({shown}{', ...' if len(keys) > 6 else ''})"


def from_spandrel(
    state_dict: StateDict | str | Path,
    *,
    mean_shift: Literal["error", "wrap"] = "error",
) -> SpandrelImport:
    """Build the srblocks model for a spandrel/chaiNNer-format state dict and load its weights strictly.

    Args:
        state_dict: a state dict under the official key names spandrel detects, or a checkpoint file (.pth, .pt,
            .safetensors); wrappers (``params_ema``, ``params``, ``state_dict``, ...) and a ``module.`` prefix are
            removed as :func:`srblocks.weights.read_state_dict` does.
        mean_shift: for an RCAN state dict with ``sub_mean``/``add_mean`` (the official 0..255 model): ``"error"``
            refuses it (srblocks' rcan has no mean shift: loading the rest would compute another function);
            ``"wrap"`` returns the network inside :class:`RGBMeanShift`, the same function as spandrel's on
            [0, 1] input. Ignored for state dicts without a mean shift.

    Returns:
        :class:`SpandrelImport` (architecture, spec, variables, model in eval mode). On the same (B, 3, H, W)
        float32 input in [0, 1], ``model(x)`` equals spandrel's ``descriptor.model(x)`` within 1e-5 absolute.

    Raises:
        SpandrelFormatError: not a state dict of :data:`SUPPORTED_ARCHITECTURES`, a variant srblocks does not ship
            (other channel counts or kernel sizes, RCAN's unshuffle head), shapes that do not fit, or a mean shift
            with ``mean_shift="error"``; the message names what was found.
    """
    if mean_shift not in ("error", "wrap"):
        raise ValueError(f"mean_shift must be 'error' or 'wrap', got {mean_shift!r}")
    state = read_state_dict(state_dict)
    family = _family(state)
    if family is None:
        raise SpandrelFormatError(
            f"not a spandrel state dict of an architecture srblocks ships: {_describe_keys(state)}; srblocks "
            f"converts {', '.join(SUPPORTED_ARCHITECTURES)} (SAFMN: to_feat.weight, feats.0.safm.*, to_img.0.weight; "
            "RCAN: head.0.weight, body.0.body.0.body.3.conv_du.0.weight, tail.1.weight)")
    variables = family.variables(state)
    shift = [k for k in MEAN_SHIFT_KEYS if k in state] if family.mean_shift else []
    if shift and len(shift) != len(MEAN_SHIFT_KEYS):
        raise SpandrelFormatError(f"{family.architecture} state dict with only part of the mean shift "
                                  f"({', '.join(shift)} of {', '.join(MEAN_SHIFT_KEYS)})")
    if shift:
        for key in MEAN_SHIFT_KEYS:
            _shape(state, key, 4 if key.endswith("weight") else 1, family.architecture)
        if tuple(state["sub_mean.weight"].shape) != (3, 3, 1, 1) or tuple(state["add_mean.weight"].shape) != (
                3, 3, 1, 1) or state["sub_mean.bias"].numel() != 3 or state["add_mean.bias"].numel() != 3:
            raise SpandrelFormatError(f"{family.architecture} state dict: sub_mean/add_mean are not 3x3 1x1 convs")
        if mean_shift == "error":
            raise SpandrelFormatError(
                f"{family.architecture} state dict with a mean shift (sub_mean/add_mean: the official RCAN on 0..255 "
                f"images, which spandrel runs as add_mean(net(sub_mean(255 x))) / 255): srblocks' {family.spec} has "
                "no mean shift, the other weights alone compute another function; pass mean_shift='wrap' for the "
                "network wrapped in RGBMeanShift (the same function on [0, 1] input)")
    settings = ", ".join(f"{k}={v}" for k, v in variables.items())
    try:
        model = build_model(family.spec, **variables)
    except SpecError as exc:
        raise SpandrelFormatError(f"{family.architecture} state dict ({settings}): srblocks' {family.spec} cannot "
                                  f"be built with these variables: {exc}") from None
    try:
        load_weights(model, state, official=True)
    except WeightsError as exc:
        raise SpandrelFormatError(clip(f"{family.architecture} state dict ({settings}) does not fit srblocks' "
                                       f"{family.spec}: {exc}", 1500)) from None
    model.eval()
    wrapped: nn.Module = model
    if shift:
        wrapped = RGBMeanShift(model, (state["sub_mean.weight"], state["sub_mean.bias"]),
                               (state["add_mean.weight"], state["add_mean.bias"])).eval()
    return SpandrelImport(family.architecture, family.spec, dict(variables), wrapped, bool(shift))


def _structure(model: nn.Module) -> tuple[dict[str, tuple[int, ...]], str | None, list[tuple[str, str, str]]]:
    """What defines a built network: key -> shape, the generated forward code, and each layer's type and settings."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    layers = [(name, type(m).__qualname__, m.extra_repr()) for name, m in model.named_modules() if name]
    return shapes, getattr(model, "code", None), layers


def _first_difference(ours: Any, theirs: Any) -> str:
    (s1, c1, l1), (s2, c2, l2) = ours, theirs
    if s1 != s2:
        key = next((k for k in [*s1, *s2] if s1.get(k) != s2.get(k)), "?")
        return f"key {key!r}: {s1.get(key, 'missing')} here vs {s2.get(key, 'missing')} in spandrel's network"
    if l1 != l2:
        pairs = [(x, y) for x, y in zip(l1, l2) if x != y]
        if pairs:
            a, b = pairs[0]
        else:
            a, b = (l1[len(l2):] or [None])[0], (l2[len(l1):] or [None])[0]
        return f"layer {clip(str(a), 200)} here vs {clip(str(b), 200)} in spandrel's network"
    return "the graph (forward code) differs"


def _check_spandrel_network(model: nn.Module, family: _Family, official: StateDict) -> None:
    """Raise unless the network spandrel builds from ``official`` (names and shapes) is ``model``'s."""
    info = model_info(model)
    name = info.spec.name
    if float(info.input_range) != 1.0:
        raise SpandrelFormatError(f"spec {name!r} takes RGB in [0, {info.input_range:g}]; spandrel's "
                                  f"{family.architecture} takes [0, 1]")
    try:
        variables = family.variables(official)
        with torch.device("meta"):
            peer = build_model(family.spec, check_shapes=False, **variables)
    except (SpandrelFormatError, SpecError) as exc:
        raise SpandrelFormatError(f"spec {name!r} has spandrel's {family.architecture} key names, but spandrel could "
                                  f"not rebuild it: {exc}") from None
    ours, theirs = _structure(model), _structure(peer)
    if ours != theirs:
        settings = ", ".join(f"{k}={v}" for k, v in variables.items())
        raise SpandrelFormatError(f"spec {name!r} has spandrel's {family.architecture} key names but is not the "
                                  f"network spandrel builds from them ({family.spec} with {settings}): "
                                  f"{_first_difference(ours, theirs)}")


def _as_model(model_or_spec: Any, meta: bool) -> nn.Module:
    if isinstance(model_or_spec, nn.Module):
        model_info(model_or_spec)  # TypeError for modules not built by srblocks.build_model
        return model_or_spec
    if meta:
        with torch.device("meta"):
            return build_model(model_or_spec, check_shapes=False)
    return build_model(model_or_spec)


def official_state_dict(model: nn.Module, state_dict: StateDict | None = None) -> dict[str, torch.Tensor]:
    """``model``'s weights under the official key names (:func:`srblocks.weights.model_to_official_keys`); when
    spandrel would detect the result as one of its architectures, it must also be exactly the network spandrel
    builds (else :class:`SpandrelFormatError`), so that no file srblocks writes loads into a different network.
    Used by ``srblocks export --format safetensors --keys official``."""
    official = model_to_official_keys(model, state_dict)
    family = _family(official)
    if family is not None:
        _check_spandrel_network(model, family, official)
    return official


def to_spandrel_state_dict(
    model_or_spec: nn.Module | str | Path | Mapping[str, Any],
    state_dict: StateDict | str | Path | None = None,
) -> dict[str, torch.Tensor]:
    """Our weights under the key names spandrel detects (its ``ModelLoader().load_from_state_dict``).

    Args:
        model_or_spec: a model from :func:`srblocks.build_model` (any variables), or a spec (name, path, mapping)
            built with its default variables.
        state_dict: weights under the model's own (srblocks) keys, a mapping or a checkpoint file; default: the
            model's current weights (``model.state_dict()``; for a spec, its fresh initialization).

    Returns:
        A new dict official key -> tensor (the same tensors, detached; the model's layout and dtype). spandrel
        detects the architecture (``SAFMN``, ``RCAN``), the scale and widths/depths from it and builds the same
        network: on float32 RGB input x in [0, 1], its ``descriptor.model(x)`` equals ``model(x)`` within 1e-5
        absolute. For RCAN no ``sub_mean``/``add_mean`` are written, so spandrel builds RCAN without mean shift
        and with ``rgb_range`` 1, which is srblocks' rcan.

    Raises:
        SpandrelFormatError: the spec is none of spandrel's architectures (srblocks converts
            :data:`SUPPORTED_ARCHITECTURES`; also when it has no official key layout at all), or has their key
            names but another network, or ``state_dict`` does not fit the model; the message names the spec.
    """
    model = _as_model(model_or_spec, meta=state_dict is not None)
    name = model_info(model).spec.name
    own = model.state_dict()
    if state_dict is None:
        state = dict(own)
    else:
        state = read_state_dict(state_dict)
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or mismatched:
            raise SpandrelFormatError(clip(
                f"spec {name!r}: the state dict does not fit the model ({len(missing)} missing, {len(unexpected)} "
                f"unexpected, {len(mismatched)} mis-shaped key(s): "
                f"{', '.join(brief(k, 60) for k in (missing + unexpected + mismatched)[:6])}); it must use "
                "srblocks' key names (model.state_dict())", 1500))
    try:
        official = model_to_official_keys(model, state)
    except SpandrelFormatError:
        raise
    except WeightsError as exc:
        raise SpandrelFormatError(f"spec {name!r}: spandrel has no architecture for it (srblocks converts "
                                  f"{', '.join(SUPPORTED_ARCHITECTURES)}: specs safmn*, rcan, rcan_b), and {exc}"
                                  ) from None
    family = _family(official)
    if family is None:
        raise SpandrelFormatError(f"spec {name!r}: spandrel has no architecture for its weights (official keys "
                                  f"{_describe_keys(official)}); srblocks converts "
                                  f"{', '.join(SUPPORTED_ARCHITECTURES)} (specs safmn*, rcan, rcan_b)")
    _check_spandrel_network(model, family, official)
    return {k: v.detach() for k, v in official.items()}
