"""Real execution of a configuration on this CPU's kernels: torch.ao FX int8 conversion with per-layer qconfigs.

:func:`build_real_model` turns the fp32 base and a :class:`CompressionConfig` into the model PyTorch would actually
run: int8 layers through ``torch.ao`` static quantization (x86 backend; fbgemm/onednn kernels), weight-only int
Linear layers through dynamic int8, bf16/fp16 layers cast to that dtype, everything else fp32 eager. It reports
which precision each layer really executed in and why anything fell back. The fake-quant simulation is never used
here; the configuration arrives as the same :class:`~qtradeoff.core.compression.plan.Plan` the simulation reads.
Conversion costs about a second, so callers keep built models in a :class:`RealModelCache`. torch's quantized
engine is a process-wide setting: :func:`quantized_engine` sets it for the work that needs it and restores it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qtradeoff.core import runtime
from qtradeoff.core.compression.plan import Plan
from qtradeoff.core.compression.quantize import RangeObserver, int_range, qparams_from_range
from qtradeoff.core.config import LayerSettings
from qtradeoff.core.measurement import int8_graph
from qtradeoff.core.precision import FLOAT_FAMILIES, bits_of, is_integer, torch_dtype

ENGINE = "x86"
# Float precisions with kernels of their own on CPU (the registry's float families besides fp32): name -> dtype.
_FLOAT_DTYPES = {name: torch_dtype(name) for name in FLOAT_FAMILIES if name != "fp32"}
# torch.ao has dynamic int8 kernels for these recurrent layers (weights int8, activations quantized per call)
_DYNAMIC_RNN = frozenset({"LSTM", "GRU"})
_FLOAT_NAMES = {dtype: name for name, dtype in _FLOAT_DTYPES.items()}


@dataclass(eq=False)
class RealModel:
    """A model built from real kernels, plus what actually ran where and why."""

    module: nn.Module
    executed_precisions: dict[str, str]  # layer -> "int8" | "int8-dynamic" | "bf16" | "fp16" | "fp32"
    note: str  # fallbacks and caveats, one sentence each; "" when everything ran as configured
    converted: bool  # False when the int8 conversion failed and the model is the nearest eager fallback
    # the quantize/dequantize steps the int8 graph still runs (int8_graph.boundaries); () for eager models
    boundaries: tuple[str, ...] = ()


@contextlib.contextmanager
def quantized_engine(engine: str = ENGINE):
    """torch's quantized CPU engine set to ``engine`` for the block, and the previous one restored after."""
    previous = torch.backends.quantized.engine
    if previous != engine:
        torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        if torch.backends.quantized.engine != previous:
            torch.backends.quantized.engine = previous


@functools.cache
def saturating_int8() -> bool:
    """Whether this CPU's int8 kernels add pairs of u8×s8 products in 16 bits with saturation (x86 without VNNI:
    AVX2's and AVX-512BW's ``vpmaddubsw``). There, activations using the whole 0..255 range overflow the pairwise
    sums (255·127·2 > 32767) and the real model silently computes something else: measured here on an AVX2 EPYC,
    a Linear's outputs were off by 6.6 output steps at 0..255 and by half a step at 0..127. PyTorch's own x86
    configurations reduce activations to 7 bits for the same reason. VNNI (``vpdpbusd``) accumulates in 32 bits.
    Off Linux, where the flags cannot be read, the answer is conservatively yes."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            flags = info.read()
    except OSError:
        return True
    return not any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


ACTIVATION_BITS_NO_VNNI = 7


def real_activation_bits(bits: int) -> int:
    """Bits the real int8 model's activations use for a configured ``bits``: at most 7 where kernels saturate."""
    return min(bits, ACTIVATION_BITS_NO_VNNI) if saturating_int8() else bits


