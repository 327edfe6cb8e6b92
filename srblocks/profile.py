"""Model profiling: parameters, MACs, activations, convolutions, peak inference memory and latency.

Counting runs the model once on the ``meta`` device (no real arithmetic, so 1280x720 outputs profile in well under a
second) under two dispatch modes:

* MACs come from torch's maintained FLOP formulas (``torch.utils.flop_counter.flop_registry``, the ones
  ``FlopCounterMode`` uses; 2 FLOPs per multiply-accumulate, we divide by 2), applied in the same single dispatch
  pass as the other counters. They cover convolutions (transposed ones at input resolution), mm/addmm/bmm/baddbmm
  (linear layers, attention matmuls) and scaled-dot-product attention. We add the fvcore rules for interpolation:
  nearest upsampling 1 MAC and bilinear 4 MACs per output element. Norms, activations,
  element-wise ops, pooling and pixel shuffle count 0 (as in fvcore for the hand-written norms of the papers), so the
  total equals fvcore's for the shipped specs.
* Activations (fvcore definition): output elements of convolutions and matrix multiplications; ``convs`` is the
  number of convolution calls.
* Peak memory: every op output that allocates a new storage adds its bytes to a live counter, and a finalizer on the
  storage subtracts them when it is freed (after its last consumer); the maximum is the activation peak. Parameters,
  buffers and the input are added so the figure compares with ``torch.cuda.max_memory_allocated`` (allocator
  rounding is not modelled).
* The CPU convolution's own buffers, measured with ``torch.profiler`` memory events (see
  :func:`conv_transient_bytes`): on contiguous (NCHW) tensors a k x k (k > 1) convolution runs in oneDNN's blocked
  layout, so the input and output are reordered into channel blocks (8 channels on AVX2, 16 on AVX-512) and back
  (1x1 convolutions too when more than one thread runs); a transposed convolution keeps column buffers of about the
  input's size per thread plus one. channels_last convolutions need no reorder. The figure is for the current
  ``torch.get_num_threads()``. The remaining oneDNN scratchpad (<= 0.15 MiB at 90x160) is not
  modelled.

Latency is measured for real on the chosen device: median of ``runs`` forward passes after ``warmup`` in
``inference_mode``, with the thread count recorded.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from math import prod
from typing import Any

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils import flop_counter

__all__ = ["Profile", "profile", "count_params", "measure_latency", "measure_peak_memory", "conv_transient_bytes"]

aten = torch.ops.aten

_CONV_OPS = {aten.convolution.default, aten._convolution.default, aten.convolution_overrideable.default}
_MATMUL_PACKETS = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm}


def _per_output_element(macs_per_element: int):
    def count(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
        return 2 * macs_per_element * out_val.numel()  # torch's flop formulas use 2 per MAC; so do we

    return count


def _sdpa_cpu(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, out_val: Any = None,
              **kwargs: Any) -> int:
    # torch's registry covers the CUDA SDPA kernels; the CPU flash kernel does the same two matmuls
    return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape)


#: aten op packet -> FLOP formula (2 per MAC). torch's maintained registry (convolutions, matmuls, attention)
#: plus the fvcore rules for interpolation and the CPU attention kernel.
FLOP_FORMULAS: dict[Any, Any] = {
    **flop_counter.flop_registry,
    aten.upsample_nearest2d: _per_output_element(1),
    aten._upsample_nearest_exact2d: _per_output_element(1),
    aten.upsample_bilinear2d: _per_output_element(4),
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
}


@dataclass
class Profile:
    """Profiling result. Units: MACs and activations are counts, memory in bytes, latency in milliseconds."""

    params: int
    macs: int
    acts: int
    convs: int
    peak_memory_bytes: int
    peak_activation_bytes: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    macs_by_op: dict[str, int] = field(default_factory=dict)
    latency_ms: float | None = None
    latency_threads: int | None = None
    latency_device: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@contextmanager
def _num_threads(threads: int | None) -> Iterator[int]:
    """Run with ``threads`` CPU threads (None: leave as is); yields the count in use and restores the previous one."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _channel_block() -> int:
    """oneDNN's channel block for blocked CPU layouts (nChw8c on AVX2, nChw16c on AVX-512)."""
    return 16 if "AVX512" in torch.backends.cpu.get_cpu_capability() else 8


