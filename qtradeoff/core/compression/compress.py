"""Builds the simulated compressed model of a configuration: fake-quantized, pruned weights and activations.

A :class:`Compressor` is bound to one base model, which it never mutates. It keeps one private copy of the base
(the *simulated* model) whose layer weights are swapped per configuration, so applying a config that differs in
one layer recomputes one layer. What the simulation models, and why:

- Weights: BatchNorm that directly follows a convolution is folded into it (eval-mode statistics) before pruning
  and quantization, as deployed int8 kernels do. A layer left at fp32 and unpruned keeps its original weights and
  BatchNorm, so the all-fp32 config reproduces the base model bit for bit. Biases stay fp32 (int8 kernels keep
  them at 32 bits too).
- Activations: torch.ao's static int8 flow quantizes the input of every quantized op and its output. Between two
  compressible layers the output of one (after its fused BatchNorm/ReLU) *is* the input of the next, so
  fake-quantizing the input of every compressible layer, plus the output of the last one (the logits of a
  classifier), models the same tensors without wrapping every op. Ranges are calibrated once on the fp32 model
  (as torch.ao observers do) over the calibration inputs; statistics are cached per layer, ranges per
  (layer, method, percentile, bits, symmetric).
"""

from __future__ import annotations

import copy
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from qtradeoff.core.compression.prune import prune_mask, sparsity_for_threshold
from qtradeoff.core.compression.quantize import RangeObserver, cast_float, fake_quantize, int_range, qparams_from_range
from qtradeoff.core.config import CompressionConfig, LayerSettings, PruneSpec, WeightSpec, is_integer
from qtradeoff.core.loading.inventory import LayerInfo, inventory

_CALIB_BATCH = 64
_NATIVE_8BIT = {(0, 255): torch.quint8, (-128, 127): torch.qint8}


