"""Lookup-table (non-uniform) weight quantization: a k-means codebook of ``2**bits`` values per tensor.

After Han, Mao and Dally, "Deep Compression: Compressing Deep Neural Networks with Pruning, Trained Quantization
and Huffman Coding" (ICLR 2016), without the retraining: each weight tensor is replaced by the nearest of ``2**bits``
shared values found by 1-D k-means (Lloyd's algorithm) on the tensor's values. Storage is one ``bits``-wide index
per weight plus the codebook, ``2**bits`` float32 values per tensor (:data:`CODEBOOK_BYTES` each).

Deterministic: the centroids start at the quantiles of the values (mid-points of ``k`` equal-mass bins) and run a
fixed number of Lloyd iterations; a cluster that empties keeps its previous centroid. When the tensor is pruned,
one centroid is pinned at exactly 0 so that pruned weights are representable in every storage format.
"""

from __future__ import annotations

import torch

CODEBOOK_BYTES = 4  # fp32 centroids
LLOYD_ITERATIONS = 30
# k-means runs on at most this many values (a deterministic stride beyond); assignment covers every value.
FIT_SAMPLE = 1 << 18


def codebook_bytes(bits: int) -> int:
    """Bytes of one tensor's codebook: ``2**bits`` fp32 centroids."""
    return (1 << bits) * CODEBOOK_BYTES


def assign(values: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index (int64) of the nearest centroid of a *sorted* ``codebook`` for each of ``values`` (ties: lower)."""
    if codebook.numel() == 1:
        return torch.zeros_like(values, dtype=torch.int64)
    midpoints = (codebook[1:] + codebook[:-1]) / 2
    return torch.searchsorted(midpoints.contiguous(), values.contiguous(), right=True)


def kmeans_1d(values: torch.Tensor, k: int, *, iterations: int = LLOYD_ITERATIONS,
              pin_zero: bool = False) -> torch.Tensor:
    """Sorted codebook (float32, ``k`` entries) of 1-D k-means on ``values``; see the module docstring."""
    values = values.detach().to(torch.float32).reshape(-1)
    if values.numel() > FIT_SAMPLE:
        values = values.sort().values[:: -(-values.numel() // FIT_SAMPLE)]
    if values.numel() == 0:
        return torch.zeros(k)
    free = k - 1 if pin_zero else k
    quantiles = (torch.arange(free, dtype=torch.float64) + 0.5) / max(free, 1)
    ordered = values.sort().values
    centroids = ordered[(quantiles * (ordered.numel() - 1)).round().long()]
    if pin_zero:
        centroids = torch.cat([centroids, torch.zeros(1)])
    centroids = centroids.sort().values
    for _ in range(iterations):
        index = assign(values, centroids)
        counts = torch.bincount(index, minlength=k).to(torch.float32)
        sums = torch.bincount(index, weights=values, minlength=k).to(torch.float32)
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if pin_zero:
            updated[centroids == 0] = 0.0
        updated = updated.sort().values
        if torch.equal(updated, centroids):
            break
        centroids = updated
    if pin_zero and not bool((centroids == 0).any()):  # a free centroid collapsed onto 0's slot: pin it back
        centroids[centroids.abs().argmin()] = 0.0
        centroids = centroids.sort().values
    return centroids


def lut_quantize(weight: torch.Tensor, bits: int, mask: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dequantized weight, codebook, indices)`` of ``weight`` on a ``2**bits``-entry k-means codebook.

    With a keep-``mask``, k-means fits the kept values only, one centroid is pinned at 0, and pruned positions get
    its index (their dequantized value is exactly 0).
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"lookup-table quantization supports 1..16 bits, got {bits}")
    weight = weight.detach().to(torch.float32)
    flat = weight.reshape(-1)
    pruned = mask is not None and not bool(mask.all())
    fit = flat[mask.reshape(-1)] if pruned else flat
    codebook = kmeans_1d(fit, 1 << bits, pin_zero=pruned)
    indices = assign(flat, codebook)
    if pruned:
        indices[~mask.reshape(-1)] = int(torch.nonzero(codebook == 0)[0])
    return codebook[indices].reshape(weight.shape), codebook, indices.reshape(weight.shape)
