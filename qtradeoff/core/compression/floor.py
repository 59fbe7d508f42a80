"""Where a quantizer's scale floor wipes a tensor out (issue 16).

Integer grids floor their scale at float32's epsilon (as torch.ao's observers do), so that an all-zero channel
does not divide by zero. A tensor whose whole range is below a couple of such steps then lands on one or two
levels of the grid: weights of ~1e-10 all round to 0, activations of ~1e-10 collapse to the zero point, and the
result's fidelity (0 dB, 0 % agreement) says nothing about the precision the user chose. Each such layer is
named in a warning of the Result. Pure functions of the compressor's tensors and the plan; nothing is modified.
"""

from __future__ import annotations

import weakref

import torch

from qtradeoff.core.compression.plan import Plan
from qtradeoff.core.compression.quantize import _EPS, int_qparams, int_range
from qtradeoff.core.precision import bits_of, is_integer

FLOOR = _EPS
LEVELS = 2.0  # a range spanning fewer steps than this keeps at most two levels of the grid
_SHOWN = 3

# (layer, weight name, weight spec) -> (collapsed channels, channels), per compressor: weights never change.
_weight_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _collapsed(lo: torch.Tensor, hi: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Which (channels') ranges sit on a floored scale and span fewer than ``LEVELS`` steps, values non-zero."""
    floored = scale <= FLOOR * (1 + 1e-6)
    nonzero = torch.maximum(lo.abs(), hi.abs()) > 0
    return floored & nonzero & ((hi - lo) < LEVELS * scale)


def weight_collapse(weight: torch.Tensor, bits: int, symmetric: bool, axis: int | None) -> tuple[int, int]:
    """How many channels (or 1 tensor) of ``weight`` the scale floor collapses, and how many there are."""
    weight = weight.detach().to(torch.float32)
    if axis is None:
        lo, hi = weight.min(), weight.max()
    else:
        flat = weight.movedim(axis, 0).reshape(weight.shape[axis], -1)
        lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    scale, _ = int_qparams(weight, bits, symmetric, axis)
    collapsed = _collapsed(lo.clamp(max=0.0), hi.clamp(min=0.0), scale)
    return int(collapsed.sum()), int(collapsed.numel())


def scale_floor_warnings(compressor, plan: Plan) -> list[str]:
    """One warning naming the layers whose weights, and one naming those whose activations, the scale floor
    zeroes or collapses to one or two levels under ``plan`` (empty when none)."""
    weights: list[str] = []
    activations: list[str] = []
    cache = _weight_cache.setdefault(compressor, {})
    for layer in plan:
        settings = layer.settings
        if settings.skip:
            continue
        spec = settings.weight
        if layer.rewrites and is_integer(spec.precision):
            hit = 0
            for name in layer.weight_names:
                key = (layer.name, name, spec)
                if key not in cache:
                    tensor = compressor.weight(layer.name, name)
                    axis = layer.out_axis if spec.granularity == "per_channel" and tensor.dim() > 1 else None
                    cache[key] = weight_collapse(tensor, bits_of(spec.precision), spec.symmetric, axis)
                hit += cache[key][0]
            if hit:
                weights.append(layer.name)
        grids = compressor.activation_grids(layer) if compressor.casts_activations(layer) else {}
        for where, grid in grids.items():
            if not is_integer(grid.precision):
                continue
            observed = compressor.activation_range(layer.name, where)
            if observed is None:
                continue
            qmin, qmax = int_range(bits_of(grid.precision), settings.activation.symmetric)
            lo = torch.tensor(max(min(observed[0], 0.0), (qmin - grid.zero_point) * grid.scale))
            hi = torch.tensor(min(max(observed[1], 0.0), (qmax - grid.zero_point) * grid.scale))
            if bool(_collapsed(lo, hi, torch.tensor(grid.scale, dtype=torch.float32))):
                activations.append(layer.name if where == "input" else f"{layer.name} (output)")
    found = []
    if weights:
        found.append(f"the quantizer's smallest scale ({FLOOR:.3g}) zeroes the weights of {_names(weights)}: their "
                     "values are below one step of the grid, so this configuration's figures are not those of the "
                     "chosen precision; rescale the model or keep these layers in fp32")
    if activations:
        found.append(f"the quantizer's smallest scale ({FLOOR:.3g}) collapses the activations of "
                     f"{_names(activations)} to one or two levels (their range is below two steps of the grid); "
                     "keep their activations in fp32 or rescale the model")
    return found


def _names(layers: list[str]) -> str:
    shown = ", ".join(layers[:_SHOWN])
    more = f" and {len(layers) - _SHOWN} more layers" if len(layers) > _SHOWN else ""
    return f"{'layer' if len(layers) == 1 else 'layers'} {shown}{more}"