class _Silenced:
    """torch.ao prints deprecation and prototype warnings on every prepare/convert; they are not our users' concern."""

    def __enter__(self):
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _observer_classes():
    # Imported lazily: torch.ao.quantization warns on import and is only needed when converting.
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    class CalibratedActivationObserver(MinMaxObserver):
        """Activation observer whose range is exactly the one :mod:`qtradeoff.core.compression.quantize` calibrates.

        Reuses :class:`~qtradeoff.core.compression.quantize.RangeObserver` (minmax / percentile / mse) and
        :func:`~qtradeoff.core.compression.quantize.qparams_from_range`, so the real model uses the simulation's
        activation grid. Storage is always quint8; a symmetric or narrower grid is placed inside 0..255.
        """

        def __init__(self, method="minmax", percentile=99.99, bits=8, symmetric=False, **kwargs):
            bits = real_activation_bits(bits)  # 7 where the CPU's u8×s8 pair sums would saturate
            lo, hi = int_range(bits, symmetric)
            offset = (1 << (bits - 1)) if symmetric else 0
            super().__init__(dtype=torch.quint8, qscheme=torch.per_tensor_affine, quant_min=lo + offset,
                             quant_max=hi + offset, **kwargs)
            self.method, self.percentile, self.bits, self.symmetric = method, percentile, bits, symmetric
            self.offset = offset
            self.ranges = RangeObserver()

        def forward(self, x_orig):
            if x_orig.numel():
                self.ranges.observe(x_orig)
            return super().forward(x_orig)

        @torch.jit.export
        def calculate_qparams(self):
            lo, hi = self.ranges.range(self.method, percentile=self.percentile, bits=self.bits,
                                       symmetric=self.symmetric)
            scale, zero_point = qparams_from_range(torch.tensor(lo), torch.tensor(hi), self.bits, self.symmetric)
            return scale.reshape(1), (zero_point + self.offset).reshape(1).to(torch.int32)

    return MinMaxObserver, PerChannelMinMaxObserver, CalibratedActivationObserver


def _weight_observer(settings: LayerSettings):
    """torch.ao weight observer on the same grid as quantize.int_qparams (signed storage, full range)."""
    MinMaxObserver, PerChannelMinMaxObserver, _ = _observer_classes()
    bits = bits_of(settings.weight.precision)
    half = 1 << (bits - 1)
    # quantize.py's asymmetric grid is 0..2^b-1; stored signed it is -2^(b-1)..2^(b-1)-1 with the zero point
    # shifted by 2^(b-1): same scale, same dequantized values.
    kwargs = dict(dtype=torch.qint8, quant_min=-half, quant_max=half - 1)
    if settings.weight.granularity == "per_channel":
        scheme = torch.per_channel_symmetric if settings.weight.symmetric else torch.per_channel_affine
        return PerChannelMinMaxObserver.with_args(ch_axis=0, qscheme=scheme, **kwargs)
    scheme = torch.per_tensor_symmetric if settings.weight.symmetric else torch.per_tensor_affine
    return MinMaxObserver.with_args(qscheme=scheme, **kwargs)


def _activation_observer(settings: LayerSettings):
    *_, CalibratedActivationObserver = _observer_classes()
    spec = settings.activation
    return CalibratedActivationObserver.with_args(method=spec.calibration, percentile=spec.percentile,
                                                  bits=bits_of(spec.precision), symmetric=spec.symmetric)