def _prime_quantized_tensor_warning() -> None:
    """torch warns once per process that quantized tensors are deprecated; fire that warning here, silenced,
    so the fast 8-bit activation path never raises it inside a caller (tests run with warnings as errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.quantize_per_tensor(torch.zeros(1), 1.0, 0, torch.quint8)


_prime_quantized_tensor_warning()
_WEIGHT_CACHE_ENTRIES = 4096


@dataclass
class CompressorStats:
    """Work counters, so callers and tests can see what a call recomputed."""

    weight_computations: int = 0  # processed weight tensors computed (cache misses)
    weight_cache_hits: int = 0
    calibration_passes: int = 0  # forward passes of the calibration set (at most one per Compressor)
    range_computations: int = 0  # activation ranges derived from calibration statistics (cache misses)
    applies: int = 0

    def __getitem__(self, name: str) -> int:
        return getattr(self, name)


def _get(root: nn.Module, name: str) -> nn.Module:
    module = root
    for part in name.split(".") if name else ():
        module = getattr(module, part)  # TorchScript containers do not support indexing, getattr works everywhere
    return module


def _find_conv_bn_pairs(module: nn.Module) -> tuple[dict[str, str], str]:
    """``{conv name: bn name}`` for each BatchNorm that is the sole consumer of a convolution, found by FX."""
    from torch.fx import symbolic_trace

    try:
        graph_module = symbolic_trace(module)
    except Exception as error:  # noqa: BLE001 - any tracing failure means "not traceable"
        return {}, f"BatchNorm not folded: the model is not FX-traceable ({type(error).__name__}); " \
                   "weights are quantized unfolded"
    modules = dict(graph_module.named_modules())
    pairs = {}
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
            continue
        source = node.args[0] if node.args else None
        if getattr(source, "op", None) != "call_module" or len(source.users) != 1:
            continue
        conv = modules.get(source.target)
        if isinstance(conv, nn.modules.conv._ConvNd) and conv.out_channels == modules[node.target].num_features:
            pairs[source.target] = node.target
    return pairs, ""


def _folded_bn_forward(self, x):
    # bound onto the simulated model's BatchNorm instances: identity while its statistics live in the conv
    if self._qtradeoff_folded:
        bias = getattr(self, "_qtradeoff_bias", None)
        return x if bias is None else x + bias
    return type(self).forward(self, x)


class Compressor:
    """Simulated compressed models of one base model; see the module docstring for what is simulated.

    ``apply(config)`` returns the Compressor's simulated model reconfigured for ``config``; the same module object
    is returned each time and the next ``apply`` reconfigures it (``copy.deepcopy`` it to keep one).
    """

    def __init__(self, base_module: nn.Module, calib_inputs: torch.Tensor | None = None, *,
                 example_input_shape: tuple[int, ...] | None = None, layers: list[LayerInfo] | None = None):
        self.base = base_module
        self.calib_inputs = calib_inputs
        self.notes: list[str] = []
        self.stats = CompressorStats()
        if layers is None:
            if calib_inputs is not None and len(calib_inputs) > 0:
                # a real sample also covers models whose input is not a float tensor (token ids)
                layers = inventory(base_module, example_input=calib_inputs[:1])
            elif example_input_shape is not None:
                layers = inventory(base_module, example_input_shape)
            else:
                raise ValueError("Compressor needs calib_inputs or example_input_shape to find the model's layers")
        self.inventory = layers
        self.layers: list[LayerInfo] = [info for info in self.inventory if info.compressible]
        self._by_name = {info.name: info for info in self.layers}

        with warnings.catch_warnings():
            # torch's own pickling of export-program modules warns about its internal pytree API
            warnings.simplefilter("ignore", FutureWarning)
            self.model = copy.deepcopy(base_module)
        self._modules = {info.name: _get(self.model, info.name) for info in self.layers}
        self._scripted = isinstance(self.model, torch.jit.ScriptModule)

        self._pairs, note = _find_conv_bn_pairs(base_module) if not self._scripted else (
            {}, "BatchNorm not folded: TorchScript models cannot be re-traced; weights are quantized unfolded")
        if note:
            self.notes.append(note)
        unfolded = [info.name for info in self.inventory
                    if info.kind.startswith("BatchNorm") and info.name not in self._pairs.values()]
        if unfolded and not note:
            self.notes.append("BatchNorm not folded (not the sole consumer of a convolution called as a module): "
                              + ", ".join(unfolded))
        self._bns: dict[str, nn.Module] = {}
        for conv_name, bn_name in self._pairs.items():
            bn = _get(self.model, bn_name)
            bn._qtradeoff_folded = False
            bn.forward = types.MethodType(_folded_bn_forward, bn)
            self._bns[conv_name] = bn

        # originals (what fp32 means) and folded weights/biases (what gets pruned and quantized)
        self._original: dict[str, dict[str, torch.Tensor]] = {}
        self._original_bias: dict[str, torch.Tensor | None] = {}
        self._folded: dict[str, dict[str, torch.Tensor]] = {}
        self._folded_bias: dict[str, torch.Tensor | None] = {}
        with torch.no_grad():
            for info in self.layers:
                module = self._modules[info.name]
                self._original[info.name] = {n: getattr(module, n).detach() for n in info.weight_names}
                self._original_bias[info.name] = getattr(module, "bias", None)
                if info.name in self._pairs:
                    weight, bias = _fold(module, _get(base_module, self._pairs[info.name]))
                    self._folded[info.name] = {"weight": weight}
                    self._folded_bias[info.name] = bias
                else:
                    self._folded[info.name] = self._original[info.name]
                    self._folded_bias[info.name] = self._original_bias[info.name]
        if not self._scripted:  # the simulated model is for inference; TorchScript params refuse the flag
            for module in self._modules.values():
                for param in module.parameters(recurse=False):
                    param.requires_grad_(False)

        self._weight_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._current: dict[str, tuple] = {}  # layer -> the weight key now installed in the simulated model
        # per-layer hook state lives in objects the hooks are bound to, so a deepcopy of the simulated model
        # carries its own frozen copy instead of following this Compressor's next apply()
        self._act = {info.name: _ActivationHooks() for info in self.layers}
        self._observers: dict[str, RangeObserver] | None = None
        self._output_observers: dict[str, RangeObserver] | None = None
        self._range_cache: dict[tuple, tuple[float, float]] = {}
        self._last_layer = self.layers[-1].name if self.layers else None
        self._hooks = []
        if not self._scripted:
            for info in self.layers:
                module = self._modules[info.name]
                self._hooks.append(module.register_forward_pre_hook(self._act[info.name].before))
            if self._last_layer is not None:
                module = self._modules[self._last_layer]
                self._hooks.append(module.register_forward_hook(self._act[self._last_layer].after))
        self.model.eval()

    # -- public ----------------------------------------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        """Compressible layer names in execution order (the names a config's overrides may use)."""
        return [info.name for info in self.layers]

    def apply(self, config: CompressionConfig) -> nn.Module:
        """Reconfigure and return the simulated model for ``config`` (cached per layer; the base is untouched)."""
        self.stats.applies += 1
        resolved = {info.name: config.resolve(info.name) for info in self.layers}
        needs_ranges = [name for name, s in resolved.items() if not s.skip and is_integer(s.activation.precision)]
        if needs_ranges and self._observers is None:
            self._calibrate()
        for info in self.layers:
            self._install_weights(info, resolved[info.name])
            self._install_activation(info, resolved[info.name])
        return self.model

    def weight(self, layer: str, name: str = "weight") -> torch.Tensor:
        """The tensor that compression prunes and quantizes: the layer's weight with BatchNorm folded in."""
        return self._folded[layer][name]

    def sparsity_for_threshold(self, layer: str, threshold: float, relative: bool = False) -> float:
        """Fraction of ``layer``'s weights a magnitude threshold would prune (on the weights compression uses)."""
        return sparsity_for_threshold(self.weight(layer, self._by_name[layer].weight_names[0]), threshold, relative)

    def processed_weights(self, layer: str, config: CompressionConfig) -> dict[str, torch.Tensor]:
        """The weights ``layer`` runs with under ``config`` (cached)."""
        info = self._by_name[layer]
        settings = config.resolve(layer)
        return {name: self._processed(info, name, settings) for name in info.weight_names}

    def sparsity(self, config: CompressionConfig) -> dict[str, float]:
        """Actual fraction of zero weights per compressible layer under ``config``."""
        out = {}
        for info in self.layers:
            tensors = self.processed_weights(info.name, config).values()
            total = sum(t.numel() for t in tensors)
            out[info.name] = float(sum(int((t == 0).sum()) for t in tensors)) / max(total, 1)
        return out

    def close(self) -> None:
        """Drop hooks and caches (the simulated model stays usable at its last configuration)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._weight_cache.clear()

    # -- weights ---------------------------------------------------------------------------------------------
    @staticmethod
    def _rewrites(settings: LayerSettings) -> bool:
        return not settings.skip and (settings.weight.precision != "fp32" or settings.prune.method != "none")

    def _weight_key(self, info: LayerInfo, settings: LayerSettings) -> tuple:
        if not self._rewrites(settings):
            return (info.name, "original")
        return (info.name, settings.weight, settings.prune)

    def _processed(self, info: LayerInfo, name: str, settings: LayerSettings) -> torch.Tensor:
        if not self._rewrites(settings):
            return self._original[info.name][name]
        key = (info.name, name, settings.weight, settings.prune)
        cached = self._weight_cache.get(key)
        if cached is not None:
            self._weight_cache.move_to_end(key)
            self.stats.weight_cache_hits += 1
            return cached
        self.stats.weight_computations += 1
        with torch.no_grad():
            result = process_weight(self._folded[info.name][name], settings.weight, settings.prune,
                                    out_axis=info.out_axis, in_axis=info.in_axis)
        self._weight_cache[key] = result
        if len(self._weight_cache) > _WEIGHT_CACHE_ENTRIES:
            self._weight_cache.popitem(last=False)
        return result

    def _install_weights(self, info: LayerInfo, settings: LayerSettings) -> None:
        key = self._weight_key(info, settings)
        if self._current.get(info.name) == key:
            return
        module = self._modules[info.name]
        rewrites = self._rewrites(settings)
        for name in info.weight_names:
            getattr(module, name).data = self._processed(info, name, settings)
        if info.name in self._bns:
            bn = self._bns[info.name]
            bn._qtradeoff_folded = rewrites
            bias = self._folded_bias[info.name] if rewrites else self._original_bias[info.name]
            # The folded bias is added by the (otherwise pass-through) BatchNorm, not inside the conv: oneDNN's
            # depthwise convolutions run up to 1.5x slower with a bias (5x5 depthwise on 1x1 maps in MobileNetV3),
            # which made weight-only evaluation slower than the fp32 model. Same arithmetic up to fp32 rounding.
            # Dense convolutions take the bias inside the kernel, which saves a pass over the output.
            depthwise = getattr(module, "groups", 1) > 1 and module.groups == getattr(module, "in_channels", 0)
            split = rewrites and bias is not None and info.name != self._last_layer and depthwise
            bn._qtradeoff_bias = bias.reshape(-1, *([1] * (module.weight.dim() - 2))) if split else None
            module.bias = None if (bias is None or split) else nn.Parameter(bias, requires_grad=False)
        self._current[info.name] = key

    # -- activations -----------------------------------------------------------------------------------------
    def _install_activation(self, info: LayerInfo, settings: LayerSettings) -> None:
        spec = settings.activation
        if settings.skip or spec.precision == "fp32" or info.kind == "Embedding":
            self._act[info.name].input_cast = self._act[info.name].output_cast = None
            return
        if not is_integer(spec.precision):
            cast = _float_caster(spec.precision)
            self._act[info.name].input_cast = self._act[info.name].output_cast = cast
            return
        self._act[info.name].input_cast = self._int_caster(info.name, self._observers, spec, "input")
        self._act[info.name].output_cast = (self._int_caster(info.name, self._output_observers, spec, "output")
                                            if info.name == self._last_layer else None)

    def _int_caster(self, layer: str, observers, spec, where: str) -> Callable | None:
        observer = (observers or {}).get(layer)
        if observer is None or observer.hi < observer.lo:
            return None  # never observed: this layer is not called as a module (noted at calibration)
        bits = int(spec.precision[3:])
        range_key = (layer, where, spec.calibration, spec.percentile if spec.calibration == "percentile" else None,
                     bits, spec.symmetric)
        lo_hi = self._range_cache.get(range_key)
        if lo_hi is None:
            self.stats.range_computations += 1
            lo_hi = observer.range(spec.calibration, percentile=spec.percentile, bits=bits, symmetric=spec.symmetric)
            self._range_cache[range_key] = lo_hi
        scale, zero_point = qparams_from_range(torch.tensor(lo_hi[0]), torch.tensor(lo_hi[1]), bits, spec.symmetric)
        qmin, qmax = int_range(bits, spec.symmetric)

        native = _NATIVE_8BIT.get((qmin, qmax))
        if native is not None:
            # 8-bit grids: torch's vectorized quantize/dequantize (the op the real int8 model applies to its
            # inputs) is 10-25x faster here than fake_quantize_per_tensor_affine, with the same grid and rounding.
            def cast(x: torch.Tensor) -> torch.Tensor:
                if x.dtype != torch.float32:
                    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)
                return torch.quantize_per_tensor(x, scale, zero_point, native).dequantize()

            return cast

        def cast(x: torch.Tensor) -> torch.Tensor:
            return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)

        return cast

    def _run_calibration(self, batch: int) -> None:
        for start in range(0, len(self.calib_inputs), batch):
            self.model(self.calib_inputs[start:start + batch])

    def _calibrate(self) -> None:
        """One pass of the calibration inputs through the fp32 simulated model, observing every layer's input."""
        if self._scripted:
            self._observers, self._output_observers = {}, {}
            self.notes.append("activation quantization is not simulated for TorchScript models (no module hooks)")
            return
        if self.calib_inputs is None or len(self.calib_inputs) == 0:
            raise ValueError("integer activations need calibration inputs; pass calib_inputs to the Compressor")
        self._observers = {info.name: RangeObserver() for info in self.layers}
        self._output_observers = {self._last_layer: RangeObserver()} if self._last_layer else {}
        fp32 = LayerSettings(WeightSpec(), _fp32_activation(), PruneSpec(), False)
        for info in self.layers:
            self._install_weights(info, fp32)
        for name, hooks in self._act.items():
            hooks.input_observer = self._observers[name]
            hooks.output_observer = self._output_observers.get(name)
        try:
            with torch.no_grad():
                try:
                    self._run_calibration(_CALIB_BATCH)
                except Exception:  # noqa: BLE001 - e.g. an export program specialised to batch size 1
                    for observer in (*self._observers.values(), *self._output_observers.values()):
                        observer.__init__()
                    self._run_calibration(1)
        finally:
            for hooks in self._act.values():
                hooks.input_observer = hooks.output_observer = None
        self.stats.calibration_passes += 1
        silent = [name for name, obs in self._observers.items() if obs.hi < obs.lo and
                  self._by_name[name].kind != "Embedding"]
        if silent:
            self.notes.append("activation quantization is not simulated for layers not called as modules: "
                              + ", ".join(silent))


class _ActivationHooks:
    """Forward hooks of one layer: observe (during calibration) or fake-quantize its input and output."""

    def __init__(self):
        self.input_cast: Callable | None = None
        self.output_cast: Callable | None = None
        self.input_observer: RangeObserver | None = None
        self.output_observer: RangeObserver | None = None

    def before(self, module, args):
        if self.input_observer is not None:
            first = args[0] if args else None
            if isinstance(first, torch.Tensor) and first.is_floating_point():
                self.input_observer.observe(first)
            return None
        cast = self.input_cast
        if cast is None:
            return None
        return tuple(cast(a) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)

    def after(self, module, args, output):
        if self.output_observer is not None:
            if isinstance(output, torch.Tensor):
                self.output_observer.observe(output)
            return None
        if self.output_cast is None or not isinstance(output, torch.Tensor):
            return None
        return self.output_cast(output)


def _fp32_activation():
    from qtradeoff.core.config import ActivationSpec

    return ActivationSpec()


def _float_caster(precision: str) -> Callable:
    def cast(x: torch.Tensor) -> torch.Tensor:
        return cast_float(x, precision).to(x.dtype)

    return cast


def _fold(conv: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm folded into the preceding convolution: ``(weight, bias)``."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    transpose = isinstance(conv, nn.modules.conv._ConvTransposeNd)
    weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                        bn.weight, bn.bias, transpose=transpose)
    return weight.detach().clone(), bias.detach().clone()


def process_weight(weight: torch.Tensor, spec: WeightSpec, prune: PruneSpec, *, out_axis: int = 0,
                   in_axis: int = 1) -> torch.Tensor:
    """Prune, then quantize one weight tensor (zeros stay exact: every grid contains 0)."""
    weight = weight.detach().to(torch.float32)
    mask = prune_mask(weight, prune, out_axis=out_axis, in_axis=in_axis)
    if mask is not None:
        weight = weight * mask
    if spec.precision != "fp32":
        axis = out_axis if (spec.granularity == "per_channel" and weight.dim() > 1) else None
        weight = fake_quantize(weight, spec.precision, symmetric=spec.symmetric, axis=axis)
        if mask is not None:
            weight = weight * mask
    return weight.contiguous()


def compress(base: nn.Module, config: CompressionConfig, calib_inputs: torch.Tensor | None = None, *,
             example_input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """One-off simulated model of ``config`` (an independent copy; use :class:`Compressor` to reuse caches)."""
    return Compressor(base, calib_inputs, example_input_shape=example_input_shape).apply(config)
