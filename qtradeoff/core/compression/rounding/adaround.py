"""AdaRound (Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization", ICML 2020).

Each weight is rounded down or up, not to nearest: a continuous variable ``V`` per weight gives the rectified
sigmoid ``h(V) ∈ [0, 1]`` added to ``floor(w / s)``, learned to minimize the layer's output reconstruction error
``E ||(W̃ - W) x||²`` plus a regularizer ``λ Σ 1 - |2h - 1|^β`` whose β anneals from 20 to 2, pushing every
``h`` to 0 or 1. Unlike the paper (a squared error summed over outputs, λ = 0.01 on a sum over weights,
10-20k iterations), the reconstruction error here is relative to nearest rounding's and the regularizer is a mean
over weights, so one λ (5) balances them on layers of any size and output scale: with the paper's weighting the
large-output layers never left nearest rounding in the few hundred full-batch steps a CPU affords (λ = 5 gave the
lowest errors of 0.1..5 on every digits_cnn layer at int3, 500 steps; the first conv reached 0.23 where
exhaustive up/down search gets 0.17 and nearest 0.87).
The reconstruction error is computed exactly from the input statistics ``E[x xᵀ]`` (no
sampling of batches), on the fp32 model's inputs (not the quantized prefix's), so a layer's result depends only
on its own weight, grid and mask and is cached per layer. The final hard rounding is kept only when it beats
nearest rounding on the calibration data (else nearest is returned).
"""

from __future__ import annotations

import torch

from qtradeoff.core.compression.rounding.grid import Grid, InputStats, output_error

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (the paper's values)
REGULARIZATION = 5.0
WARMUP = 0.2  # fraction of iterations without the rounding regularizer
BETA = (20.0, 2.0)
LEARNING_RATE = 3e-2


class _Adam:
    """Adam on one tensor, in place (Kingma & Ba's update). Written out because the first step of
    ``torch.optim.Adam`` imports torch's compiler stack: seconds, more than a small layer's whole optimization."""

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.t = 0

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        self.t += 1
        b1, b2 = self.betas
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-self.lr / (1 - b1 ** self.t))


def _soft(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def adaround(weight: torch.Tensor, grid: Grid, stats: InputStats, *, iterations: int = 500,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """AdaRound-rounded ``weight`` (a ``(G, R, K)`` stack) on ``grid``; pruned entries (``mask`` 0) stay zero."""
    w = weight.detach().to(torch.float32)
    hessian = stats.hessian.to(torch.float32)
    keep = None if mask is None else mask.to(torch.float32)
    floor = torch.floor(w / grid.scale)
    rest = (w / grid.scale - floor).clamp(0.0, 1.0)
    # start where h(V) equals the fractional part: the soft weight is the float weight (inside the grid)
    start = ((rest - GAMMA) / (ZETA - GAMMA)).clamp(1e-4, 1 - 1e-4)
    v = torch.log(start / (1 - start)).requires_grad_(True)
    adam = _Adam(v, LEARNING_RATE)
    # The reconstruction error relative to nearest rounding's, and the regularizer's mean over weights: both
    # O(1) whatever the layer's size and output scale, so one λ balances them on every layer.
    with torch.no_grad():
        nearest = grid.nearest(w) if keep is None else grid.nearest(w) * keep
        reference = float(output_error(nearest - w, stats)) or 1.0
    warm = int(WARMUP * iterations)

    def soft_weight(h: torch.Tensor) -> torch.Tensor:
        value = grid.value(torch.clamp(floor + h + grid.zero_point, grid.qmin, grid.qmax))
        return value if keep is None else value * keep

    with torch.enable_grad():
        for step in range(iterations):
            h = _soft(v)
            delta = soft_weight(h) - w
            loss = ((delta @ hessian) * delta).sum() / reference
            if step >= warm:
                progress = (step - warm) / max(1, iterations - warm)
                beta = BETA[0] + (BETA[1] - BETA[0]) * progress
                loss = loss + REGULARIZATION * (1 - (2 * h - 1).abs().pow(beta)).mean()
            (grad,) = torch.autograd.grad(loss, v)
            adam.step(grad)
    with torch.no_grad():
        hard = (_soft(v) >= 0.5).to(torch.float32)
        learned = grid.value(torch.clamp(floor + hard + grid.zero_point, grid.qmin, grid.qmax))
        nearest = grid.nearest(w)
        if keep is not None:
            learned, nearest = learned * keep, nearest * keep
        if float(output_error(learned - w, stats)) <= float(output_error(nearest - w, stats)):
            return learned
        return nearest
