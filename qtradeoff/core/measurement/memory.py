"""Exact memory accounting of a configuration: weight storage bytes and peak activation bytes at batch 1.

Weight storage of a compressible weight tensor under its :class:`WeightSpec` and pruning mask:

- payload: ``ceil(kept * bits / 8)`` bytes (``kept`` = numel when stored dense);
- quantization parameters (integer precisions only): one fp32 scale (4 bytes) per tensor or per output channel,
  plus, for asymmetric grids only, one zero point per scale stored in ``ceil(bits / 8)`` bytes (the zero point
  lies on the integer grid). Symmetric grids store no zero point: it is 0 by construction;
- sparse index, only where it makes the tensor smaller than dense: a bitmask (``ceil(numel / 8)`` bytes) or CSR
  over ``(out_channels, rest)`` (row pointers and column indices in the narrowest unsigned integer of 1/2/4/8
  bytes that holds them), whichever is smaller.

Everything else in the ``state_dict`` (biases, BatchNorm parameters and statistics, embeddings that stay
uncompressed...) counts at its own dtype; tensors shared between names count once. :func:`pack_weights` writes
the actual bit-packed serialization (:mod:`~qtradeoff.core.compression.bitpack`) whose length the tests
compare with the accounting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from qtradeoff.core import runtime
from qtradeoff.core.compression.algorithms.lut import codebook_bytes, lut_quantize
from qtradeoff.core.compression.bitpack import pack_bits
from qtradeoff.core.compression.compress import clone_structure, holds_torchscript
from qtradeoff.core.compression.plan import Plan
from qtradeoff.core.compression.quantize import int_range, weight_qparams
from qtradeoff.core.config import LayerSettings
from qtradeoff.core.precision import bits_of, is_integer, is_lut, torch_dtype

SCALE_BYTES = 4


def index_width(max_value: int) -> int:
    """Bytes of the narrowest unsigned integer (1, 2, 4, 8) holding ``max_value``."""
    for width in (1, 2, 4, 8):
        if max_value < 1 << (8 * width):
            return width
    raise ValueError(f"index {max_value} does not fit 64 bits")


@dataclass(frozen=True)
class TensorStorage:
    """How one compressible weight tensor is stored and what each part costs, in bytes."""

    name: str  # "<layer>.<weight name>"
    precision: str
    numel: int
    kept: int
    payload_bytes: int
    qparam_bytes: int
    index_format: str  # "dense" | "bitmask" | "csr"
    index_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.payload_bytes + self.qparam_bytes + self.index_bytes


def qparam_bytes(shape: Sequence[int], settings: LayerSettings, out_axis: int = 0) -> int:
    precision = settings.weight.precision
    if not settings.skip and is_lut(precision):  # k-means codebooks: per output channel or one per tensor
        codebooks = shape[out_axis] if settings.weight.granularity == "per_channel" and len(shape) > 1 else 1
        return codebook_bytes(bits_of(precision), codebooks)
    if settings.skip or not is_integer(precision):
        return 0
    scales = shape[out_axis] if settings.weight.granularity == "per_channel" and len(shape) > 1 else 1
    zero_point = 0 if settings.weight.symmetric else math.ceil(bits_of(precision) / 8)
    return scales * (SCALE_BYTES + zero_point)


def sparse_options(numel: int, rows: int, kept: int, bits: int) -> dict[str, tuple[int, int]]:
    """(payload bytes, index bytes) per storage format for ``kept`` of ``numel`` values in ``rows`` rows."""
    cols = numel // max(rows, 1)
    dense = (math.ceil(numel * bits / 8), 0)
    packed_kept = math.ceil(kept * bits / 8)
    options = {"dense": dense}
    if kept < numel:
        options["bitmask"] = (packed_kept, math.ceil(numel / 8))
        options["csr"] = (packed_kept, (rows + 1) * index_width(kept) + kept * index_width(max(cols - 1, 0)))
    return options


def tensor_storage(name: str, weight: torch.Tensor, settings: LayerSettings, mask: torch.Tensor | None,
                   out_axis: int = 0) -> TensorStorage:
    """Storage of one weight tensor; the sparse format is chosen only when it beats dense."""
    precision = "fp32" if settings.skip else settings.weight.precision
    bits = bits_of(precision)
    numel = weight.numel()
    kept = numel if mask is None or settings.skip else int(mask.sum())
    rows = weight.shape[out_axis] if weight.dim() > 1 else 1
    options = sparse_options(numel, rows, kept, bits)
    best = min(options, key=lambda f: (sum(options[f]), f != "dense"))
    payload, index = options[best]
    return TensorStorage(name, precision, numel, kept if best != "dense" else numel, payload,
                         qparam_bytes(tuple(weight.shape), settings, out_axis), best, index)


@dataclass(frozen=True)
class WeightMemory:
    """Weight storage of a configuration, with the per-tensor breakdown."""

    weight_bytes: int  # compressible tensors as stored + everything else at its dtype
    fp32_weight_bytes: int  # the uncompressed model: every state_dict tensor at its dtype
    other_bytes: int  # biases, BatchNorm, uncompressed tensors
    tensors: tuple[TensorStorage, ...]


def unique_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict entries, a tensor shared under several names kept once (first name wins)."""
    seen: set[tuple[int, int, tuple]] = set()
    out = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        if not isinstance(tensor, torch.Tensor):
            continue
        key = (tensor.untyped_storage().data_ptr() if tensor.numel() else id(tensor), tensor.storage_offset(),
               tuple(tensor.shape))
        if key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach()
    return out