def planned_precision(settings: LayerSettings, kind: str) -> tuple[str, str]:
    """The precision a layer can really execute in on this CPU, and why when that differs from the config.

    ``kind`` is the module class name (``Conv2d``, ``Linear``, ...).
    """
    if settings.skip:
        return "fp32", ""
    weight, act = settings.weight.precision, settings.activation.precision
    if kind in _DYNAMIC_RNN and is_integer(weight) and bits_of(weight) <= 8:
        if bits_of(weight) < 8:
            return "fp32", (f"{weight} {kind} weights: the dynamic int8 {kind} kernel cannot keep them on their "
                            f"{weight} grid; runs fp32")
        return "int8-dynamic", (f"{kind} runs dynamic int8 (its inputs are quantized per call, not on a calibrated "
                                "grid)" if is_integer(act) else "")
    if is_integer(weight) and bits_of(weight) <= 8:
        if is_integer(act) and bits_of(act) <= 8:
            if bits_of(weight) < 8 or bits_of(act) < 8:
                return "int8", (f"{weight} weights with {act} activations run on int8 kernels (values kept on "
                                f"their {weight}/{act} grids)")
            return "int8", ""
        if kind == "Linear":
            return "int8-dynamic", f"weight-only {weight} Linear runs dynamic int8 (activations quantized per batch)"
        return "fp32", f"weight-only {weight} {kind} has no CPU kernel; runs fp32"
    if weight in _FLOAT_DTYPES and (act == "fp32" or act == weight):
        return weight, ""
    if weight == "fp32" and act == "fp32":
        return "fp32", ""
    return "fp32", f"{weight} weights with {act} activations have no CPU kernel; runs fp32"


class _CastLayer(nn.Module):
    """Runs one layer in bf16/fp16 between float32 neighbours (the cast is part of the real cost)."""

    def __init__(self, layer: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.layer = layer.to(dtype)
        self.dtype = dtype

    def forward(self, *args):
        out = self.layer(*_cast(args, self.dtype))
        if isinstance(out, torch.fx.Proxy) and isinstance(self.layer, nn.RNNBase):
            # traced by FX, where a recurrent layer's (output, state) is one Proxy: cast its parts
            state = (out[1][0], out[1][1]) if isinstance(self.layer, nn.LSTM) else out[1]
            return out[0].to(torch.float32), _cast(state, torch.float32)
        return _cast(out, torch.float32)


def _cast(value, dtype: torch.dtype):
    """Floating tensors in ``value`` (a tensor or nested tuples/lists, e.g. an RNN's output and state) as
    ``dtype``; anything else unchanged."""
    if isinstance(value, torch.fx.Proxy):  # traced by FX: recorded as a cast (a tensor in every traced layer here)
        return value.to(dtype)
    if torch.is_tensor(value):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(item, dtype) for item in value)
    return value


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _apply_pruning(module: nn.Module, plan: Plan) -> None:
    """Zero the pruned weights in place (on a copy): the kernels stay dense, the values match the plan.

    The plan's masks come from the weights the simulation prunes (BatchNorm folded); folding scales whole
    channels, so the same positions are zero in the unfolded weight.
    """
    for layer in plan:
        if not layer.pruned:
            continue
        target = module.get_submodule(layer.name)
        with torch.no_grad():
            for name, mask in layer.masks.items():
                if mask is not None:
                    weight = getattr(target, name)
                    weight.mul_(mask.to(weight.dtype))


def _executed(module: nn.Module, name: str) -> str:
    """What a layer of a built model really is, read from its module class (not from the plan)."""
    try:
        layer = module.get_submodule(name)
    except AttributeError:
        return "fp32"
    if not isinstance(layer, _CastLayer):
        # FX traces through _CastLayer, keeping only its inner layer: read the dtype the weights really have
        inner = getattr(layer, "layer", None)
        first = next(inner.parameters(), None) if isinstance(inner, nn.Module) else None
        dtype = getattr(first, "dtype", None)
        if dtype in _FLOAT_NAMES:
            return _FLOAT_NAMES[dtype]
    origin = type(layer).__module__
    if "quantized.dynamic" in origin:
        return "int8-dynamic"
    if "quantized" in origin:
        return "int8"
    if isinstance(layer, _CastLayer):
        return _FLOAT_NAMES[layer.dtype]
    return "fp32"


def as_executed(plan: Plan):
    """The configuration the real int8 model of ``plan`` computes, when that is not ``plan.config`` itself (None
    when it is): on a CPU whose int8 kernels saturate (:func:`saturating_int8`) the static int8 layers' activations
    run on :data:`ACTIVATION_BITS_NO_VNNI` bits, so the real model is that configuration's, not the configured one's.
    Export reports show its simulation beside the configured one."""
    lowered = [layer.name for layer in plan
               if planned_precision(layer.settings, layer.kind)[0] == "int8"
               and real_activation_bits(bits_of(layer.settings.activation.precision))
               < bits_of(layer.settings.activation.precision)]
    if not lowered:
        return None
    config = plan.config
    for name in lowered:
        config = config.with_layer(name, activation={"precision": f"int{ACTIVATION_BITS_NO_VNNI}"})
    return config


