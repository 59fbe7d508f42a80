"""Pruning masks of a weight tensor: magnitude (threshold or exact sparsity), N:M, and structured output channels.

Pure tensor functions; a mask is a bool tensor of the weight's shape, True where the weight is kept. Every
selection is deterministic: among equal magnitudes the lower flat index is pruned first.
"""

from __future__ import annotations

import torch

from qtradeoff.core.config import PruneSpec


def _magnitudes(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().to(torch.float32).abs()


def weight_std(weight: torch.Tensor) -> float:
    """The unit of a relative threshold: the standard deviation of the layer's weights (population, ddof 0)."""
    w = weight.detach().to(torch.float32)
    return float(w.std(correction=0)) if w.numel() > 1 else 0.0


def absolute_threshold(weight: torch.Tensor, threshold: float, relative: bool) -> float:
    return threshold * weight_std(weight) if relative else threshold


def sparsity_for_threshold(weight: torch.Tensor, threshold: float, relative: bool = False) -> float:
    """Fraction of weights a magnitude threshold prunes (``|w| < threshold``, in std units when ``relative``)."""
    if weight.numel() == 0:
        return 0.0
    limit = absolute_threshold(weight, threshold, relative)
    return float((_magnitudes(weight) < limit).sum()) / weight.numel()


def sparsity_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask pruning exactly ``round(sparsity * numel)`` smallest-magnitude weights (stable on ties)."""
    magnitudes = _magnitudes(weight).reshape(-1)
    count = int(round(sparsity * magnitudes.numel()))
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    if count > 0:
        keep[torch.argsort(magnitudes, stable=True)[:count]] = False
    return keep.reshape(weight.shape)


def nm_mask(weight: torch.Tensor, n: int, m: int, in_axis: int = 1) -> torch.Tensor:
    """Keep the ``n`` largest of every ``m`` consecutive weights along the input axis.

    A trailing partial group (input size not a multiple of ``m``) keeps its ``min(n, size)`` largest.
    """
    if weight.dim() < 2:
        in_axis = 0
    magnitudes = _magnitudes(weight).movedim(in_axis, -1)
    moved_shape = magnitudes.shape
    size = moved_shape[-1]
    groups = -(-size // m)
    padded = torch.full((*moved_shape[:-1], groups * m), -1.0)  # padding sorts below every real magnitude
    padded[..., :size] = magnitudes
    padded = padded.reshape(-1, m)
    order = torch.argsort(-padded, dim=1, stable=True)  # largest first, lower index first among ties
    keep = torch.zeros_like(padded, dtype=torch.bool)
    keep.scatter_(1, order[:, :n], True)
    keep = keep.reshape(*moved_shape[:-1], groups * m)[..., :size]
    return keep.movedim(-1, in_axis).contiguous()


def structured_mask(weight: torch.Tensor, sparsity: float, norm: str = "l1", out_axis: int = 0) -> torch.Tensor:
    """Zero whole output channels: the ``round(sparsity * channels)`` with the smallest L1/L2 norm (stable)."""
    magnitudes = _magnitudes(weight).movedim(out_axis, 0)
    channels = magnitudes.shape[0]
    flat = magnitudes.reshape(channels, -1)
    norms = flat.sum(dim=1) if norm == "l1" else flat.square().sum(dim=1).sqrt()
    count = int(round(sparsity * channels))
    keep_channel = torch.ones(channels, dtype=torch.bool)
    if count > 0:
        keep_channel[torch.argsort(norms, stable=True)[:count]] = False
    keep = keep_channel.reshape(channels, *([1] * (weight.dim() - 1))).expand(magnitudes.shape)
    return keep.movedim(0, out_axis).contiguous()


def prune_mask(weight: torch.Tensor, spec: PruneSpec, *, out_axis: int = 0, in_axis: int = 1) -> torch.Tensor | None:
    """Keep-mask of ``weight`` under ``spec``, or None when nothing is pruned (method ``none``).

    ``out_axis``/``in_axis`` name the output- and input-channel axes (ConvTranspose stores them as 1 and 0).
    """
    if spec.method == "none":
        return None
    if spec.method == "magnitude":
        if spec.sparsity is not None:
            return sparsity_mask(weight, spec.sparsity)
        limit = absolute_threshold(weight, spec.threshold, spec.relative)
        return _magnitudes(weight) >= limit
    if spec.method == "nm":
        return nm_mask(weight, spec.n, spec.m, in_axis)
    if spec.method == "structured":
        return structured_mask(weight, spec.sparsity or 0.0, spec.norm, out_axis)
    raise ValueError(f"unknown pruning method {spec.method!r}")