def _compressed(state: Mapping[str, torch.Tensor], plan: Plan):
    """``(state key, layer plan, weight name)`` of every compressible weight of ``plan`` held in ``state``."""
    for layer in plan:
        for name in layer.weight_names:
            key = f"{layer.name}.{name}"
            if key in state:
                yield key, layer, name


def weight_memory(state: Mapping[str, torch.Tensor], plan: Plan) -> WeightMemory:
    """Exact weight storage under ``plan``. ``state`` is the base model's :func:`unique_state`; each compressible
    weight is counted at its layer's precision with the plan's masks (computed on the weights compression prunes)."""
    fp32_bytes = sum(t.numel() * t.element_size() for t in state.values())
    tensors = [tensor_storage(key, state[key], layer.settings, layer.masks.get(name), layer.out_axis)
               for key, layer, name in _compressed(state, plan)]
    compressed_keys = {tensor.name for tensor in tensors}
    other = sum(t.numel() * t.element_size() for k, t in state.items() if k not in compressed_keys)
    return WeightMemory(sum(t.total_bytes for t in tensors) + other, fp32_bytes, other, tuple(tensors))


# -- serialization ---------------------------------------------------------------------------------------------

def _values_bytes(values: torch.Tensor, precision: str) -> bytes:
    """Float values in their storage format."""
    stored = values.to(torch_dtype(precision)).contiguous()
    return stored.view(torch.uint8).numpy().tobytes()


def _encode_tensor(weight: torch.Tensor, settings: LayerSettings, mask: torch.Tensor | None,
                   out_axis: int) -> bytes:
    precision = "fp32" if settings.skip else settings.weight.precision
    weight = weight.detach().to(torch.float32)
    if mask is not None and not settings.skip:
        weight = weight * mask
    header = b""
    if is_integer(precision):
        bits = bits_of(precision)
        symmetric = settings.weight.symmetric
        per_channel = settings.weight.granularity == "per_channel" and weight.dim() > 1
        axis = out_axis if per_channel else None
        scale, zero_point = weight_qparams(weight, bits, symmetric, axis, settings.weight.range)
        shape = [1] * weight.dim()
        if per_channel:
            shape[out_axis] = -1
        qmin, qmax = int_range(bits, symmetric)
        codes = torch.clamp(torch.round(weight / scale.reshape(shape)) + zero_point.reshape(shape), qmin, qmax)
        unsigned = (codes - qmin).to(torch.int64).movedim(out_axis, 0).reshape(-1).numpy() if weight.dim() > 1 \
            else (codes - qmin).to(torch.int64).reshape(-1).numpy()
        header = scale.reshape(-1).numpy().astype(np.float32).tobytes()
        if not symmetric:
            header += (zero_point.reshape(-1).numpy() - qmin).astype(np.uint8 if bits <= 8 else np.uint16).tobytes()

        def payload(select: np.ndarray | None) -> bytes:
            chosen = unsigned if select is None else unsigned[select]
            return pack_bits(torch.from_numpy(chosen), bits).numpy().tobytes()
    elif is_lut(precision):  # fp16 codebooks, then bits-wide indices (output-channel major)
        bits = bits_of(precision)
        per_channel = settings.weight.granularity == "per_channel" and weight.dim() > 1
        _, codebooks, indices = lut_quantize(weight, bits, mask, per_channel=per_channel, out_axis=out_axis)
        header = codebooks.to(torch.float16).reshape(-1).view(torch.uint8).numpy().tobytes()
        if not per_channel and weight.dim() > 1:  # the payload runs output-channel major like the mask below
            indices = indices.reshape(weight.shape).movedim(out_axis, 0)
        codes = indices.reshape(-1).numpy()

        def payload(select: np.ndarray | None) -> bytes:
            chosen = codes if select is None else codes[select]
            return pack_bits(torch.from_numpy(chosen), bits).numpy().tobytes()
    else:
        flat = (weight.movedim(out_axis, 0) if weight.dim() > 1 else weight).reshape(-1)

        def payload(select: np.ndarray | None) -> bytes:
            return _values_bytes(flat if select is None else flat[torch.from_numpy(select)], precision)

    candidates = [payload(None)]
    if mask is not None and not settings.skip and not bool(mask.all()):
        rows_mask = (mask.movedim(out_axis, 0) if mask.dim() > 1 else mask.reshape(1, -1)).reshape(
            weight.shape[out_axis] if weight.dim() > 1 else 1, -1).numpy()
        flat_mask = rows_mask.reshape(-1)
        kept_values = payload(flat_mask)
        candidates.append(np.packbits(flat_mask.astype(np.uint8)).tobytes() + kept_values)
        kept = int(flat_mask.sum())
        ptr_type = np.dtype(f"<u{index_width(kept)}")
        col_type = np.dtype(f"<u{index_width(max(rows_mask.shape[1] - 1, 0))}")
        row_ptr = np.concatenate([[0], np.cumsum(rows_mask.sum(axis=1))]).astype(ptr_type)
        cols = np.nonzero(rows_mask)[1].astype(col_type)
        candidates.append(row_ptr.tobytes() + cols.tobytes() + kept_values)
    return header + min(candidates, key=len)