def planned(plan: Plan) -> dict[str, tuple[str, str]]:
    """Layer -> (precision it can really execute in here, why that differs from the configuration or "")."""
    return {layer.name: planned_precision(layer.settings, layer.kind) for layer in plan}


def build_real_model(base: nn.Module, plan: Plan, calib_inputs: torch.Tensor, *,
                     calib_batch: int = 256, rounded: Mapping[str, Any] | None = None) -> RealModel:
    """Convert ``base`` (never mutated) to real kernels as ``plan`` asks.

    Activation observers are calibrated on ``calib_inputs``; pruned weights are zeroed with the plan's masks.
    ``rounded``: layer -> the compressor's ``Rounded`` (``.weight`` BatchNorm folded, ``.bias`` or None, and the
    grid where it is not min-max) for the layers whose weights a rounding algorithm or an MSE range chose
    (:meth:`~qtradeoff.core.compression.compress.Compressor.real_weight`); the converted int8 layers get those
    values on that grid.
    """
    # torch.ao's converted modules initialise weights from the global RNG before loading ours: keep the
    # caller's random stream where it was
    with quantized_engine(), torch.random.fork_rng(devices=[]):
        real = _build_real_model(base, plan, calib_inputs, calib_batch)
        if rounded and real.converted:
            _install_rounded(real.module, rounded, plan.settings)
        return real


def _install_rounded(model: nn.Module, rounded: Mapping[str, Any], settings: Mapping[str, LayerSettings]) -> None:
    """Put the rounding algorithms' weights (and corrected biases) into the converted int8 layers, on the grid
    torch.ao chose for them (the same as the simulation's min-max grid: see :func:`_weight_observer`), or on the
    simulation's own grid where it carries one (an MSE range: torch.ao's observers only know min-max). Layers
    left in float are left alone (they run the unrounded weights, as for nearest rounding)."""
    for name, values in rounded.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        weight_of = getattr(module, "weight", None)
        if not callable(weight_of) or not hasattr(module, "set_weight_bias"):
            continue  # not a quantized module (a float layer keeps its own weights)
        current = weight_of()
        if not isinstance(current, torch.Tensor) or not current.is_quantized or \
                tuple(current.shape) != tuple(values.weight.shape):
            continue
        weight = values.weight.detach().to(torch.float32)
        if getattr(values, "scale", None) is not None:
            new = _on_grid(weight, values, settings[name].weight, current)
        elif current.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            new = torch.quantize_per_channel(weight, current.q_per_channel_scales(),
                                             current.q_per_channel_zero_points(), current.q_per_channel_axis(),
                                             current.dtype)
        else:
            new = torch.quantize_per_tensor(weight, current.q_scale(), current.q_zero_point(), current.dtype)
        bias = module.bias() if values.bias is None else values.bias.detach().to(torch.float32)
        module.set_weight_bias(new, bias)


def _on_grid(weight: torch.Tensor, values: Any, spec, current: torch.Tensor) -> torch.Tensor:
    """``weight`` quantized on the simulation's grid (``values.scale``/``zero_point`` as quantize.weight_qparams
    gives them) in the signed storage of :func:`_weight_observer`: an asymmetric grid 0..2^b-1 is stored as
    -2^(b-1)..2^(b-1)-1 with its zero point shifted by 2^(b-1) (same dequantized values)."""
    scale = values.scale.reshape(-1).to(torch.float64)
    zero_point = values.zero_point.reshape(-1).to(torch.int64)
    if not spec.symmetric:
        zero_point = zero_point - (1 << (bits_of(spec.precision) - 1))
    if current.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        return torch.quantize_per_channel(weight, scale, zero_point, current.q_per_channel_axis(), current.dtype)
    return torch.quantize_per_tensor(weight, float(scale), int(zero_point), current.dtype)


