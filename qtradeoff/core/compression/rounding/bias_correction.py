"""Empirical bias correction (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction", ICCV 2019, section 4.2; the empirical variant computes the shift on calibration data).

Rounding a layer's weights shifts the mean of its outputs by ``E[(W_q - W) x] = (W_q - W) E[x]``: a systematic
error that the following layers amplify. Subtracting that shift from the bias removes it exactly on the
calibration data. The mean ``E[x]`` is over the layer's *float* inputs (the fp32 model's activations), so the
correction of one layer does not depend on how the layers before it are compressed (and is cached per layer).
"""

from __future__ import annotations

import torch

from qtradeoff.core.compression.rounding.grid import InputStats


def output_shift(weight: torch.Tensor, rounded: torch.Tensor, stats: InputStats) -> torch.Tensor:
    """The mean output change ``(W_q - W) E[x]`` per output channel, for ``(G, R, K)`` weight stacks."""
    delta = (rounded - weight).to(torch.float64)
    return (delta @ stats.mean.to(torch.float64).unsqueeze(2)).reshape(-1)


def correct_bias(weight: torch.Tensor, rounded: torch.Tensor, bias: torch.Tensor | None, stats: InputStats
                 ) -> torch.Tensor:
    """The bias that cancels the mean output shift of rounding ``weight`` to ``rounded`` (``(G, R, K)`` stacks;
    ``bias`` of ``G*R`` values or None for a layer without one)."""
    shift = output_shift(weight, rounded, stats)
    base = torch.zeros_like(shift) if bias is None else bias.detach().reshape(-1).to(torch.float64)
    return (base - shift).to(torch.float32)
