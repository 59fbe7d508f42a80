"""Rounding integer weights onto their grid with calibration data: bias correction, AdaRound and GPTQ.

Each algorithm is a pure function of one layer's float weight (BatchNorm folded, pruned), the integer grid that
nearest rounding would use (the qparams of the spec's ``range``, min-max or MSE: an algorithm never changes the
grid, only which point each weight takes), and the statistics of that layer's calibration inputs
(:class:`InputStats`: ``E[x]`` and ``E[x xᵀ]`` over the fp32 model's inputs to the layer; bias correction needs
``E[x]`` alone, a cheaper pass). :func:`round_weight` picks
the one a :class:`~qtradeoff.core.config.WeightSpec` names; the compressor collects the statistics and caches
the results per (layer, weight spec, prune spec).
AdaRound and GPTQ keep their result only where it lowers the layer's output error on the calibration data
compared with nearest rounding, so choosing them never makes a layer worse there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from qtradeoff.core.compression.quantize import int_range, weight_qparams
from qtradeoff.core.compression.rounding.adaround import adaround
from qtradeoff.core.compression.rounding.bias_correction import correct_bias, output_shift
from qtradeoff.core.compression.rounding.gptq import gptq
from qtradeoff.core.compression.rounding.grid import SUPPORTED_KINDS, Geometry, Grid, InputStats, output_error
from qtradeoff.core.config import WeightSpec
from qtradeoff.core.precision import bits_of, is_integer

__all__ = ["Geometry", "Grid", "InputStats", "Rounded", "SUPPORTED_KINDS", "adaround", "correct_bias",
           "output_error", "output_shift", "gptq", "grid_of", "round_weight", "cache_spec", "uses_data",
           "needs_second_order"]


@dataclass(frozen=True)
class Rounded:
    """A layer's rounded weight (its own shape) and, for bias correction, its corrected bias (else None).

    ``scale``/``zero_point``: the grid the weight lies on (per output channel, or one pair) where it is not the
    min-max grid torch.ao's observers compute (an MSE range), in :func:`~qtradeoff.core.compression.quantize.
    weight_qparams`'s convention; None on a min-max grid."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    zero_point: torch.Tensor | None = None


def uses_data(spec: WeightSpec) -> bool:
    """Whether ``spec`` rounds with calibration data (an integer precision and a rounding other than nearest)."""
    return spec.rounding != "nearest" and is_integer(spec.precision)


def needs_second_order(spec: WeightSpec) -> bool:
    """Whether ``spec``'s algorithm reads ``E[x xᵀ]`` (AdaRound, GPTQ); bias correction needs ``E[x]`` alone."""
    return uses_data(spec) and spec.rounding != "bias_correction"


_ALGORITHM_PARAMETERS = ("adaround_iterations", "gptq_damping", "gptq_block", "gptq_act_order")


def cache_spec(spec: WeightSpec) -> WeightSpec:
    """``spec`` with the parameters of the algorithms it does not use at their defaults: a cache key, so that
    e.g. GPTQ's damping does not recompute an AdaRound result."""
    defaults = WeightSpec()
    keep = {"adaround": ("adaround_iterations",),
            "gptq": ("gptq_damping", "gptq_block", "gptq_act_order")}.get(spec.rounding, ())
    reset = {name: getattr(defaults, name) for name in _ALGORITHM_PARAMETERS if name not in keep}
    if not uses_data(spec):
        reset["rounding"] = "nearest"
    if not is_integer(spec.precision):  # the range method chooses an integer grid; float and LUT have none
        reset["range"] = defaults.range
    return replace(spec, **reset)


def grid_of(matrices: torch.Tensor, weight: torch.Tensor, spec: WeightSpec, out_axis: int = 0) -> Grid:
    """The grid nearest rounding uses for ``weight`` (already pruned), for its ``(G, R, K)`` stack ``matrices``:
    chosen by ``spec.range`` before any rounding, so every algorithm rounds onto the grid nearest rounding has."""
    bits = bits_of(spec.precision)
    axis = out_axis if (spec.granularity == "per_channel" and weight.dim() > 1) else None
    scale, zero_point = weight_qparams(weight.to(torch.float32), bits, spec.symmetric, axis, spec.range)
    qmin, qmax = int_range(bits, spec.symmetric)
    return Grid.for_rows(scale, zero_point, qmin, qmax, matrices.shape)


_ALGORITHMS: dict[str, Callable[..., torch.Tensor]] = {
    "adaround": lambda w, grid, stats, spec, mask: adaround(w, grid, stats, iterations=spec.adaround_iterations,
                                                            mask=mask),
    "gptq": lambda w, grid, stats, spec, mask: gptq(w, grid, stats, damping=spec.gptq_damping,
                                                    block=spec.gptq_block, act_order=spec.gptq_act_order,
                                                    mask=mask),
}


def round_weight(geometry: Geometry, weight: torch.Tensor, spec: WeightSpec, stats: InputStats, *,
                 bias: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> Rounded:
    """Round ``weight`` (float, its own shape, BatchNorm folded) at ``spec`` with the calibration ``stats``.

    ``mask`` is the pruning keep-mask (pruned weights stay zero); ``bias`` the layer's float bias (bias
    correction returns the corrected one, a new bias where the layer had none).
    """
    if not uses_data(spec):
        raise ValueError(f"{spec.rounding} rounding of {spec.precision} weights needs no calibration data")
    if needs_second_order(spec) and not stats.second_order:
        raise ValueError(f"{spec.rounding} needs second-order input statistics (E[x xᵀ]); these hold E[x] only")
    w = weight.detach().to(torch.float32)
    if mask is not None:
        w = w * mask
    matrices = geometry.matrices(w)
    grid = grid_of(matrices, w, spec)
    keep = None if mask is None else geometry.matrices(mask.to(torch.float32))
    nearest = grid.nearest(matrices)
    if keep is not None:
        nearest = nearest * keep
    if spec.rounding == "bias_correction":
        return Rounded(nearest.reshape(weight.shape).contiguous(), correct_bias(matrices, nearest, bias, stats))
    rounded = _ALGORITHMS[spec.rounding](matrices, grid, stats, spec, keep)
    if keep is not None:
        rounded = rounded * keep
    if float(output_error(rounded - matrices, stats)) > float(output_error(nearest - matrices, stats)):
        rounded = nearest
    return Rounded(rounded.reshape(weight.shape).contiguous())
