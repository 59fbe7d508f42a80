"""Cross-layer equalization (CLE) of consecutive conv/linear layers with ReLU-family activations between them.

After Nagel, van Baalen, Blankevoort and Welling, "Data-Free Quantization Through Weight Equalization and Bias
Correction" (ICCV 2019). For a pair ``y = W2 f(W1 x + b1)`` with ``f`` positively homogeneous (ReLU, LeakyReLU,
max/avg pooling, flatten, dropout at inference), ``f(z / s) = f(z) / s`` for ``s > 0``, so dividing output channel
``c`` of the first layer (weights and bias) by ``s_c`` and multiplying input channel ``c`` of the second by
``s_c`` leaves the float function unchanged. ``s_c = sqrt(r1_c / r2_c)`` makes both channel ranges
``sqrt(r1_c * r2_c)``, which evens out per-tensor quantization grids; chains are equalized by repeated sweeps.
BatchNorm is folded into the first layer beforehand (the Compressor's folded weights). No bias absorption.

Pure tensor primitives first; :func:`find_pairs` reads a model's FX graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

SWEEPS = 20
_EPS = 1e-12


# -- tensor primitives ------------------------------------------------------------------------------------------

def output_absmax(weight: torch.Tensor) -> torch.Tensor:
    """max |w| of each output channel (axis 0)."""
    return weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1)


def input_absmax(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """max |w| of each *input* channel of a conv (``[out, in/groups, *k]``) or linear (``[out, in]``) weight."""
    out, in_g = weight.shape[0], weight.shape[1]
    grouped = weight.detach().abs().reshape(groups, out // groups, in_g, -1)
    return grouped.amax(dim=(1, 3)).reshape(-1)


def scale_inputs(weight: torch.Tensor, scale: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """``weight`` with input channel ``c`` multiplied by ``scale[c]`` (grouped convolutions included)."""
    out, in_g = weight.shape[0], weight.shape[1]
    shaped = scale.to(weight.dtype).reshape(groups, 1, in_g, *([1] * (weight.dim() - 2)))
    return (weight.reshape(groups, out // groups, in_g, *weight.shape[2:]) * shaped).reshape(weight.shape)


def scale_outputs(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``weight`` with output channel ``c`` multiplied by ``scale[c]``."""
    return weight * scale.to(weight.dtype).reshape(-1, *([1] * (weight.dim() - 1)))


def pair_scales(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """``sqrt(r1 / r2)`` per channel; 1 where either range is 0 (a dead channel stays as it is)."""
    ok = (r1 > _EPS) & (r2 > _EPS)
    return torch.where(ok, (r1.clamp(min=_EPS) / r2.clamp(min=_EPS)).sqrt(), torch.ones_like(r1))


@dataclass(frozen=True)
class Pair:
    """Layer ``first``'s output channels feed layer ``second``'s input channels, each repeated ``expand`` times
    (a flatten between a convolution and a linear layer); ``groups`` is the second layer's group count."""

    first: str
    second: str
    expand: int = 1
    groups: int = 1


def equalize(weights: Mapping[str, torch.Tensor], biases: Mapping[str, torch.Tensor | None], pairs: Sequence[Pair],
             *, sweeps: int = SWEEPS) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None],
                                               dict[str, torch.Tensor]]:
    """Equalize ``pairs`` over ``sweeps`` passes: new weights and biases of the layers involved, and per second
    layer the factor its *input* activations were divided by (per input channel, flatten expansion included)."""
    w = {name: weights[name].detach().to(torch.float32).clone() for p in pairs for name in (p.first, p.second)}
    b = {name: (None if biases.get(name) is None else biases[name].detach().to(torch.float32).clone())
         for p in pairs for name in (p.first, p.second)}
    total = {p.second: torch.ones(weights[p.first].shape[0], dtype=torch.float32) for p in pairs}
    for _ in range(sweeps):
        for p in pairs:
            r1 = output_absmax(w[p.first])
            r2 = input_absmax(w[p.second], p.groups).reshape(-1, p.expand).amax(dim=1)
            s = pair_scales(r1, r2)
            w[p.first] = scale_outputs(w[p.first], 1.0 / s)
            if b[p.first] is not None:
                b[p.first] = b[p.first] / s
            w[p.second] = scale_inputs(w[p.second], s.repeat_interleave(p.expand), p.groups)
            total[p.second] = total[p.second] * s
    divisors = {name: s.repeat_interleave(next(p.expand for p in pairs if p.second == name))
                for name, s in total.items()}
    return w, b, divisors


# -- reading a model -------------------------------------------------------------------------------------------

_HOMOGENEOUS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                        nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                        nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Identity)
_HOMOGENEOUS_FUNCTIONS = {"relu", "relu_", "leaky_relu", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d",
                          "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
                          "adaptive_max_pool2d", "dropout", "flatten"}


def _is_layer(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.modules.conv._ConvTransposeNd)


def find_pairs(graph_module, layer_names: Sequence[str], folded: Mapping[str, str]) -> list[Pair]:
    """Consecutive layer pairs of an FX-traced model that CLE can rescale exactly.

    ``folded`` maps a convolution to the BatchNorm folded into it (``Compressor`` folds before equalizing). The
    path from the first layer's output to the second layer's input must be a chain of single-consumer nodes,
    each a folded BatchNorm or a positively homogeneous op (see the module docstring).
    """
    modules = dict(graph_module.named_modules())
    names = set(layer_names)
    folded_norms = {bn: conv for conv, bn in folded.items()}
    pairs = []
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or node.target not in names or not _is_layer(modules[node.target]):
            continue
        second = modules[node.target]
        current, flattened = (node.args[0] if node.args else None), False
        while current is not None and getattr(current, "op", None) is not None and len(current.users) == 1:
            if current.op == "call_module":
                module = modules.get(current.target)
                if current.target in names:
                    break
                if current.target in folded_norms or isinstance(module, _HOMOGENEOUS_MODULES):
                    current = current.args[0] if current.args else None
                    continue
                if isinstance(module, nn.Flatten):
                    flattened, current = True, current.args[0]
                    continue
                current = None
            elif current.op in ("call_function", "call_method"):
                name = getattr(current.target, "__name__", current.target)
                if name not in _HOMOGENEOUS_FUNCTIONS:
                    current = None
                    continue
                flattened = flattened or name == "flatten"
                current = current.args[0] if current.args else None
            else:
                current = None
        if current is None or getattr(current, "op", None) != "call_module" or current.target not in names \
                or len(current.users) != 1:
            continue
        first = modules[current.target]
        if not _is_layer(first):  # scaling output channels is exact for any group count
            continue
        out_channels = first.weight.shape[0]
        in_features = second.weight.shape[1] * getattr(second, "groups", 1)
        if isinstance(second, nn.Linear) and isinstance(first, nn.modules.conv._ConvNd):
            if not flattened or in_features % out_channels:
                continue
            expand = in_features // out_channels
        elif in_features == out_channels and not flattened:
            expand = 1
        else:
            continue
        pairs.append(Pair(current.target, node.target, expand, getattr(second, "groups", 1)))
    return pairs
