"""Dense bit packing of unsigned integer codes: ``bits`` bits per value (2..16), little-endian bit order, no gaps.

Pure functions on tensors (NumPy's ``packbits`` does the work). The packed layout is what the memory accounting
counts (``ceil(count * bits / 8)`` bytes) and what the ``packed`` export format stores.
"""

from __future__ import annotations

import math

import numpy as np
import torch

MIN_BITS, MAX_BITS = 1, 16


def packed_bytes(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits occupy packed."""
    return math.ceil(count * bits / 8)


def _check_bits(bits: int) -> None:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bit packing supports {MIN_BITS}..{MAX_BITS} bits per value, got {bits}")


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``codes`` (integers in ``[0, 2^bits)``, any shape; read flat) written in ``bits`` bits each: a uint8 tensor
    of :func:`packed_bytes` bytes. Value ``i``'s bit ``j`` is bit ``i * bits + j`` of the stream."""
    _check_bits(bits)
    flat = codes.detach().reshape(-1).to(torch.int64).numpy()
    if flat.size and (flat.min() < 0 or flat.max() >= 1 << bits):
        raise ValueError(f"codes must lie in [0, {(1 << bits) - 1}] to pack in {bits} bits")
    planes = (flat[:, None] >> np.arange(bits, dtype=np.int64)) & 1
    return torch.from_numpy(np.packbits(planes.astype(np.uint8).reshape(-1), bitorder="little"))


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The ``count`` codes :func:`pack_bits` wrote into ``packed``, as a flat int64 tensor."""
    _check_bits(bits)
    stream = packed.detach().reshape(-1).to(torch.uint8).numpy()
    if stream.size < packed_bytes(count, bits):
        raise ValueError(f"{stream.size} packed bytes hold fewer than {count} values of {bits} bits")
    planes = np.unpackbits(stream, count=count * bits, bitorder="little").reshape(count, bits).astype(np.int64)
    return torch.from_numpy((planes << np.arange(bits, dtype=np.int64)).sum(axis=1))