class _CpuAttentionOnMeta(TorchFunctionMode):
    """On meta tensors ``F.scaled_dot_product_attention`` falls back to the math path (an L x L matrix in memory);
    on CPU it runs the fused flash kernel, which keeps no such matrix. Route meta calls without dropout to that
    kernel, so that memory is counted as on CPU (and MACs by the same formula). Where the value head size dv differs
    from the query's d, CPU callers pad the narrower side (HPINet); the output is then the (..., L, dv) result:
    a view of the d-wide one when dv < d, a fresh tensor when dv > d."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention and len(args) == 3 and set(kwargs) <= {"scale"}:
            q, k, v = args
            if isinstance(q, torch.Tensor) and q.is_meta and q.dim() >= 3 and q.shape[:-2] == v.shape[:-2]:
                out = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False,
                                                                      scale=kwargs.get("scale"))[0]
                dv = v.shape[-1]
                if dv < q.shape[-1]:
                    return out[..., :dv]
                if dv > q.shape[-1]:
                    return out.new_empty((*out.shape[:-1], dv))
                return out
        return func(*args, **kwargs)


def _is_channels_last(t: Any) -> bool:
    return (isinstance(t, torch.Tensor) and t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
            and not t.is_contiguous())


def conv_transient_bytes(func: Any, args: tuple[Any, ...], out: torch.Tensor, threads: int | None = None) -> int:
    """Bytes a CPU convolution holds beyond its output while it runs (0 where it needs none).

    Measured with ``torch.profiler`` memory events (torch 2.14, oneDNN, AVX2; ``benchmarks/memory_model.py``
    checks whole networks). Let x be the input (C_in channels), y the output (C_out), ``blocked`` the bytes with
    the channel count rounded up to the channel block:

    * contiguous (NCHW) k x k convolution, k <= 7: the input and output are reordered into the blocked layout,
      peak ``max(blocked(x) + blocked(y), blocked(y) + y)`` plus the weights' reorder: returns that minus y. For
      1x1 kernels only with ``threads`` > 1 or a batch of 16 or more (else PyTorch runs them without oneDNN);
    * contiguous, k >= 8 (oneDNN keeps the plain input): about one more y;
    * transposed convolution (never oneDNN): column buffers of about the input per thread (NCHW: one more input);
    * channels_last (not transposed) and non-float tensors: 0.

    ``threads`` defaults to ``torch.get_num_threads()``: the prediction is for the current thread setting.
    """
    if func not in _CONV_OPS or len(args) < 7:
        return 0
    x, weight, transposed = args[0], args[1], bool(args[6])
    if x.dim() != 4 or not x.is_floating_point():
        return 0
    threads = threads or torch.get_num_threads()
    item = x.element_size()
    channels_last = _is_channels_last(x) or _is_channels_last(weight)
    if transposed:
        return (int(not channels_last) + threads) * x.numel() * item
    pointwise = weight.shape[2] * weight.shape[3] == 1
    if channels_last or pointwise and threads == 1 and x.shape[0] < 16:
        return 0
    out_bytes = out.numel() * item
    if max(weight.shape[2], weight.shape[3]) >= 8:
        return out_bytes
    block = _channel_block()
    n, c_in, h, w = x.shape
    _, c_out, oh, ow = out.shape
    blocked_in = n * -(-c_in // block) * block * h * w * item
    blocked_out = n * -(-c_out // block) * block * oh * ow * item
    return max(blocked_in + blocked_out, blocked_out + out_bytes) - out_bytes + weight.numel() * item


class _CountingMode(TorchDispatchMode):
    """One pass counting MACs by op, conv/matmul output elements and conv calls, and the peak of live storages."""

    def __init__(self, known_storages: list[torch.UntypedStorage]) -> None:
        super().__init__()
        self.flops_by_op: dict[str, int] = {}
        self.acts = 0
        self.convs = 0
        self.live = 0
        self.peak = 0
        self._seen: set[int] = {id(s) for s in known_storages}
        self._keep_known = known_storages

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _CONV_OPS and out.is_meta and out.dim() == 4 and any(map(_is_channels_last, args[:2])):
            # the meta kernel always returns NCHW; on CPU a channels_last input or weight gives channels_last
            out = torch.empty_like(out, memory_format=torch.channels_last)
        formula = FLOP_FORMULAS.get(func._overloadpacket)
        if formula is not None:
            name = str(func._overloadpacket)
            self.flops_by_op[name] = self.flops_by_op.get(name, 0) + int(formula(*args, **kwargs, out_val=out))
        if func in _CONV_OPS:
            self.convs += 1
            self.acts += out.numel()
        elif func._overloadpacket in _MATMUL_PACKETS:
            self.acts += out.numel()
        elif func._overloadpacket is aten._scaled_dot_product_flash_attention_for_cpu:
            # the fused kernel's two matmuls (q k^T: ... x L x S, then x v: ... x L x dv) count as the explicit form's
            q, k, v = args[:3]
            self.acts += q.numel() // q.shape[-1] * (k.shape[-2] + v.shape[-1])
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = id(storage)
                if key not in self._seen:
                    self._seen.add(key)
                    nbytes = storage.nbytes()
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key, nbytes)
        if func in _CONV_OPS:
            self.peak = max(self.peak, self.live + conv_transient_bytes(func, args, out))
        return out


@dataclass(frozen=True)
class _NodeStats:
    """What one block does for given input shapes: MACs by op, acts, convs, the peak of its own new allocations,
    and its output (shape, dtype, freshly allocated bytes, or the index of the input it is a view of)."""

    flops_by_op: tuple[tuple[str, int], ...]
    acts: int
    convs: int
    internal_peak: int
    out_shape: tuple[int, ...]
    out_stride: tuple[int, ...]
    out_dtype: torch.dtype
    out_new_bytes: int
    out_alias: int | None


_NODE_CACHE: OrderedDict[Any, _NodeStats] = OrderedDict()
_NODE_CACHE_SIZE = 4096


def _node_key(module: nn.Module, inputs: list[torch.Tensor]) -> Any:
    """Cache key: the block's constructor arguments (recorded by the assembler), its parameter layout and the input
    shapes. None (no caching) for modules not built from a spec or taking sub-modules as arguments."""
    args = getattr(module, "srblocks_args", None)
    if args is None or any(isinstance(v, nn.Module) for v in args.values()):
        return None
    layout = tuple((k, tuple(v.shape), v.stride(), v.dtype) for k, v in module.state_dict().items())
    return (type(module), repr(sorted(args.items())), layout,
            tuple((tuple(t.shape), t.stride(), t.dtype) for t in inputs), torch.get_num_threads())


def _measure_node(module: nn.Module, inputs: list[torch.Tensor], dtype: torch.dtype) -> _NodeStats:
    meta_state = {
        name: torch.empty_like(t, device="meta", dtype=dtype if t.is_floating_point() else t.dtype)
        for name, t in [*module.named_parameters(), *module.named_buffers()]
    }
    known = [*(t.untyped_storage() for t in inputs), *(t.untyped_storage() for t in meta_state.values())]
    mode = _CountingMode(known)
    with mode:
        out = torch.func.functional_call(module, meta_state, tuple(inputs), strict=False)
    storage = out.untyped_storage()
    alias = next((i for i, t in enumerate(inputs) if t.untyped_storage() is storage), None)
    return _NodeStats(tuple(sorted(mode.flops_by_op.items())), mode.acts, mode.convs, mode.peak, tuple(out.shape),
                      out.stride(), out.dtype, 0 if alias is not None else storage.nbytes(), alias)


def _profile_graph(model: fx.GraphModule, x: torch.Tensor, dtype: torch.dtype, cache: bool) -> tuple[
        dict[str, int], int, int, int, tuple[int, ...]]:
    """Node-by-node meta profile of an assembled model: (flops_by_op, acts, convs, activation peak, output shape).

    Identical blocks on identical input shapes (e.g. 8 FMMs) are measured once. Memory is tracked at graph level:
    each node may allocate up to its internal peak on top of the values alive before it; its output stays alive
    until its last consumer has run (views share their input's bytes), exactly as the generated forward frees them.
    """
    nodes = list(model.graph.nodes)
    last_use: dict[fx.Node, fx.Node] = {}
    for node in nodes:
        for arg in node.all_input_nodes:
            last_use[arg] = node
    values: dict[fx.Node, torch.Tensor] = {}
    group: dict[fx.Node, int | None] = {}
    group_bytes: dict[int, int] = {}
    group_refs: dict[int, int] = {}
    flops: dict[str, int] = {}
    acts = convs = live = peak = 0
    output_shape: tuple[int, ...] = ()
    for node in nodes:
        if node.op == "placeholder":
            values[node], group[node] = x, None
            continue
        if node.op == "output":
            output_shape = tuple(values[node.args[0]].shape)
            break
        if node.op != "call_module" or node.kwargs:
            raise _NotAssembled
        module = model.get_submodule(str(node.target))
        inputs = [values[a] for a in node.args]  # type: ignore[index]
        key = _node_key(module, inputs) if cache else None
        stats = _NODE_CACHE.get(key) if key is not None else None
        if stats is None:
            stats = _measure_node(module, inputs, dtype)
            if key is not None:
                _NODE_CACHE[key] = stats
                if len(_NODE_CACHE) > _NODE_CACHE_SIZE:
                    _NODE_CACHE.popitem(last=False)
        for op, count in stats.flops_by_op:
            flops[op] = flops.get(op, 0) + count
        acts, convs = acts + stats.acts, convs + stats.convs
        peak = max(peak, live + stats.internal_peak)
        values[node] = torch.empty_strided(stats.out_shape, stats.out_stride, dtype=stats.out_dtype, device="meta")
        if stats.out_alias is not None:
            group[node] = group[node.args[stats.out_alias]]  # type: ignore[index]
            if group[node] is not None:
                group_refs[group[node]] += 1
        else:
            gid = len(group_bytes)
            group[node], group_bytes[gid], group_refs[gid] = gid, stats.out_new_bytes, 1
            live += stats.out_new_bytes
        for arg in set(node.all_input_nodes):
            if last_use.get(arg) is node and group.get(arg) is not None:
                gid = group[arg]
                group_refs[gid] -= 1
                if group_refs[gid] == 0:
                    live -= group_bytes[gid]
            if last_use.get(arg) is node:
                values.pop(arg, None)
    return flops, acts, convs, peak, output_shape


class _NotAssembled(Exception):
    """The GraphModule has nodes the node-level profiler does not handle; fall back to one whole forward."""


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (buffers such as BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def _tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def profile(
    model: nn.Module,
    lr_size: tuple[int, int] = (180, 320),
    *,
    in_channels: int = 3,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    latency: bool = False,
    runs: int = 10,
    warmup: int = 3,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    cache: bool = True,
) -> Profile:
    """Profile ``model`` for a (batch, in_channels, *lr_size) input. See the module docstring for what counts.

    Models from :func:`srblocks.build_model` are profiled node by node and identical blocks on identical input
    shapes are counted once (``cache=False`` measures every node); other modules run once as a whole.

    ``latency=True`` also measures the median forward time on ``device`` with ``threads`` CPU threads. The peak
    memory is predicted for ``threads`` CPU threads too (default: the current ``torch.get_num_threads()``), since
    some CPU convolutions allocate per thread.
    """
    height, width = lr_size
    shape = (batch, in_channels, height, width)
    was_training = model.training
    model.eval()
    try:
        meta_state = {
            name: torch.empty_like(t, device="meta", dtype=dtype if t.is_floating_point() else t.dtype)
            for name, t in [*model.named_parameters(), *model.named_buffers()]
        }
        x = torch.empty(shape, device="meta", dtype=dtype)
        # no_grad (not inference_mode): composite ops decompose to aten primitives
        with torch.no_grad(), _CpuAttentionOnMeta(), _num_threads(threads):
            try:
                if not isinstance(model, fx.GraphModule):
                    raise _NotAssembled
                flops, acts, convs, act_peak, out_shape = _profile_graph(model, x, dtype, cache)
            except _NotAssembled:
                known = [x.untyped_storage(), *(t.untyped_storage() for t in meta_state.values())]
                mem = _CountingMode(known)
                with mem:
                    out = torch.func.functional_call(model, meta_state, (x,), strict=False)
                out_shape = tuple(out.shape)
                del out
                flops, acts, convs, act_peak = mem.flops_by_op, mem.acts, mem.convs, mem.peak
        by_op = {k: v // 2 for k, v in flops.items()}
        weights_bytes = _tensor_bytes(meta_state.values())
        result = Profile(
            params=count_params(model),
            macs=sum(by_op.values()),
            acts=acts,
            convs=convs,
            peak_memory_bytes=act_peak + weights_bytes + _tensor_bytes([x]),
            peak_activation_bytes=act_peak,
            input_shape=shape,
            output_shape=out_shape,
            macs_by_op=by_op,
        )
        if latency:
            result.latency_ms, result.latency_threads = measure_latency(
                model, shape, runs=runs, warmup=warmup, threads=threads, device=device, dtype=dtype
            )
            result.latency_device = str(device)
    finally:
        model.train(was_training)
    return result


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    runs: int = 10,
    warmup: int = 3,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[float, int]:
    """(median milliseconds per forward pass, CPU threads used) in eval/inference mode on ``device``."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        with _num_threads(threads) as used_threads:
            params = list(model.parameters())
            original_device = params[0].device if params else torch.device("cpu")
            model.to(device)
            x = torch.rand(input_shape, device=device, dtype=dtype)
            times = []
            with torch.inference_mode():
                for i in range(warmup + runs):
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    start = time.perf_counter()
                    model(x)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    if i >= warmup:
                        times.append((time.perf_counter() - start) * 1000.0)
            model.to(original_device)
    finally:
        model.train(was_training)
    return statistics.median(times), used_threads


def measure_peak_memory(model: nn.Module, input_shape: tuple[int, ...], *, threads: int | None = None,
                        dtype: torch.dtype = torch.float32) -> int:
    """Measured CPU activation peak in bytes: the running sum of ``torch.profiler`` memory events over one forward
    pass (after one warm-up pass) in inference mode, on a random input of ``input_shape``.

    The input and the weights exist before the profiled pass, so the figure compares with
    :attr:`Profile.peak_activation_bytes` (which includes the output). Exact from run to run for a given thread
    count; transposed convolutions' buffers grow with ``threads``.
    """
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    was_training = model.training
    model.eval()
    try:
        x = torch.rand(input_shape, dtype=dtype)
        with torch.inference_mode(), _num_threads(threads):
            model(x)
            with torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                model(x)
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        live = peak = 0
        for event in sorted(events, key=lambda e: e.start_ns()):
            live += event.nbytes()
            peak = max(peak, live)
    finally:
        model.train(was_training)
    return peak
