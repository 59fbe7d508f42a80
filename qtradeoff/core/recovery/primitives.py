"""Pure tensor functions of recovery training: straight-through fake-quantization of weights and activations,
and the distillation loss. No modules, no model walking (that is :mod:`qtradeoff.core.recovery.qat`).

Straight-through estimator: Bengio, Léonard, Courville, "Estimating or Propagating Gradients Through Stochastic
Neurons for Conditional Computation" (2013). Distillation: Hinton, Vinyals, Dean, "Distilling the Knowledge in a
Neural Network" (2015), KL divergence between temperature-softened outputs, scaled by T².
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qtradeoff.core.compression.compress import ActivationGrid, process_weight
from qtradeoff.core.config import WeightSpec
from qtradeoff.core.precision import is_integer


def ste_weight(latent: torch.Tensor, spec: WeightSpec, mask: torch.Tensor | None, *, out_axis: int = 0,
               quantize: bool = True) -> torch.Tensor:
    """``latent`` as the simulation stores it (masked, then quantized exactly as :func:`process_weight` does, with
    the grid's min-max scale taken from the current latent values), with the gradient of the identity on kept
    weights and zero on pruned ones (the mask is fixed, so pruned weights stay zero)."""
    masked = latent if mask is None else latent * mask
    if not quantize or spec.precision == "fp32":
        return masked
    with torch.no_grad():
        stored = process_weight(latent, spec, mask, out_axis=out_axis)
    return masked + (stored - masked).detach()


def ste_activation(x: torch.Tensor, grid: ActivationGrid) -> torch.Tensor:
    """Cast ``x`` to ``grid`` as the simulation does; integer grids pass the gradient inside the clipping range only
    (torch's fake-quantize backward), float formats pass it unchanged."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return x
    if is_integer(grid.precision):
        scale = torch.tensor(grid.scale, dtype=torch.float32)
        zero_point = torch.tensor(grid.zero_point, dtype=torch.int32)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, grid.qmin, grid.qmax)
    with torch.no_grad():
        cast = grid.caster()(x.detach())
    return x + (cast - x).detach()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Hinton's soft-target loss: ``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, mean over the batch."""
    t = float(temperature)
    soft_teacher = F.log_softmax(teacher.detach().float() / t, dim=-1)
    soft_student = F.log_softmax(student.float() / t, dim=-1)
    return F.kl_div(soft_student, soft_teacher, reduction="batchmean", log_target=True) * (t * t)


def recovery_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None, *,
                  temperature: float = 2.0, label_weight: float = 0.5) -> torch.Tensor:
    """Distillation from the fp32 ``teacher`` outputs, mixed with cross-entropy on ``labels`` where there are any:
    ``(1 - w) · KD + w · CE`` with ``w = label_weight`` (KD alone without labels)."""
    loss = distillation_loss(student, teacher, temperature)
    if labels is None or label_weight <= 0.0:
        return loss
    return (1.0 - label_weight) * loss + label_weight * F.cross_entropy(student.float(), labels)