def _build_real_model(base: nn.Module, plan_: Plan, calib_inputs: torch.Tensor, calib_batch: int) -> RealModel:
    layers = {layer.name: layer.kind for layer in plan_}
    settings = plan_.settings
    plan = planned(plan_)
    notes = sorted({why for _, why in plan.values() if why})
    if saturating_int8() and any(p == "int8" and bits_of(settings[n].activation.precision) > ACTIVATION_BITS_NO_VNNI
                                 for n, (p, _) in plan.items()):
        notes.append(f"int8 activations run on a {ACTIVATION_BITS_NO_VNNI}-bit grid on this CPU (no VNNI: its int8 "
                     "kernels' 16-bit pair sums would saturate at 8 bits); accuracy is the simulation's, at 8 bits")
    if plan_.pruned:
        notes.append("pruned weights are zeroed but run on dense kernels (no sparse CPU kernel is used)")
    if isinstance(base, torch.jit.ScriptModule):
        return RealModel(base, {n: "fp32" for n in layers}, _join(
            ["TorchScript model: layers cannot be swapped for real kernels, measured fp32 as loaded"]), False)

    model = copy.deepcopy(base).eval()
    _apply_pruning(model, plan_)
    for name, (precision, _) in plan.items():
        if precision in _FLOAT_DTYPES:
            _set_submodule(model, name, _CastLayer(model.get_submodule(name), _FLOAT_DTYPES[precision]))

    static = [n for n, (p, _) in plan.items() if p == "int8"]
    recurrent = [n for n, (p, _) in plan.items() if p == "int8-dynamic" and layers[n] in _DYNAMIC_RNN]
    dynamic = [n for n, (p, _) in plan.items() if p == "int8-dynamic" and n not in recurrent]
    converted = True
    if static or dynamic:
        try:
            try:
                # Functional ops (adds, pooling, flatten) quantized too, as torch.ao's default x86 flow does, so
                # int8 chains stay int8 between layers; layers the configuration keeps out of int8 stay out.
                model = _checked(_convert_fx(model, settings, static, dynamic, calib_inputs, calib_batch,
                                             fused=bool(static)), calib_inputs)
            except Exception:
                if not static:
                    raise
                # FX can fail on ops the x86 backend has no int8 pattern for when they sit inside an int8 chain;
                # per-layer qconfigs leave everything between the named layers in fp32.
                model = _checked(_convert_fx(model, settings, static, dynamic, calib_inputs, calib_batch),
                                 calib_inputs)
                notes.append("the ops between int8 layers run in fp32 (the fused int8 graph failed to convert), "
                             "with a quantize and a dequantize around each")
        except Exception as error:  # FX tracing/conversion fails on dynamic control flow and unsupported ops
            reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
            from qtradeoff.core.measurement.subtrees import convert_by_subtrees

            partial = convert_by_subtrees(model, settings, static, dynamic, calib_inputs, calib_batch, _convert_fx,
                                          layers)
            if partial is not None:  # the largest parts FX can trace, converted one by one
                model, roots = partial
                notes.append(f"the whole model does not convert ({type(error).__name__}: {reason}); its traceable "
                             f"parts do ({', '.join(roots[:4])}{', …' if len(roots) > 4 else ''}), the rest is fp32")
            else:
                converted = False
                model = copy.deepcopy(base).eval()
                _apply_pruning(model, plan_)
                notes = [f"int8 conversion failed ({type(error).__name__}: {reason}); measured the nearest real "
                         "execution: fp32 eager" + (" with dynamic int8 Linear layers" if dynamic or static else "")]
                model = _eager_dynamic(model, [n for n in static + dynamic if layers[n] == "Linear"], settings)
    if recurrent:  # swapped in after FX: its graph calls them as leaf modules, so eager swapping is enough
        try:
            model = _eager_dynamic(model, recurrent, settings)
        except Exception as error:  # noqa: BLE001 - an RNN variant the kernels do not take stays fp32, said below
            notes.append(f"dynamic int8 {layers[recurrent[0]]} failed ({type(error).__name__}); it runs fp32")
    executed = {name: _executed(model, name) for name in layers}
    stayed = [name for name in static + dynamic + recurrent if executed[name] == "fp32"]
    if converted and stayed:
        # e.g. Swin's attention calls F.linear on its qkv/proj weights: the converter never sees a module call
        notes.append(f"{len(stayed)} layer(s) planned for int8 ran in fp32 because the model uses their weights "
                     f"outside a module call the converter can swap (e.g. {stayed[0]})")
    return RealModel(model, executed, _join(notes), converted, tuple(int8_graph.boundaries(model)))