def pack_weights(state: Mapping[str, torch.Tensor], plan: Plan) -> bytes:
    """A real serialization of the compressed weights: bit-packed integer codes, qparams, sparse indices, and
    every other tensor at its dtype. No header or alignment padding beyond per-tensor byte boundaries."""
    chunks, compressed = [], set()
    for key, layer, name in _compressed(state, plan):
        compressed.add(key)
        chunks.append(_encode_tensor(state[key], layer.settings, layer.masks.get(name), layer.out_axis))
    for key, tensor in state.items():
        if key not in compressed:
            chunks.append(tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return b"".join(chunks)


# -- activations -----------------------------------------------------------------------------------------------

def _act_bytes(numel: int, precision: str) -> int:
    return math.ceil(numel * bits_of(precision) / 8)


def _numel(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, list | tuple):
        return sum(_numel(v) for v in value)
    if isinstance(value, Mapping):
        return sum(_numel(v) for v in value.values())
    return 0


@dataclass(frozen=True)
class ActivationProfile:
    """Per-sample activation element counts of every compressible layer, in execution order."""

    sizes: dict[str, tuple[int, int]]  # layer -> (input numel, output numel), per sample

    def peak_bytes(self, settings: Mapping[str, LayerSettings]) -> int:
        """Peak live activation bytes at batch 1 under per-layer ``settings`` (see :func:`activation_profile`)."""
        return peak_activation_bytes(self.sizes, settings)


def activation_profile(module: nn.Module, example: torch.Tensor, layers: Sequence) -> ActivationProfile:
    """Run one sample (batch 1) with forward hooks on the compressible layers of a clone of ``module``.

    Peak activation memory is the largest ``input bytes + output bytes`` of one weight layer's call: the two
    buffers a sequential runtime keeps live at once. A layer's input counts at its activation precision; its
    output at the activation precision of the next weight layer (where the simulation, like int8 kernels,
    quantizes it), float32 after the last. Element-wise ops between layers (ReLU, BatchNorm, pooling) are assumed
    fused or in place, and tensors held for skip connections are not added: this is a lower bound for residual
    networks. TorchScript modules, wrapped or not (no hooks), use the inventory's output shapes, chaining
    consecutive layers.
    """
    names = [info.name for info in layers if getattr(info, "compressible", True)]
    sizes: dict[str, tuple[int, int]] = {}
    if holds_torchscript(module):
        previous = _numel(example[:1])
        for info in layers:
            if info.name in names:
                out = math.prod(info.output_shape)
                sizes[info.name] = (previous, out)
                previous = out
        return ActivationProfile(sizes)

    def hook(name):
        def record(_module, args, output):
            sizes.setdefault(name, (_numel(args), _numel(output)))
        return record

    clone = clone_structure(module)  # the hooks go on a clone: the base may be running in another thread
    for name in names:
        clone.get_submodule(name).register_forward_hook(hook(name))
    with torch.inference_mode(), runtime.running():
        clone(example[:1])
    return ActivationProfile(dict(sizes))  # in the order the layers ran


def peak_activation_bytes(sizes: Mapping[str, tuple[int, int]], settings: Mapping[str, LayerSettings]) -> int:
    """Peak live activation bytes at batch 1 from per-layer (input, output) sizes in execution order
    (see :func:`activation_profile` for the definition). Cheap: sizes do not depend on the config."""
    order = list(sizes)
    precisions = [_activation_precision(settings[name]) for name in order] + ["fp32"]
    peak = 0
    for i, name in enumerate(order):
        numel_in, numel_out = sizes[name]
        peak = max(peak, _act_bytes(numel_in, precisions[i]) + _act_bytes(numel_out, precisions[i + 1]))
    return peak


def _activation_precision(settings: LayerSettings) -> str:
    return "fp32" if settings.skip else settings.activation.precision
