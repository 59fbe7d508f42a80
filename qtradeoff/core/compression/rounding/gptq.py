"""GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers",
ICLR 2023; the optimal-brain-quantization update of Frantar & Alistarh, NeurIPS 2022).

Columns of each weight matrix are rounded one at a time; the error each rounding makes is fed back into the
columns not yet rounded, weighted by the inverse Hessian ``H = E[x xᵀ]`` of the layer's inputs, so that the
layer's *output* error is minimized instead of each weight's own error. Blocks of ``block`` columns are updated
lazily (the paper's batching); the Cholesky factor of ``H⁻¹`` gives every update. ``damping`` (a fraction of the
mean diagonal of ``H``) keeps the inverse stable. Inputs are the fp32 model's activations (not those of the
quantized prefix), so a layer's result depends only on its own weight, grid and mask, and is cached per layer.
Grouped and depthwise convolutions run as a batch of independent matrices.

``act_order`` (the paper's "act-order", AutoGPTQ's ``desc_act``) rounds the columns in order of decreasing
Hessian diagonal (the inputs of most energy first, while the most columns are left to absorb their error), each
group of a grouped convolution in its own order, and puts the result back in the weight's column order. Only the
order changes: the grid (one scale per output row) and the pruning mask travel with their columns.
"""

from __future__ import annotations

import numpy as np
import torch

from qtradeoff.core.compression.rounding.grid import Grid, InputStats


def _inverse_cholesky(hessian: torch.Tensor, damping: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + λI)⁻¹`` per group, raising the damping until it factors."""
    k = hessian.shape[-1]
    eye = torch.eye(k, dtype=hessian.dtype)
    mean_diag = hessian.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-12).reshape(-1, 1, 1)
    for attempt in range(6):
        damped = hessian + (damping * 10 ** attempt) * mean_diag * eye
        lower, info = torch.linalg.cholesky_ex(damped)
        if not bool(info.any()):
            inverse = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if not bool(info.any()):
                return upper
    raise ValueError("the input Hessian is not positive definite even with strong damping")


def _round_columns(w: np.ndarray, errors: np.ndarray, out: np.ndarray, hinv: np.ndarray, scale: np.ndarray,
                   zero: np.ndarray, qmin: int, qmax: int, keep: np.ndarray | None) -> None:
    """Round one block's columns in order, feeding each one's error into the block's later columns (in place).

    NumPy views of the float64 tensors: the same IEEE operations as torch's, one by one (round half to even,
    clamp, no fused multiply-add), so the same bits, at a fraction of torch's per-call cost on these ``(G, R, 1)``
    slices (the loop runs once per input column: 576 times on a 3x3 conv of 64 channels).
    """
    for i in range(w.shape[2]):
        column = w[:, :, i:i + 1]
        q = column / scale
        q += zero
        np.round(q, out=q)
        np.clip(q, qmin, qmax, out=q)
        q -= zero
        q *= scale
        if keep is not None:
            q *= keep[:, :, i:i + 1]
        out[:, :, i:i + 1] = q
        error = column - q
        error /= hinv[:, i, i].reshape(-1, 1, 1)
        w[:, :, i:] -= error * hinv[:, i:i + 1, i:]
        errors[:, :, i:i + 1] = error


def activation_order(hessian: torch.Tensor) -> torch.Tensor:
    """Per group, the column order of decreasing Hessian diagonal ``(G, K)`` (ties in column order; inputs that
    are always zero last)."""
    return torch.argsort(hessian.diagonal(dim1=1, dim2=2), dim=1, descending=True, stable=True)


def _columns(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``x`` ``(G, R, K)`` with each group's columns taken in ``order`` ``(G, K)``."""
    return torch.gather(x, 2, order.unsqueeze(1).expand(-1, x.shape[1], -1))


def gptq(weight: torch.Tensor, grid: Grid, stats: InputStats, *, damping: float = 0.01, block: int = 128,
         act_order: bool = False, mask: torch.Tensor | None = None) -> torch.Tensor:
    """GPTQ-rounded ``weight`` (a ``(G, R, K)`` stack) on ``grid``; pruned entries (``mask`` 0) stay zero.
    ``act_order``: columns rounded in order of decreasing Hessian diagonal (see the module's docstring)."""
    if act_order:
        order = activation_order(stats.hessian)
        k = weight.shape[2]
        hessian = stats.hessian.to(torch.float64)
        permuted = torch.gather(_columns(hessian, order), 1, order.unsqueeze(2).expand(-1, -1, k))
        keep = None if mask is None else _columns(mask, order)
        permuted_stats = InputStats(permuted, torch.gather(stats.mean, 1, order), stats.count, stats.samples)
        rounded = gptq(_columns(weight.detach(), order), grid, permuted_stats, damping=damping, block=block,
                       mask=keep)
        # back to the weight's column order: column order[g, j] of the result is column j of the permuted one
        return torch.empty_like(rounded).scatter_(2, order.unsqueeze(1).expand(-1, rounded.shape[1], -1), rounded)
    w = weight.detach().to(torch.float64).clone()
    hessian = stats.hessian.to(torch.float64).clone()
    # inputs that are always zero carry no information: their weights round to nearest (no error to feed back)
    dead = hessian.diagonal(dim1=1, dim2=2) <= 0
    if bool(dead.any()):
        hessian.diagonal(dim1=1, dim2=2)[dead] = 1.0
    hinv = _inverse_cholesky(hessian, damping)
    scale, zero = grid.scale.to(torch.float64), grid.zero_point.to(torch.float64)
    keep = None if mask is None else mask.to(torch.float64)
    out = torch.zeros_like(w)
    k = w.shape[2]
    scale_np, zero_np = scale.numpy(), zero.numpy()
    for start in range(0, k, block):
        end = min(start + block, k)
        w_block = w[:, :, start:end].clone()
        errors = torch.zeros_like(w_block)
        _round_columns(w_block.numpy(), errors.numpy(), out[:, :, start:end].numpy(),
                       hinv[:, start:end, start:end].numpy(), scale_np, zero_np, grid.qmin, grid.qmax,
                       None if keep is None else keep[:, :, start:end].numpy())
        w[:, :, end:] -= errors @ hinv[:, start:end, end:]
    # back onto the float32 grid exactly as nearest rounding computes values (so exports recover the codes)
    return grid.nearest(out.to(torch.float32))
