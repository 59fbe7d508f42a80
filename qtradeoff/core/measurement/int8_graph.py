"""The shape of the real int8 graph: which ops torch.ao's FX flow quantizes, and what is left of the boundaries.

Per-layer qconfigs alone quantize only the layers the configuration names: every residual add, pooling and
flatten between two int8 layers then runs in fp32, with a dequantize before it and a quantize after it (57 such
boundaries on MobileNetV2, where torch.ao's default x86 flow keeps two). :func:`fused_qconfig_mapping` gives those
functional and shape ops a qconfig of their own, as the default x86 flow does, so chains the x86 backend runs in
int8 (conv+bn+relu, add, pooling, flatten, linear) stay int8 between layers, while every module with weights that
the configuration does not run in static int8 keeps its own setting (fp32, dynamic int8, bf16...).
:func:`boundaries` lists the quantize/dequantize steps a converted graph still executes, and
:func:`clamp_weight_grids` re-packs sub-8-bit weights onto their own grid after conversion.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from qtradeoff.core.config import LayerSettings
from qtradeoff.core.precision import bits_of


def fused_qconfig_mapping(model: nn.Module, settings: Mapping[str, LayerSettings], static: Iterable[str],
                          qconfig_of: Callable[[LayerSettings], object]):
    """A ``QConfigMapping`` quantizing functional ops globally, every static layer on its own grid, and every
    other module that has weights (fp32, dynamic, cast layers, unlisted modules) left out of static int8.

    BatchNorms are left to the global qconfig: FX folds the ones that follow a convolution into it (their own
    qconfig is then never read), which is what keeps conv+bn+relu one int8 kernel.
    ``qconfig_of(settings)`` builds the static QConfig of a layer's settings. The functional ops' activations use
    the settings most static layers share (ties: the first in execution order).
    """
    from torch.ao.quantization import QConfigMapping

    static = list(static)
    counts = Counter(settings[name] for name in static)
    shared = settings[max(static, key=lambda name: counts[settings[name]])]  # max keeps the first of a tie
    # min-max, whatever the layers calibrate with: the simulation does not quantize these outputs at all, so their
    # grid must only round, never clip (a percentile range on a residual sum cost 0.6 points on MobileNetV3)
    shared = dataclasses.replace(shared, activation=dataclasses.replace(shared.activation, calibration="minmax"))
    mapping = QConfigMapping().set_global(qconfig_of(shared))
    static_set = set(static)
    for name, module in model.named_modules():
        if not name or name in static_set or isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        if any(True for _ in module.parameters(recurse=False)) or name in settings:
            mapping.set_module_name(name, None)
    for name in static:
        mapping.set_module_name(name, qconfig_of(settings[name]))
    return mapping


class _Flatten(nn.Module):
    """``nn.Flatten`` as FX sees a ``torch.flatten`` call: the x86 backend runs that on int8 tensors (it shares its
    input's grid), where the ``nn.Flatten`` module has no int8 pattern and would cut the chain in two."""

    def __init__(self, flatten: nn.Flatten):
        super().__init__()
        self.start_dim, self.end_dim = flatten.start_dim, flatten.end_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, self.start_dim, self.end_dim)


def traceable_shape_ops(model: nn.Module) -> nn.Module:
    """``model`` (modified in place: pass a copy) with its ``nn.Flatten`` modules replaced by ``torch.flatten``."""
    for name, module in list(model.named_modules()):
        if type(module) is nn.Flatten:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, _Flatten(module))
    return model


def boundaries(module: nn.Module) -> list[str]:
    """The quantize/dequantize steps a converted FX graph runs, in graph order: ``"quantize:<node>"`` for a float
    tensor entering int8 before ``<node>``, ``"dequantize:<node>"`` for the int8 output of ``<node>`` leaving it.
    Empty for anything that is not an FX graph (an eager model has no int8 boundaries to count)."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return []
    found = []
    for node in graph.nodes:
        if node.op == "call_function" and node.target in (torch.quantize_per_tensor, torch.quantize_per_channel,
                                                            torch.quantize_per_tensor_dynamic):
            users = sorted(user.name for user in node.users) or [node.name]
            found.append(f"quantize:{users[0]}")
        elif (node.op == "call_method" and node.target == "dequantize") or (
                node.op == "call_function" and node.target is torch.dequantize):
            source = node.args[0]
            found.append(f"dequantize:{getattr(source, 'name', node.name)}")
    return found


def clamp_weight_grids(module: nn.Module, settings: Mapping[str, LayerSettings], names: Iterable[str]) -> int:
    """Clamp the integer weights of every sub-8-bit layer of ``names`` to its own grid, in place; returns how many
    layers changed.

    torch.ao's observers compute a b-bit scale, but ``quantize_per_channel`` clamps to the storage dtype (qint8),
    not to the observer's range: a symmetric grid's ``+max|w|`` lands on ``scale * 2^(b-1)``, which rounds to
    ``+2^(b-1)`` — a 17th int4 level the simulation (and any b-bit storage) cannot hold. Measured on a mixed
    MobileNet: 1.4 points of top-1 between the torch-int8 export and the simulation, gone with the clamp.
    """
    changed = 0
    for name in names:
        bits = bits_of(settings[name].weight.precision)
        if bits >= 8:
            continue
        try:
            layer = module.get_submodule(name)
        except AttributeError:
            continue
        weight_of, set_weight_bias = getattr(layer, "weight", None), getattr(layer, "set_weight_bias", None)
        if not callable(weight_of) or set_weight_bias is None:
            continue
        weight = weight_of()
        if not weight.is_quantized:
            continue
        # the signed storage of realquant's weight observers: -2^(b-1)..2^(b-1)-1 for either grid
        qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        codes = weight.int_repr()
        if int(codes.min()) >= qmin and int(codes.max()) <= qmax:
            continue
        codes = codes.clamp(qmin, qmax)
        if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                                torch.per_channel_affine_float_qparams):
            repacked = torch._make_per_channel_quantized_tensor(
                codes, weight.q_per_channel_scales(), weight.q_per_channel_zero_points(), weight.q_per_channel_axis())
        else:
            repacked = torch._make_per_tensor_quantized_tensor(codes, weight.q_scale(), weight.q_zero_point())
        bias = layer.bias() if callable(getattr(layer, "bias", None)) else None
        set_weight_bias(repacked, bias)
        changed += 1
    return changed


@contextlib.contextmanager
def no_stack_traces():
    """torch.fx tracers record a stack trace per node, and symbolising the first one imports torch._inductor and
    torch._dynamo (seconds of a cold start, for error messages we never show). Off for the block; callers hold
    :func:`qtradeoff.core.runtime.tracing`, so no other trace in this process sees the switch."""
    import torch.fx.config as fx_config

    previous = getattr(fx_config, "do_not_emit_stack_traces", False)
    fx_config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        fx_config.do_not_emit_stack_traces = previous
