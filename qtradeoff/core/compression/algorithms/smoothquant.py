"""SmoothQuant: migrate activation outliers into the weights of a linear or convolution layer.

After Xiao, Lin, Seznec, Wu, Demouth and Han, "SmoothQuant: Accurate and Efficient Post-Training Quantization for
Large Language Models" (ICML 2023). Per input channel ``j`` of a layer, ``s_j = max|X_j|**alpha /
max|W_j|**(1 - alpha)`` from calibration statistics; the layer computes ``(X / s) (s W)``, the same float function,
with an activation range flattened across channels (easier to quantize per tensor) and the weights' input
channels scaled up by ``s``. ``alpha`` is the migration strength (0: nothing moves to the weights' side, 1: all).

In the simulation the division is applied to the layer's input just before its activation cast (a deployed model
folds it into the producer: the previous layer's output channels or a normalization).
"""

from __future__ import annotations

import torch

from qtradeoff.core.compression.algorithms.equalization import input_absmax, scale_inputs

_FLOOR = 1e-5


def smoothing_scales(activation_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s_j = max|X_j|**alpha / max|W_j|**(1 - alpha)``; 1 for a channel whose activation or weight is all zero."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"SmoothQuant alpha must be within [0, 1], got {alpha}")
    a = activation_absmax.detach().to(torch.float32)
    w = weight_absmax.detach().to(torch.float32)
    ok = (a > 0) & (w > 0)
    s = a.clamp(min=_FLOOR).pow(alpha) / w.clamp(min=_FLOOR).pow(1.0 - alpha)
    return torch.where(ok, s.clamp(min=_FLOOR), torch.ones_like(s))


def smooth(weight: torch.Tensor, activation_absmax: torch.Tensor, alpha: float, groups: int = 1
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s * weight along its input channels, s)`` for one layer; its input must then be divided by ``s``."""
    s = smoothing_scales(activation_absmax, input_absmax(weight, groups), alpha)
    return scale_inputs(weight.detach().to(torch.float32), s, groups), s


class InputDivide:
    """Forward pre-hook dividing a layer's input by per-channel factors (channel axis 1, or the last axis of a
    linear layer's input)."""

    def __init__(self, divisor: torch.Tensor, linear: bool):
        self.divisor = divisor.to(torch.float32)
        self.linear = linear

    def __call__(self, module, args):
        if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
            return None
        x = args[0]
        shape = (-1,) if self.linear or x.dim() < 2 else (-1, *([1] * (x.dim() - 2)))
        return (x / self.divisor.reshape(shape).to(x.dtype), *args[1:])