def _join(notes: Iterable[str]) -> str:
    return "; ".join(notes)


def _checked(model: nn.Module, calib_inputs: torch.Tensor) -> nn.Module:
    """``model`` after one forward on a calibration sample: conversion errors that only show at run time
    (mixed quantized/float operands) must surface here, where they can still fall back."""
    # A failing fx GraphModule prints its generated code to stderr before raising; the caller reports the error.
    with _Silenced(), torch.no_grad(), contextlib.redirect_stderr(io.StringIO()), runtime.running():
        model(calib_inputs[:2])
    return model


def _static_qconfig(settings: LayerSettings):
    from torch.ao.quantization import QConfig

    return QConfig(activation=_activation_observer(settings), weight=_weight_observer(settings))


def _convert_fx(model: nn.Module, settings, static, dynamic, calib_inputs, calib_batch, *,
                fused: bool = False) -> nn.Module:
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.observer import PlaceholderObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    model = copy.deepcopy(model)  # prepare_fx rewrites its argument; a failed attempt must leave it usable
    if fused:
        int8_graph.traceable_shape_ops(model)
        mapping = int8_graph.fused_qconfig_mapping(model, settings, static, _static_qconfig)
    else:
        mapping = QConfigMapping().set_global(None)
        for name in static:
            mapping.set_module_name(name, _static_qconfig(settings[name]))
    for name in dynamic:
        activation = PlaceholderObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True)
        mapping.set_module_name(name, QConfig(activation=activation, weight=_weight_observer(settings[name])))
    # prepare_fx traces; its calibration runs inside
    with _Silenced(), torch.no_grad(), runtime.tracing(), int8_graph.no_stack_traces():
        prepared = prepare_fx(model, mapping, example_inputs=(calib_inputs[:1],))
        for start in range(0, len(calib_inputs), calib_batch):
            prepared(calib_inputs[start:start + calib_batch])
        converted = convert_fx(prepared)
    int8_graph.clamp_weight_grids(converted, settings, [*static, *dynamic])
    return converted


def _eager_dynamic(model: nn.Module, linear_names: list[str], settings) -> nn.Module:
    """Eager-mode dynamic int8 for Linear (and LSTM/GRU) layers: needs no tracing, so it is the fallback when FX
    fails, and the path of the recurrent layers."""
    if not linear_names:
        return model
    from torch.ao.quantization import QConfig, quantize_dynamic
    from torch.ao.quantization.observer import PlaceholderObserver

    activation = PlaceholderObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True)
    qconfigs = {n: QConfig(activation=activation, weight=_weight_observer(settings[n])) for n in linear_names}
    with _Silenced():
        model = quantize_dynamic(model, qconfigs, inplace=False)
    int8_graph.clamp_weight_grids(model, settings, linear_names)
    return model


class RealModelCache:
    """Small LRU of built real models keyed by (model identity, calibration data, config key)."""

    def __init__(self, maxsize: int = 4):
        self.maxsize = maxsize
        self._items: OrderedDict[tuple, RealModel] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0  # how many conversions ran: lets tests prove a hit costs nothing

    def get(self, key: tuple, build) -> RealModel:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        real = build()
        with self._lock:
            self.builds += 1
            self._items[key] = real
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return real

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

