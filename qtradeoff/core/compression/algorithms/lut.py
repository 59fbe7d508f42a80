"""Lookup-table (non-uniform) weight quantization: k-means codebooks of ``2**bits`` values.

After Han, Mao and Dally, "Deep Compression: Compressing Deep Neural Networks with Pruning, Trained Quantization
and Huffman Coding" (ICLR 2016), without the retraining: each weight is replaced by the nearest of ``2**bits``
shared values found by 1-D k-means (Lloyd's algorithm). One codebook per output channel (``per_channel``, the
default granularity) or per tensor (``per_tensor``). Storage: one ``bits``-wide index per weight plus the
codebooks, ``2**bits`` fp16 values each (:data:`CODEBOOK_BYTES`); the simulation uses the fp16-rounded centroids,
so it computes exactly what the stored indices and codebooks decode to.

Deterministic: the centroids start at the quantiles of the values (mid-points of ``k`` equal-mass bins) and run at
most :data:`LLOYD_ITERATIONS` Lloyd iterations, vectorised over channels; a cluster that empties keeps its previous
centroid. When the tensor is pruned, one centroid per codebook is pinned at exactly 0, so pruned weights are
representable in every storage format (the dense one included).
"""

from __future__ import annotations

import torch

CODEBOOK_BYTES = 2  # fp16 centroids
LLOYD_ITERATIONS = 20


def codebook_bytes(bits: int, codebooks: int = 1) -> int:
    """Bytes of ``codebooks`` codebooks of ``2**bits`` fp16 centroids."""
    return codebooks * (1 << bits) * CODEBOOK_BYTES


def _assign(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Per row, the index (into the row of ``centroids``, any order) of the nearest centroid of each value."""
    order = centroids.argsort(dim=1, stable=True)
    ordered = centroids.gather(1, order)
    midpoints = ((ordered[:, 1:] + ordered[:, :-1]) / 2).contiguous()
    position = torch.searchsorted(midpoints, values.contiguous(), right=True)
    return order.gather(1, position)


def kmeans_rows(values: torch.Tensor, k: int, keep: torch.Tensor | None = None, *,
                iterations: int = LLOYD_ITERATIONS, pin_zero: bool = False) -> torch.Tensor:
    """Centroids ``[rows, k]`` (float32, fp16-representable) of 1-D k-means on each row of ``values``, fitted on
    the entries ``keep`` marks (all by default); with ``pin_zero`` the last centroid of every row is exactly 0."""
    values = values.detach().to(torch.float32)
    rows, n = values.shape
    keep = torch.ones_like(values, dtype=torch.bool) if keep is None else keep.to(torch.bool)
    free = k - 1 if pin_zero else k
    ordered = torch.where(keep, values, torch.full_like(values, float("inf"))).sort(dim=1).values
    counts = keep.sum(dim=1, keepdim=True)
    quantiles = (torch.arange(free, dtype=torch.float32) + 0.5) / max(free, 1)
    position = (quantiles.unsqueeze(0) * (counts - 1).clamp(min=0)).round().long().clamp(max=n - 1)
    centroids = ordered.gather(1, position)
    centroids = torch.where(counts > 0, centroids, torch.zeros_like(centroids))
    if pin_zero:
        centroids = torch.cat([centroids, torch.zeros(rows, 1)], dim=1)
    weight = keep.to(torch.float32).reshape(-1)
    offsets = (torch.arange(rows) * k).unsqueeze(1)
    for _ in range(iterations):
        flat = (_assign(values, centroids) + offsets).reshape(-1)
        mass = torch.bincount(flat, weights=weight, minlength=rows * k).reshape(rows, k)
        sums = torch.bincount(flat, weights=values.reshape(-1) * weight, minlength=rows * k).reshape(rows, k)
        updated = torch.where(mass > 0, sums / mass.clamp(min=1e-30), centroids).to(torch.float32)
        if pin_zero:
            updated[:, -1] = 0.0
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids.to(torch.float16).to(torch.float32)  # the stored (fp16) codebook values


def lut_quantize(weight: torch.Tensor, bits: int, mask: torch.Tensor | None = None, *, per_channel: bool = True,
                 out_axis: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dequantized weight, codebooks [rows, 2**bits], indices [rows, n])`` of ``weight``.

    ``rows`` are the output channels (along ``out_axis``) when ``per_channel`` and the weight has more than one
    dimension, else one row. With a keep-``mask``, k-means fits the kept values, a 0 centroid is pinned in every
    codebook and pruned positions take it (their dequantized value is exactly 0).
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"lookup-table quantization supports 1..16 bits, got {bits}")
    weight = weight.detach().to(torch.float32)
    per_channel = per_channel and weight.dim() > 1
    moved = weight.movedim(out_axis, 0) if per_channel else weight.reshape(1, -1)
    values = moved.reshape(moved.shape[0], -1)
    mask = None if mask is None else mask.to(torch.bool)
    pruned = mask is not None and not bool(mask.all())
    keep = None
    if pruned:
        keep = (mask.movedim(out_axis, 0) if per_channel else mask.reshape(1, -1)).reshape(values.shape)
    codebooks = kmeans_rows(values, 1 << bits, keep, pin_zero=pruned)
    indices = _assign(values, codebooks)
    if pruned:
        indices = torch.where(keep, indices, torch.full_like(indices, (1 << bits) - 1))
    decoded = codebooks.gather(1, indices)
    decoded = decoded.reshape(moved.shape).movedim(0, out_axis) if per_channel else decoded.reshape(weight.shape)
    return decoded.contiguous(), codebooks, indices
