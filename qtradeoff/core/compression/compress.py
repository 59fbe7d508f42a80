"""Builds the simulated compressed model of a configuration: fake-quantized, pruned weights and activations.

A :class:`Compressor` is bound to one base model, which it never mutates, and owns the compression caches:
BatchNorm-folded weights, pruning masks and processed weights per (layer, spec), and calibrated activation
ranges. ``plan(config)`` resolves a configuration into a :class:`~qtradeoff.core.compression.plan.Plan`;
``simulate(plan)`` returns a *new* module for it that shares every untouched tensor with the base, so two
configurations can run at once from two threads and nothing one evaluation does is seen by another. What the
simulation models, and why:

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
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.fx import symbolic_trace
from torch.nn.utils.fusion import fuse_conv_bn_weights

from qtradeoff.core import runtime
from qtradeoff.core.compression import rounding
from qtradeoff.core.compression.algorithms import activation_prune, equalization, smoothquant
from qtradeoff.core.compression.algorithms.lut import lut_quantize
from qtradeoff.core.compression.plan import LayerPlan, Plan
from qtradeoff.core.compression.prune import prune_mask, sparsity_for_threshold, structured_mask
from qtradeoff.core.compression.quantize import (
    RangeObserver,
    cast_float,
    fake_quantize,
    int_range,
    qparams_from_range,
    weight_qparams,
)
from qtradeoff.core.config import CompressionConfig, LayerSettings, PruneSpec, WeightSpec
from qtradeoff.core.loading.inventory import LayerInfo, inventory
from qtradeoff.core.precision import bits_of, is_integer, is_lut

_CALIB_BATCH = 64
_SMOOTHABLE = ("Linear", "Conv1d", "Conv2d", "Conv3d")  # layers SmoothQuant and activation pruning read
_TRANSFORM_STATES = 8  # calibrated activation ranges kept for this many CLE / SmoothQuant settings
_NATIVE_8BIT = {(0, 255): torch.quint8, (-128, 127): torch.qint8}
_WEIGHT_CACHE_ENTRIES = 4096
ROUNDING_SAMPLES = 1024  # calibration samples whose layer inputs the rounding algorithms see, at most
# Processed weights are full fp32 tensors: on a real-size model (resnet50: 100 MB of weights) 4096 entries could
# hold tens of GB, so the cache is bounded by bytes too (a few full copies of a resnet50's weights).
WEIGHT_CACHE_BYTES = 512 * 1024 * 1024


def _prime_quantized_tensor_warning() -> None:
    """torch warns once per process that quantized tensors are deprecated; fire that warning here, silenced,
    so the fast 8-bit activation path never raises it inside a caller (tests run with warnings as errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.quantize_per_tensor(torch.zeros(1), 1.0, 0, torch.quint8)


@dataclass
class CompressorStats:
    """Work counters, so callers and tests can see what a call recomputed."""

    weight_computations: int = 0  # processed weight tensors computed (cache misses)
    weight_cache_hits: int = 0
    calibration_passes: int = 0  # forward passes of the calibration set (at most one per Compressor)
    range_computations: int = 0  # activation ranges derived from calibration statistics (cache misses)
    applies: int = 0  # simulated models built
    # forward passes collecting the rounding algorithms' input statistics: at most one, or two when bias correction
    # alone (first order, E[x]) ran before AdaRound or GPTQ (second order, E[x xᵀ]) was asked for
    rounding_passes: int = 0
    rounding_computations: int = 0  # layers rounded by bias correction, AdaRound or GPTQ (cache misses)

    def __getitem__(self, name: str) -> int:
        return getattr(self, name)


def get_submodule(root: nn.Module, name: str) -> nn.Module:
    """``root``'s submodule ``name`` (TorchScript containers support getattr, not get_submodule)."""
    module = root
    for part in name.split(".") if name else ():
        module = getattr(module, part)
    return module


def _shallow(original: nn.Module) -> nn.Module:
    """A copy of one module object with its own parameter, buffer, submodule and hook tables (no tensor copied)."""
    # object.__new__: GraphModule.__new__ would make a fresh class without the generated forward
    new = object.__new__(type(original))
    state = dict(original.__dict__)
    for key, value in state.items():
        if key.startswith("_") and isinstance(value, dict | set):
            # the builtin copy methods: copy.copy goes through __reduce_ex__ for OrderedDict, 10x slower
            state[key] = value.copy() if type(value) in (dict, OrderedDict, set) else copy.copy(value)
    new.__dict__ = state
    return new


def holds_torchscript(module: nn.Module) -> bool:
    """Whether ``module`` is TorchScript or holds some (a view around a scripted model: an output selector, a
    fixed-batch view): such a tree takes no hooks and cannot be cloned module by module."""
    return any(isinstance(sub, torch.jit.ScriptModule) for sub in module.modules())


def clone_structure(module: nn.Module, paths: Iterable[str] | None = None) -> nn.Module:
    """A new module tree that shares every parameter and buffer with ``module``.

    Each module object on the way is copied shallowly with its own tables (see :func:`_shallow`), so a tensor or
    hook installed on the clone never reaches the original. With ``paths`` (qualified submodule names) only those
    modules and their ancestors are copied; every other submodule is shared with ``module``. Cheap (no tensor is
    copied); not for TorchScript modules, whose attributes live in C++.
    """
    if paths is not None:
        root = _shallow(module)
        copied = {id(root)}
        for path in paths:
            parent = root
            for part in path.split(".") if path else ():
                child = parent._modules[part]
                if id(child) not in copied:
                    child = _shallow(child)
                    parent._modules[part] = child
                    copied.add(id(child))
                parent = child
        return root

    memo: dict[int, nn.Module] = {}

    def clone(original: nn.Module) -> nn.Module:
        found = memo.get(id(original))
        if found is not None:
            return found
        new = memo[id(original)] = _shallow(original)
        for key, child in original._modules.items():
            new._modules[key] = None if child is None else clone(child)
        return new

    return clone(module)


def hides_submodules(module: nn.Module) -> str:
    """Where ``module`` keeps a submodule or a layer's parameter outside torch's tables (a plain list or dict
    attribute), so that a shallow clone would still run the original: the first such place, or ""."""
    for name, sub in module.named_modules():
        for key, value in sub.__dict__.items():
            if key in ("_modules", "_parameters", "_buffers") or not isinstance(value, list | tuple | dict):
                continue
            items = value.values() if isinstance(value, dict) else value
            for item in items:
                hidden = isinstance(item, nn.Module) or (
                    isinstance(item, nn.Parameter) and not isinstance(sub, nn.RNNBase))  # RNNs refresh theirs
                if hidden:
                    return f"{name or type(module).__name__}.{key}"
    return ""


def _find_conv_bn_pairs(module: nn.Module) -> tuple[dict[str, str], str]:
    """``{conv name: bn name}`` for each BatchNorm that is the sole consumer of a convolution, found by FX."""
    try:
        with runtime.tracing():
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


class FoldedNorm:
    """The forward of a BatchNorm whose statistics were folded into the preceding convolution's weights.

    Installed as the cloned BatchNorm's own ``forward``, so its class (and the traced graph incremental
    evaluation caches cuts of) stays the same whichever layers are folded. Identity, or adds the folded bias
    when the convolution runs without one (see :meth:`Compressor._install`).
    """

    def __init__(self, bias: torch.Tensor | None):
        self.bias = bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.bias is None else x + self.bias


class Compressor:
    """Simulated compressed models of one base model; see the module docstring for what is simulated.

    Thread-safe: caches are filled under a lock that is never held while a model runs, and every simulated
    model is a new module (the base and other simulated models are never touched).
    """

    def __init__(self, base_module: nn.Module, calib_inputs: torch.Tensor | None = None, *,
                 example_input_shape: tuple[int, ...] | None = None, layers: list[LayerInfo] | None = None,
                 weight_cache_bytes: int = WEIGHT_CACHE_BYTES):
        _prime_quantized_tensor_warning()
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
        # TorchScript, or TorchScript inside a view (an output selector, a fixed-batch view): no hooks, no clone
        self._scripted = holds_torchscript(base_module)
        # a model that holds submodules in plain lists/dicts is simulated on a private deep copy instead of a
        # shallow clone, so the compressed layers are the ones its forward really calls
        self._deep_copy = self._scripted or bool(hides_submodules(base_module))
        self._lock = threading.RLock()
        self.calib_batch = _CALIB_BATCH  # samples per calibration forward (the engine lowers it for big inputs)

        self._pairs, note = _find_conv_bn_pairs(base_module) if not self._scripted else (
            {}, "BatchNorm not folded: TorchScript models cannot be re-traced; weights are quantized unfolded")
        if note:
            self.notes.append(note)
        unfolded = [info.name for info in self.inventory
                    if info.kind.startswith("BatchNorm") and info.name not in self._pairs.values()]
        if unfolded and not note:
            self.notes.append("BatchNorm not folded (not the sole consumer of a convolution called as a module): "
                              + ", ".join(unfolded))

        # originals (what fp32 means) and folded weights/biases (what gets pruned and quantized)
        self._original: dict[str, dict[str, torch.Tensor]] = {}
        self._folded: dict[str, dict[str, torch.Tensor]] = {}
        self._folded_bias: dict[str, torch.Tensor | None] = {}
        with torch.no_grad():
            for info in self.layers:
                module = get_submodule(base_module, info.name)
                self._original[info.name] = {n: getattr(module, n).detach() for n in info.weight_names}
                if info.name in self._pairs:
                    weight, bias = _fold(module, get_submodule(base_module, self._pairs[info.name]))
                    self._folded[info.name] = {"weight": weight}
                    self._folded_bias[info.name] = bias
                else:
                    self._folded[info.name] = self._original[info.name]
                    bias = getattr(module, "bias", None)
                    self._folded_bias[info.name] = bias.detach() if isinstance(bias, torch.Tensor) else None

        self._weight_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._weight_cache_bytes = 0
        self.weight_cache_limit = int(weight_cache_bytes)
        self._masks: dict[tuple, torch.Tensor | None] = {}
        self._observers: dict[str, RangeObserver] | None = None
        self._output_observers: dict[str, RangeObserver] | None = None
        self._range_cache: dict[tuple, tuple[float, float]] = {}
        self._last_layer = self.layers[-1].name if self.layers else None
        # float transforms before compression (compression/algorithms): CLE pairs and result, per-channel
        # calibration statistics, transformed float weights, and activation observers per transform
        self._cle_pairs: list[equalization.Pair] | None = None
        self._cle_result: tuple[dict, dict, dict, dict] | None = None
        self._channel_stats: tuple[dict, dict] | None = None
        # transformed float weights: full copies, so at most a few transforms per layer are kept (LRU)
        self._float_cache: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()
        self._transform_observers: OrderedDict[tuple, tuple[dict, dict]] = OrderedDict()
        self._input_stats: dict[str, rounding.InputStats] | None = None
        self._input_second_order = False  # whether _input_stats hold E[x xᵀ] too (else E[x] only)
        self._input_passes = 0
        self._rounded_cache: OrderedDict[tuple, rounding.Rounded] = OrderedDict()

    # -- public ----------------------------------------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        """Compressible layer names in execution order (the names a config's overrides may use)."""
        return [info.name for info in self.layers]

    def plan(self, config: CompressionConfig) -> Plan:
        """Resolve ``config`` for every compressible layer, with the pruning masks of the weights it rewrites."""
        resolved = [(info, config.resolve(info.name, info.kind)) for info in self.layers]
        equalize = getattr(config, "equalization", "none") == "cle"
        transforms = {info.name: self._layer_transform(info, settings, equalize) for info, settings in resolved}
        layers = []
        for info, settings in resolved:
            transform = transforms[info.name]
            masks = {name: self.mask(info.name, name, settings, transform) for name in info.weight_names}
            numel = sum(self._folded[info.name][name].numel() for name in info.weight_names)
            kept = sum(int(mask.sum()) if mask is not None else self._folded[info.name][name].numel()
                       for name, mask in masks.items())
            layers.append(LayerPlan(info.name, info.kind, settings, tuple(info.weight_names), info.out_axis,
                                    info.in_axis, masks, numel, kept, info.name in self._pairs, transform))
        return Plan(config, tuple(layers), tuple((name, t) for name, t in transforms.items() if t))

    @property
    def calibrated(self) -> bool:
        """Whether activation ranges are calibrated already (the first integer-activation plan costs a pass)."""
        return self._observers is not None

    def changes_nothing(self, plan: Plan) -> bool:
        """Whether ``plan``'s simulated model computes exactly what the base does (no weight rewritten, no
        activation cast): its outputs are the fp32 reference's, so an evaluation need not run it again."""
        if self._scripted:
            return not any(layer.rewrites for layer in plan)
        return not any(layer.rewrites or self.casts_activations(layer) for layer in plan)

    def simulate(self, plan: Plan) -> nn.Module:
        """A new simulated model of ``plan`` (the base and earlier simulated models are left as they are)."""
        needs_ranges = any(not layer.settings.skip and is_integer(layer.settings.activation.precision)
                           for layer in plan)
        if needs_ranges:
            self._ensure_calibrated()
            if plan.transform:
                self._transformed_observers(plan)
        self._prepare_rounding(plan)
        with self._lock:
            self.stats.applies += 1
        if self._deep_copy:
            return self._simulate_copy(plan)
        touched = [layer for layer in plan if layer.rewrites or self.casts_activations(layer)]
        paths = [layer.name for layer in touched]
        paths += [self._pairs[layer.name] for layer in touched if layer.rewrites and layer.folded]
        model = clone_structure(self.base, paths)  # untouched layers stay shared with the base
        for layer in touched:
            self._install(model, layer, plan)
        return _inference_mode(model)

    def apply(self, config: CompressionConfig) -> nn.Module:
        """``simulate(plan(config))``: a new simulated model of ``config``."""
        return self.simulate(self.plan(config))

    def weight(self, layer: str, name: str = "weight") -> torch.Tensor:
        """The tensor that compression prunes and quantizes: the layer's weight with BatchNorm folded in."""
        return self._folded[layer][name]

    def folded_norm(self, layer: str) -> str | None:
        """The BatchNorm folded into ``layer`` when its weights are rewritten (None if there is none)."""
        return self._pairs.get(layer)

    def mask(self, layer: str, name: str, settings: LayerSettings, transform: tuple = ()) -> torch.Tensor | None:
        """Keep-mask of ``layer``'s weight ``name`` under ``settings`` (cached per PruneSpec and float transform;
        None: unpruned)."""
        if settings.skip or settings.prune.method == "none":
            return None
        key = (layer, name, settings.prune, transform)
        with self._lock:
            if key in self._masks:
                return self._masks[key]
        info = self._by_name[layer]
        weight = self._float_weight(layer, name, transform)
        if settings.prune.method == "activation":
            mask = self._activation_mask(info, weight, settings.prune, transform)
        else:
            mask = prune_mask(weight, settings.prune, out_axis=info.out_axis, in_axis=info.in_axis)
        with self._lock:
            return self._masks.setdefault(key, mask)

    # -- float transforms before compression: CLE, SmoothQuant; activation statistics ------------------------
    def _layer_transform(self, info: LayerInfo, settings: LayerSettings, equalize: bool) -> tuple:
        """``()`` or ``(equalized, smoothquant alpha or None)`` for one layer (see ``LayerPlan.transform``)."""
        cle = equalize and info.name in self.cle_layers()
        alpha = settings.activation.smoothquant
        if alpha is not None and (settings.skip or info.kind not in _SMOOTHABLE
                                  or info.name not in self._statistics()[0]):
            alpha = None
        return (cle, alpha) if cle or alpha is not None else ()

    def cle_pairs(self) -> list[equalization.Pair]:
        """The layer pairs cross-layer equalization rescales (found once by FX; empty if not traceable)."""
        with self._lock:
            if self._cle_pairs is None:
                pairs: list[equalization.Pair] = []
                if not self._scripted:
                    try:
                        with runtime.tracing():
                            graph_module = symbolic_trace(self.base)
                        pairs = equalization.find_pairs(graph_module, self.layer_names, self._pairs)
                    except Exception as error:  # noqa: BLE001 - not traceable: nothing to equalize
                        self.notes.append(f"cross-layer equalization finds no pairs: the model is not "
                                          f"FX-traceable ({type(error).__name__})")
                self._cle_pairs = pairs
            return self._cle_pairs

    def cle_layers(self) -> set[str]:
        return {name for pair in self.cle_pairs() for name in (pair.first, pair.second)}

    def _cle(self) -> tuple[dict, dict, dict, dict]:
        """(weights, biases, input divisors of second layers, output scales of first layers) after CLE."""
        pairs = self.cle_pairs()
        with self._lock:
            if self._cle_result is None:
                weights = {name: self._folded[name]["weight"] for p in pairs for name in (p.first, p.second)}
                biases = {name: self._folded_bias[name] for name in weights}
                with torch.no_grad():
                    new_w, new_b, divisors = equalization.equalize(weights, biases, pairs)
                out_scales = {p.first: divisors[p.second].reshape(-1, p.expand)[:, 0] for p in pairs}
                self._cle_result = (new_w, new_b, divisors, out_scales)
            return self._cle_result

    def _statistics(self) -> tuple[dict[str, torch.Tensor], dict[str, activation_prune.ChannelStats]]:
        """Per conv/linear layer: max |input| per input channel, and output-channel statistics (BatchNorm folded
        in), over the calibration inputs through the fp32 base (one pass, cached)."""
        with self._lock:
            if self._channel_stats is not None:
                return self._channel_stats
            absmax: dict[str, torch.Tensor] = {}
            outputs: dict[str, activation_prune.ChannelStats] = {}
            if self._scripted or self.calib_inputs is None or len(self.calib_inputs) == 0:
                self._channel_stats = (absmax, outputs)
                return self._channel_stats
            model = _inference_mode(clone_structure(self.base))
            for info in self.layers:
                if info.kind not in _SMOOTHABLE:
                    continue
                linear = info.kind == "Linear"
                get_submodule(model, info.name).register_forward_pre_hook(_ChannelAbsMax(absmax, info.name, linear))
                produces = self._pairs.get(info.name, info.name)
                outputs[info.name] = activation_prune.ChannelStats()
                get_submodule(model, produces).register_forward_hook(_ChannelOutput(outputs[info.name], linear))
            with torch.no_grad(), runtime.running():
                _run_batches(model, self.calib_inputs, self.calib_batch)
            outputs = {name: stats for name, stats in outputs.items() if stats.count}
            self._channel_stats = (absmax, outputs)
            return self._channel_stats

    def _transformed(self, layer: str, transform: tuple) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(float weight, SmoothQuant input divisor or None) of ``layer`` under ``transform`` (cached)."""
        key = (layer, transform)
        with self._lock:
            found = self._float_cache.get(key)
            if found is not None:
                self._float_cache.move_to_end(key)
                return found
        cle, alpha = transform
        weight, divisor = self._folded[layer]["weight"], None
        cle_weights, _, cle_divisors, _ = self._cle() if cle else ({}, {}, {}, {})
        weight = cle_weights.get(layer, weight)
        if alpha is not None:
            absmax = self._statistics()[0][layer]
            if layer in cle_divisors:
                absmax = absmax / cle_divisors[layer]
            groups = getattr(get_submodule(self.base, layer), "groups", 1)
            with torch.no_grad():
                weight, divisor = smoothquant.smooth(weight, absmax, alpha, groups)
        with self._lock:
            found = self._float_cache.setdefault(key, (weight, divisor))
            while len(self._float_cache) > _TRANSFORM_STATES * max(1, len(self.layers)):
                self._float_cache.popitem(last=False)
            return found

    def float_weight(self, layer: str, name: str, transform: tuple = ()) -> torch.Tensor:
        """The float tensor compression prunes and quantizes under a layer plan's ``transform``."""
        return self._float_weight(layer, name, transform)

    def smoothquant_divisor(self, layer: LayerPlan) -> torch.Tensor | None:
        """What SmoothQuant divides ``layer``'s input by (per channel), or None."""
        if layer.transform and layer.transform[1] is not None:
            return self._transformed(layer.name, layer.transform)[1]
        return None

    def _float_weight(self, layer: str, name: str, transform: tuple) -> torch.Tensor:
        """The float tensor compression prunes and quantizes: folded, then equalized / smoothed if asked."""
        if not transform or name != "weight":
            return self._folded[layer][name]
        return self._transformed(layer, transform)[0]

    def _float_bias(self, layer: str, transform: tuple) -> torch.Tensor | None:
        if transform and transform[0]:
            return self._cle()[1].get(layer, self._folded_bias[layer])
        return self._folded_bias[layer]

    def _activation_mask(self, info: LayerInfo, weight: torch.Tensor, spec: PruneSpec, transform: tuple
                         ) -> torch.Tensor:
        stats = self._statistics()[1].get(info.name)
        if stats is None or info.kind not in _SMOOTHABLE:
            with self._lock:
                note = (f"activation pruning fell back to structured L1 on {info.name}: no activation statistics "
                        "(not a conv/linear module call, TorchScript, or no calibration inputs)")
                if note not in self.notes:
                    self.notes.append(note)
            return structured_mask(weight, spec.sparsity or 0.0, "l1", info.out_axis)
        scores = stats.scores(spec.criterion)
        if spec.criterion == "mean_abs" and transform and transform[0]:
            out_scales = self._cle()[3]
            if info.name in out_scales:  # CLE divided this layer's outputs per channel
                scores = scores / out_scales[info.name].to(scores.dtype)
        return activation_prune.activation_mask(tuple(weight.shape), scores, spec.sparsity or 0.0, info.out_axis)

    def _transformed_observers(self, plan: Plan) -> tuple[dict, dict]:
        """Activation observers calibrated on the float model with ``plan``'s transforms (cached per transform)."""
        key = plan.transform
        with self._lock:
            found = self._transform_observers.get(key)
            if found is not None:
                self._transform_observers.move_to_end(key)
                return found
            touched = [layer for layer in plan if layer.transform]
            paths = [layer.name for layer in touched] + [self._pairs[layer.name] for layer in touched if layer.folded]
            model = clone_structure(self.base, paths)
            for layer in touched:
                module = get_submodule(model, layer.name)
                _set_tensor(module, "weight", self._float_weight(layer.name, "weight", layer.transform))
                if layer.folded:
                    _set_tensor(module, "bias", self._float_bias(layer.name, layer.transform))
                    model.get_submodule(self._pairs[layer.name]).forward = FoldedNorm(None)
                self._install_divisor(module, layer)
            found = self._observe(_inference_mode(model))
            self._transform_observers[key] = found
            while len(self._transform_observers) > _TRANSFORM_STATES:
                self._transform_observers.popitem(last=False)
            return found

    def _install_divisor(self, module: nn.Module, layer: LayerPlan) -> None:
        divisor = self.smoothquant_divisor(layer)
        if divisor is not None:
            module.register_forward_pre_hook(smoothquant.InputDivide(divisor, layer.kind == "Linear"))

    def sparsity_for_threshold(self, layer: str, threshold: float, relative: bool = False) -> float:
        """Fraction of ``layer``'s weights a magnitude threshold prunes, on the weights compression prunes."""
        info = self._by_name[layer]
        tensors = [self.weight(layer, name) for name in info.weight_names]
        total = sum(t.numel() for t in tensors)
        if not total:
            return 0.0
        return sum(sparsity_for_threshold(t, threshold, relative) * t.numel() for t in tensors) / total

    def threshold_sparsity(self, thresholds, *, relative: bool = True) -> dict[str, tuple[float, ...]]:
        """Per layer, the fraction of weights a magnitude threshold prunes at each of ``thresholds``: on the
        weights compression prunes (BatchNorm folded), so a label shows what a plan applies and memory counts."""
        return {name: tuple(self.sparsity_for_threshold(name, float(t), relative) for t in thresholds)
                for name in self.layer_names}

    def close(self) -> None:
        """Drop the caches (simulated models already built stay usable)."""
        with self._lock:
            self._weight_cache.clear()
            self._weight_cache_bytes = 0
            self._masks.clear()
            self._float_cache.clear()
            self._transform_observers.clear()
            self._rounded_cache.clear()

    # -- weights ---------------------------------------------------------------------------------------------
    def _processed(self, layer: LayerPlan, name: str) -> torch.Tensor:
        if not layer.rewrites:
            return self._original[layer.name][name]
        source = self._float_weight(layer.name, name, layer.transform)
        settings = layer.settings
        if settings.skip:  # transformed (CLE) but left at fp32
            return source
        key = (layer.name, name, rounding.cache_spec(settings.weight), settings.prune, layer.transform)
        with self._lock:
            cached = self._weight_cache.get(key)
            if cached is not None:
                self._weight_cache.move_to_end(key)
                self.stats.weight_cache_hits += 1
                return cached
        rounded = self._rounded(layer) if name == "weight" else None
        if rounded is not None:
            result = rounded.weight
        else:
            with torch.no_grad():
                result = process_weight(source, settings.weight, layer.masks.get(name), out_axis=layer.out_axis)
        with self._lock:
            self.stats.weight_computations += 1
            if key not in self._weight_cache:
                self._weight_cache[key] = result
                self._weight_cache_bytes += _tensor_bytes(result)
            while self._weight_cache and (len(self._weight_cache) > _WEIGHT_CACHE_ENTRIES
                                          or self._weight_cache_bytes > self.weight_cache_limit):
                _, dropped = self._weight_cache.popitem(last=False)
                self._weight_cache_bytes -= _tensor_bytes(dropped)
        return result

    def _install(self, model: nn.Module, layer: LayerPlan, plan: Plan | None = None) -> None:
        """Put ``layer``'s processed weights, folded BatchNorm and activation casts into the cloned ``model``."""
        module = get_submodule(model, layer.name)
        if layer.rewrites:
            for name in layer.weight_names:
                _set_tensor(module, name, self._processed(layer, name))
            rounded = self._rounded(layer)
            corrected = rounded.bias if rounded is not None else None
            if layer.folded:
                bn_name = self._pairs[layer.name]
                bias = self._float_bias(layer.name, layer.transform) if corrected is None else corrected
                # The folded bias is added by the stand-in BatchNorm, not inside the conv, for depthwise convs:
                # oneDNN's depthwise convolutions run up to 1.5x slower with a bias (5x5 depthwise on 1x1 maps in
                # MobileNetV3). Same arithmetic up to fp32 rounding. Dense convs take the bias in the kernel.
                depthwise = getattr(module, "groups", 1) > 1 and module.groups == getattr(module, "in_channels", 0)
                split = bias is not None and layer.name != self._last_layer and depthwise
                shaped = bias.reshape(-1, *([1] * (module.weight.dim() - 2))) if split else None
                _set_tensor(module, "bias", None if split else bias)
                model.get_submodule(bn_name).forward = FoldedNorm(shaped)
            elif corrected is not None:
                _set_tensor(module, "bias", corrected)
            elif layer.transform and layer.transform[0]:  # equalized, no BatchNorm: its own bias was rescaled
                _set_tensor(module, "bias", self._float_bias(layer.name, layer.transform))
        self._install_divisor(module, layer)  # SmoothQuant's division comes before the activation cast
        self._install_activation(module, layer, plan)

    # -- rounding with calibration data ----------------------------------------------------------------------
    def _rounded(self, layer: LayerPlan) -> rounding.Rounded | None:
        """``layer``'s weight (and bias) rounded by the algorithm its settings name, or None for nearest rounding
        (also where the algorithm cannot run: unsupported layer kinds, TorchScript, no calibration data; noted).
        Cached per (layer, weight spec, prune spec): the inputs are the fp32 model's, so nothing else matters."""
        spec = layer.settings.weight
        if not layer.rewrites or not rounding.uses_data(spec):
            return None
        if layer.transform:  # CLE / SmoothQuant change the layer's weights and inputs; the statistics are fp32's
            note = ("weights of equalized or SmoothQuant layers rounded to nearest: the rounding algorithms use the "
                    "untransformed model's input statistics")
            with self._lock:
                if note not in self.notes:
                    self.notes.append(note)
            return None
        key = (layer.name, rounding.cache_spec(spec), layer.settings.prune)
        with self._lock:
            found = self._rounded_cache.get(key)
            if found is not None:
                self._rounded_cache.move_to_end(key)
                return found
        stats = self._layer_input_stats(layer.name, rounding.needs_second_order(spec))
        if stats is None:
            return None
        info = self._by_name[layer.name]
        geometry = rounding.Geometry.of(get_submodule(self.base, layer.name), info.kind)
        with torch.no_grad():
            result = rounding.round_weight(geometry, self._folded[layer.name]["weight"], spec, stats,
                                           bias=self._folded_bias[layer.name], mask=layer.masks.get("weight"))
        with self._lock:
            self.stats.rounding_computations += 1
            self._rounded_cache[key] = result
            while len(self._rounded_cache) > _WEIGHT_CACHE_ENTRIES:
                self._rounded_cache.popitem(last=False)
        return result

    def rounded(self, layer: LayerPlan) -> rounding.Rounded | None:
        """The weight (BatchNorm folded) and, for bias correction, the bias that ``layer``'s rounding algorithm
        gives, as the simulation installs them; None where the layer is rounded to nearest. For real-kernel
        models and exports, which must carry the same values."""
        return self._rounded(layer)

    def real_weight(self, layer: LayerPlan) -> rounding.Rounded | None:
        """What a real-kernel model must install in ``layer`` to compute what the simulation does: the rounding
        algorithm's weight and bias (:meth:`rounded`), and where the grid is not min-max (``range: mse``) the
        simulated weight with its grid (``scale``/``zero_point``); None where torch.ao's min-max observer and
        nearest rounding already give the simulated weight."""
        rounded = self._rounded(layer)
        spec = layer.settings.weight
        if (not layer.rewrites or layer.settings.skip or spec.range == "minmax" or not is_integer(spec.precision)
                or "weight" not in layer.weight_names):
            return rounded
        weight = self._processed(layer, "weight")
        axis = layer.out_axis if (spec.granularity == "per_channel" and weight.dim() > 1) else None
        source = self._float_weight(layer.name, "weight", layer.transform)
        mask = layer.masks.get("weight")
        if mask is not None:
            source = source * mask
        scale, zero_point = weight_qparams(source, bits_of(spec.precision), spec.symmetric, axis, spec.range)
        return rounding.Rounded(weight, None if rounded is None else rounded.bias, scale, zero_point)

    def _layer_input_stats(self, name: str, second_order: bool) -> rounding.InputStats | None:
        self._ensure_input_stats(second_order)
        return self._input_stats.get(name)

    def _prepare_rounding(self, plan: Plan) -> None:
        """Collect the input statistics ``plan``'s rounding algorithms need in one pass, before any layer asks:
        second order if any layer not yet rounded uses AdaRound or GPTQ, else the cheap first-order pass."""
        orders = set()
        for layer in plan:
            spec = layer.settings.weight
            if not layer.rewrites or layer.transform or not rounding.uses_data(spec):
                continue
            with self._lock:
                if (layer.name, rounding.cache_spec(spec), layer.settings.prune) in self._rounded_cache:
                    continue
            orders.add(rounding.needs_second_order(spec))
        if orders:
            self._ensure_input_stats(max(orders))

    def _ensure_input_stats(self, second_order: bool = True) -> None:
        """One pass of the calibration inputs through the fp32 base, accumulating each supported layer's input
        statistics for the rounding algorithms: ``E[x]``, and ``E[x xᵀ]`` when ``second_order`` (a first-order
        pass is replaced by a second-order one when that is asked for later)."""
        with self._lock:
            if self._input_stats is not None and (self._input_second_order or not second_order):
                return
            self._input_stats = {}
            self._input_second_order = second_order
            if self._scripted or self.calib_inputs is None or len(self.calib_inputs) == 0:
                self.notes.append("weights rounded to nearest: rounding with calibration data needs module hooks "
                                  "and calibration inputs" + (" (TorchScript has no hooks)" if self._scripted else ""))
                self._input_second_order = True  # nothing to collect, at any order
                return
            model = _inference_mode(clone_structure(self.base))
            collectors, unsupported = {}, []
            for info in self.layers:
                geometry = rounding.Geometry.of(get_submodule(self.base, info.name), info.kind)
                if geometry is None:
                    unsupported.append(info.name)
                    continue
                collectors[info.name] = collector = _StatsCollector(geometry, second_order)
                get_submodule(model, info.name).register_forward_pre_hook(collector)
            if unsupported and self._input_passes == 0:
                self.notes.append("bias correction, AdaRound and GPTQ apply to Linear and Conv2d layers; nearest "
                                  "rounding for " + ", ".join(unsupported))
            inputs = self.calib_inputs[:ROUNDING_SAMPLES]
            with torch.no_grad(), runtime.running():
                try:
                    _run_batches(model, inputs, self.calib_batch)
                except Exception:  # noqa: BLE001 - e.g. an export program specialised to batch size 1
                    for collector in collectors.values():
                        collector.stats = None
                    _run_batches(model, inputs, 1)
            self.stats.rounding_passes += 1
            self._input_passes += 1
            self._input_stats = {name: c.stats for name, c in collectors.items() if c.stats is not None}

    # -- activations -----------------------------------------------------------------------------------------
    @staticmethod
    def casts_activations(layer: LayerPlan) -> bool:
        spec = layer.settings.activation
        return not (layer.settings.skip or spec.precision == "fp32" or layer.kind == "Embedding")

    def activation_grids(self, layer: LayerPlan, plan: Plan | None = None) -> dict[str, ActivationGrid]:
        """The activation casts the simulation applies around ``layer``: ``{"input": grid, "output": grid}`` (the
        output only for the last layer, the logits), empty where activations stay fp32 or are not simulated.
        With a ``plan`` that transforms the float model (CLE, SmoothQuant), ranges are those of that model."""
        spec = layer.settings.activation
        if self._scripted or not self.casts_activations(layer):
            return {}
        if not is_integer(spec.precision):
            grid = ActivationGrid(spec.precision)
            return {"input": grid, "output": grid}
        transform = plan.transform if plan is not None else ()
        observers, outputs = (self._transformed_observers(plan) if transform
                              else (self._observers, self._output_observers))
        grids = {"input": self._int_grid(layer.name, observers, spec, "input", transform)}
        if layer.name == self._last_layer:
            grids["output"] = self._int_grid(layer.name, outputs, spec, "output", transform)
        return {where: grid for where, grid in grids.items() if grid is not None}

    def activation_range(self, layer: str, where: str = "input") -> tuple[float, float] | None:
        """The min and max calibration saw at ``layer``'s input (``"output"``: the last layer's); None before
        calibration or where it saw nothing."""
        observer = ((self._observers if where == "input" else self._output_observers) or {}).get(layer)
        return None if observer is None or observer.hi < observer.lo else (observer.lo, observer.hi)

    def _install_activation(self, module: nn.Module, layer: LayerPlan, plan: Plan | None = None) -> None:
        install_activation_casts(module, self.activation_grids(layer, plan), last=layer.name == self._last_layer)

    def _int_grid(self, layer: str, observers, spec, where: str, transform: tuple = ()) -> ActivationGrid | None:
        observer = (observers or {}).get(layer)
        if observer is None or observer.hi < observer.lo:
            return None  # never observed: this layer is not called as a module (noted at calibration)
        bits = bits_of(spec.precision)
        range_key = (layer, where, spec.calibration, spec.percentile if spec.calibration == "percentile" else None,
                     bits, spec.symmetric, transform)
        with self._lock:
            lo_hi = self._range_cache.get(range_key)
            if lo_hi is None:
                self.stats.range_computations += 1
                lo_hi = observer.range(spec.calibration, percentile=spec.percentile, bits=bits,
                                       symmetric=spec.symmetric)
                self._range_cache[range_key] = lo_hi
        scale, zero_point = qparams_from_range(torch.tensor(lo_hi[0]), torch.tensor(lo_hi[1]), bits, spec.symmetric)
        qmin, qmax = int_range(bits, spec.symmetric)
        return ActivationGrid(spec.precision, float(scale), int(zero_point), qmin, qmax)

    def _ensure_calibrated(self) -> None:
        """One pass of the calibration inputs through the fp32 base (a clone with observing hooks)."""
        with self._lock:
            if self._observers is not None:
                return
            if self._scripted:
                self._observers, self._output_observers = {}, {}
                self.notes.append("activation quantization is not simulated for TorchScript models (no module hooks)")
                return
            if self.calib_inputs is None or len(self.calib_inputs) == 0:
                raise ValueError("integer activations need calibration inputs; pass calib_inputs to the Compressor")
            self._observers, self._output_observers = self._observe(_inference_mode(clone_structure(self.base)))

    def _observe(self, model: nn.Module) -> tuple[dict[str, RangeObserver], dict[str, RangeObserver]]:
        """Calibration: the inputs of every layer (and the last one's output) of ``model`` (a clone, hooked here)
        over the calibration inputs. Called under the lock."""
        observers = {info.name: RangeObserver() for info in self.layers}
        outputs = {self._last_layer: RangeObserver()} if self._last_layer else {}
        for name, observer in observers.items():
            get_submodule(model, name).register_forward_pre_hook(InputObserver(observer))
        for name, observer in outputs.items():
            get_submodule(model, name).register_forward_hook(OutputObserver(observer))
        with torch.no_grad(), runtime.running():
            try:
                _run_batches(model, self.calib_inputs, self.calib_batch)
            except Exception:  # noqa: BLE001 - e.g. an export program specialised to batch size 1
                for observer in (*observers.values(), *outputs.values()):
                    observer.__init__()
                _run_batches(model, self.calib_inputs, 1)
        self.stats.calibration_passes += 1
        silent = [name for name, obs in observers.items() if obs.hi < obs.lo and
                  self._by_name[name].kind != "Embedding"]
        if silent:
            note = "activation quantization is not simulated for layers not called as modules: " + ", ".join(silent)
            if note not in self.notes:
                self.notes.append(note)
        return observers, outputs

    def _simulate_copy(self, plan: Plan) -> nn.Module:
        """A private deep copy per simulated model, for TorchScript (attributes live in C++: weights are swapped in
        place, nothing else is simulated) and for models that reference submodules outside torch's tables."""
        # Untouched tensors stay shared with the base (a resnet50 would otherwise cost 100 MB per simulated
        # model): they go into deepcopy's memo as themselves. Touched layers get new tensors from _install
        # (attributes replaced, never written in place), so the base cannot change. TorchScript modules copy
        # their attributes in C++ (the memo is not consulted) and get weights swapped in place: a full copy.
        memo: dict[int, object] = {}
        if not self._scripted:
            touched = {layer.name for layer in plan if layer.rewrites}
            touched.update(self._pairs[name] for name in list(touched) if name in self._pairs)
            for name, module in self.base.named_modules(remove_duplicate=False):
                if name in touched:
                    continue
                for tensor in (*module._parameters.values(), *module._buffers.values()):
                    if tensor is not None:
                        memo[id(tensor)] = tensor
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = copy.deepcopy(self.base, memo)
        for layer in plan:
            if not self._scripted:
                if layer.rewrites or self.casts_activations(layer):
                    self._install(model, layer, plan)
            elif layer.rewrites:
                module = get_submodule(model, layer.name)
                for name in layer.weight_names:
                    getattr(module, name).data = self._processed(layer, name)
        return _inference_mode(model)


def _tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _inference_mode(model: nn.Module) -> nn.Module:
    # exported programs' modules refuse eval(); they are traced in inference form already
    if model.training and not isinstance(model, torch.fx.GraphModule):
        model.eval()
    return model


def _run_batches(model: nn.Module, inputs: torch.Tensor, batch: int) -> None:
    for start in range(0, len(inputs), batch):
        model(inputs[start:start + batch])


def _set_tensor(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    """Replace ``module.<name>`` in the clone's own tables (never in the shared tensor itself). Through setattr:
    recurrent layers refresh their flat weight list there."""
    if name in module._parameters:
        setattr(module, name, None if value is None else nn.Parameter(value, requires_grad=False))
    else:
        setattr(module, name, value)


class _InputCast:
    """Forward pre-hook: fake-quantize a layer's floating-point inputs."""

    def __init__(self, cast: Callable):
        self.cast = cast

    def __call__(self, module, args):
        return tuple(self.cast(a) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


class _OutputCast:
    """Forward hook: fake-quantize the last layer's output (the logits, where int8 kernels quantize too)."""

    def __init__(self, cast: Callable):
        self.cast = cast

    def __call__(self, module, args, output):
        return self.cast(output) if isinstance(output, torch.Tensor) else None


class _ChannelAbsMax:
    """Forward pre-hook: running max |x| per input channel (axis 1, or the last axis of a linear layer's input)."""

    def __init__(self, found: dict, name: str, linear: bool):
        self.found, self.name, self.linear = found, name, linear

    def __call__(self, module, args):
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 1:
            return
        x = x.detach().abs().to(torch.float32)
        x = x.movedim(-1 if self.linear or x.dim() < 2 else 1, 0)
        value = x.reshape(x.shape[0], -1).amax(dim=1)
        old = self.found.get(self.name)
        self.found[self.name] = value if old is None or old.shape != value.shape else torch.maximum(old, value)


class _ChannelOutput:
    """Forward hook: per-output-channel statistics of a layer (after its folded BatchNorm) for activation pruning."""

    def __init__(self, stats: activation_prune.ChannelStats, linear: bool):
        self.stats, self.linear = stats, linear

    def __call__(self, module, args, output):
        if isinstance(output, torch.Tensor) and output.is_floating_point() and output.dim() >= 1:
            self.stats.observe(output, -1 if self.linear or output.dim() < 2 else 1)


class _StatsCollector:
    """Forward pre-hook: accumulate a layer's input statistics for the rounding algorithms."""

    def __init__(self, geometry: rounding.Geometry, second_order: bool = True):
        self.geometry = geometry
        self.second_order = second_order
        self.stats: rounding.InputStats | None = None

    def __call__(self, module, args):
        first = args[0] if args else None
        if not (isinstance(first, torch.Tensor) and first.is_floating_point()):
            return
        if self.stats is None:
            cols = self.geometry.patches(first[:1].to(torch.float32))
            self.stats = rounding.InputStats.empty(cols.shape[0], cols.shape[2], second_order=self.second_order)
        self.stats.add(self.geometry, first)


class InputObserver:
    """Forward pre-hook feeding a layer's float input to a RangeObserver (calibration; recovery's recalibration)."""

    def __init__(self, observer: RangeObserver):
        self.observer = observer

    def __call__(self, module, args):
        first = args[0] if args else None
        if isinstance(first, torch.Tensor) and first.is_floating_point():
            self.observer.observe(first)


class OutputObserver:
    """Forward hook feeding a layer's tensor output to a RangeObserver."""

    def __init__(self, observer: RangeObserver):
        self.observer = observer

    def __call__(self, module, args, output):
        if isinstance(output, torch.Tensor):
            self.observer.observe(output)


@dataclass(frozen=True)
class ActivationGrid:
    """One activation cast of the simulation: a float format, or an integer grid (scale, zero point, range)."""

    precision: str
    scale: float = 0.0
    zero_point: int = 0
    qmin: int = 0
    qmax: int = 0

    def to_dict(self) -> dict:
        if not is_integer(self.precision):
            return {"precision": self.precision}
        return {"precision": self.precision, "scale": self.scale, "zero_point": self.zero_point, "qmin": self.qmin,
                "qmax": self.qmax}

    @classmethod
    def from_dict(cls, data: dict) -> ActivationGrid:
        return cls(str(data["precision"]), float(data.get("scale", 0.0)), int(data.get("zero_point", 0)),
                   int(data.get("qmin", 0)), int(data.get("qmax", 0)))

    def caster(self) -> Callable:
        """The cast as a function of a tensor (what the simulated model's hooks apply)."""
        if not is_integer(self.precision):
            return _float_caster(self.precision)
        scale, zero_point, qmin, qmax = self.scale, self.zero_point, self.qmin, self.qmax
        # the float32 scale the simulation computed (a Python float holds it exactly)
        scale_t, zero_t = torch.tensor(scale, dtype=torch.float32), torch.tensor(zero_point, dtype=torch.int32)
        native = _NATIVE_8BIT.get((qmin, qmax))
        if native is not None:
            # 8-bit grids: torch's vectorized quantize/dequantize (the op the real int8 model applies to its
            # inputs) is 10-25x faster here than fake_quantize_per_tensor_affine, with the same grid and rounding.
            def cast(x: torch.Tensor) -> torch.Tensor:
                if x.dtype != torch.float32:
                    return torch.fake_quantize_per_tensor_affine(x, scale_t, zero_t, qmin, qmax)
                return torch.quantize_per_tensor(x, scale, zero_point, native).dequantize()

            return cast

        def cast(x: torch.Tensor) -> torch.Tensor:
            return torch.fake_quantize_per_tensor_affine(x, scale_t, zero_t, qmin, qmax)

        return cast


def install_activation_casts(module: nn.Module, grids: dict[str, ActivationGrid], *, last: bool) -> None:
    """Hook ``grids`` (see :meth:`Compressor.activation_grids`) onto ``module``: its floating-point inputs are cast,
    and its output too when it is the ``last`` layer. Used by the simulation and by loaders of exported models."""
    if "input" in grids:
        module.register_forward_pre_hook(_InputCast(grids["input"].caster()))
    if "output" in grids and last:
        module.register_forward_hook(_OutputCast(grids["output"].caster()))


def _float_caster(precision: str) -> Callable:
    def cast(x: torch.Tensor) -> torch.Tensor:
        return cast_float(x, precision).to(x.dtype)

    return cast


def _fold(conv: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm folded into the preceding convolution: ``(weight, bias)``."""
    transpose = isinstance(conv, nn.modules.conv._ConvTransposeNd)
    weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                        bn.weight, bn.bias, transpose=transpose)
    return weight.detach().clone(), bias.detach().clone()


def process_weight(weight: torch.Tensor, spec: WeightSpec, prune: PruneSpec | torch.Tensor | None = None, *,
                   out_axis: int = 0, in_axis: int = 1) -> torch.Tensor:
    """Prune, then quantize one weight tensor (zeros stay exact: every grid contains 0).

    ``prune`` is a PruneSpec (the mask is computed here) or an already computed keep-mask (or None).
    """
    weight = weight.detach().to(torch.float32)
    mask = prune_mask(weight, prune, out_axis=out_axis, in_axis=in_axis) if isinstance(prune, PruneSpec) else prune
    if mask is not None:
        weight = weight * mask
    if is_lut(spec.precision):  # k-means codebooks per output channel or per tensor (symmetry does not apply)
        return lut_quantize(weight, bits_of(spec.precision), mask, per_channel=spec.granularity == "per_channel",
                            out_axis=out_axis)[0]
    if spec.precision != "fp32":
        axis = out_axis if (spec.granularity == "per_channel" and weight.dim() > 1) else None
        scale = zero_point = None
        if is_integer(spec.precision):
            scale, zero_point = weight_qparams(weight, bits_of(spec.precision), spec.symmetric, axis, spec.range)
        weight = fake_quantize(weight, spec.precision, symmetric=spec.symmetric, axis=axis, scale=scale,
                               zero_point=zero_point)
        if mask is not None:
            weight = weight * mask
    return weight.contiguous()
