"""The ``packed`` format: safetensors holding the compressed weights as stored (integer codes bit-packed densely,
scales, zero points, sparse indices as a bitmask or CSR, whichever the memory accounting chose), with the
configuration, the architecture reference and the simulation's activation grids in the JSON metadata; and
:func:`load_packed`, which rebuilds a float model computing what the simulated model computes.

Everything is read from the simulated model itself (its processed weights, folded biases, activation grids), so
the file and the simulated numbers cannot drift apart; each encoded tensor is decoded and compared with the
simulated weight before the file is written. The file's size is the counted ``weight_bytes`` plus the safetensors
header (BatchNorm folded into a convolution needs only its folded bias, so such files come out smaller).
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

import qtradeoff
from qtradeoff.core.compression.algorithms.smoothquant import InputDivide
from qtradeoff.core.compression.bitpack import pack_bits, unpack_bits
from qtradeoff.core.compression.compress import ActivationGrid, get_submodule, install_activation_casts
from qtradeoff.core.compression.quantize import int_range, weight_qparams
from qtradeoff.core.errors import InputError
from qtradeoff.core.export import RUNNERS_DIR, ExportError, ExportFormat, ExportSource, register
from qtradeoff.core.measurement import memory as memory_mod
from qtradeoff.core.precision import bits_of, is_integer, is_lut, torch_dtype

SCHEMA = "qtradeoff.packed/1"
META_KEY = "qtradeoff.packed"  # the JSON header, zlib-compressed and base64-encoded (see _encode_header)
HEADER_SLACK_BYTES = 4096  # the bound: counted bytes + 1 % + 4 KiB


def max_bytes(weight_bytes: int) -> int:
    return math.floor(weight_bytes * 1.01) + HEADER_SLACK_BYTES


# -- pure encoding of one tensor ---------------------------------------------------------------------------------

def _rows(tensor: torch.Tensor, out_axis: int) -> torch.Tensor:
    """``tensor`` with its output axis first, flattened row-major (the order codes and indices are stored in)."""
    return (tensor.movedim(out_axis, 0) if tensor.dim() > 1 else tensor).reshape(-1)


def _unrows(flat: torch.Tensor, shape: tuple[int, ...], out_axis: int) -> torch.Tensor:
    if len(shape) <= 1:
        return flat.reshape(shape)
    moved = [shape[out_axis], *[s for i, s in enumerate(shape) if i != out_axis]]
    return flat.reshape(moved).movedim(0, out_axis)


def _uint_bytes(values: np.ndarray, width: int) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values.astype(f"<u{width}")).view(np.uint8).copy())


def _from_uint_bytes(raw: torch.Tensor, width: int) -> np.ndarray:
    return raw.numpy().view(f"<u{width}").astype(np.int64)


def encode_tensor(processed: torch.Tensor, source: torch.Tensor, precision: str, *, symmetric: bool,
                  per_channel: bool, out_axis: int, mask: torch.Tensor | None, index: str,
                  weight_range: str = "minmax") -> tuple[dict, dict[str, torch.Tensor]]:
    """``(entry, tensors)`` storing ``processed`` (the simulated weight) at ``precision`` with sparse ``index``
    (``dense``/``bitmask``/``csr``). ``source`` is the tensor the simulation quantized before pruning (its qparams
    are recomputed from ``source * mask`` exactly as the simulation does, by the ``weight_range`` method)."""
    shape = tuple(processed.shape)
    entry = {"precision": precision, "shape": list(shape), "out_axis": out_axis, "index": index}
    tensors: dict[str, torch.Tensor] = {}
    flat_mask = None if index == "dense" else _rows(mask.bool(), out_axis)
    if is_integer(precision):
        bits = bits_of(precision)
        axis = out_axis if per_channel and processed.dim() > 1 else None
        masked = source.float() * mask if mask is not None else source.float()
        scale, zero_point = weight_qparams(masked, bits, symmetric, axis, weight_range)
        view = [1] * processed.dim()
        if axis is not None:
            view[axis] = -1
        qmin, qmax = int_range(bits, symmetric)
        scale_b, zero_b = scale.reshape(view), zero_point.reshape(view).to(torch.int64)
        codes = torch.clamp(torch.round(processed / scale_b).to(torch.int64) + zero_b, qmin, qmax)
        unsigned = _rows(codes - qmin, out_axis)
        kept = unsigned if flat_mask is None else unsigned[flat_mask]
        tensors["codes"] = pack_bits(kept, bits)
        tensors["scale"] = scale.reshape(-1).to(torch.float32).contiguous()
        if not symmetric:
            tensors["zero_point"] = _uint_bytes(zero_point.reshape(-1).numpy() - qmin, math.ceil(bits / 8))
        entry.update(encoding="int", bits=bits, symmetric=symmetric, per_channel=axis is not None, qmin=qmin)
    elif is_lut(precision):
        # the simulated weight holds at most 2**bits fp16 values per codebook (see algorithms/lut.py): store each
        # codebook (its distinct values, padded) and every weight's index into it
        bits = bits_of(precision)
        per_channel = per_channel and processed.dim() > 1
        grid = _rows(processed, out_axis).reshape(shape[out_axis] if per_channel else 1, -1)
        codebooks, codes = [], []
        for row in grid:
            distinct = torch.unique(row)
            if distinct.numel() > 1 << bits:
                raise ExportError(f"a {precision} weight has {distinct.numel()} distinct values (a bug: please "
                                  "report it)")
            codebooks.append(torch.cat([distinct, distinct[-1:].expand((1 << bits) - distinct.numel())]))
            codes.append(torch.searchsorted(distinct, row))
        indices = torch.cat(codes)
        kept = indices if flat_mask is None else indices[flat_mask]
        tensors["codes"] = pack_bits(kept, bits)
        tensors["codebook"] = torch.cat(codebooks).to(torch.float16).contiguous()
        entry.update(encoding="lut", bits=bits, per_channel=per_channel)
    else:
        values = _rows(processed, out_axis)
        values = values if flat_mask is None else values[flat_mask]
        tensors["values"] = values.to(torch_dtype(precision)).contiguous()
        entry.update(encoding="float")
    if flat_mask is not None:
        entry["kept"] = int(flat_mask.sum())
        if index == "bitmask":
            tensors["mask"] = pack_bits(flat_mask.to(torch.int64), 1)
        else:
            rows = shape[out_axis] if len(shape) > 1 else 1
            grid = flat_mask.reshape(rows, -1).numpy()
            ptr_width = memory_mod.index_width(entry["kept"])
            col_width = memory_mod.index_width(max(grid.shape[1] - 1, 0))
            tensors["row_ptr"] = _uint_bytes(np.concatenate([[0], np.cumsum(grid.sum(axis=1))]), ptr_width)
            tensors["cols"] = _uint_bytes(np.nonzero(grid)[1], col_width)
            entry.update(ptr_width=ptr_width, col_width=col_width)
    return entry, tensors


def decode_tensor(entry: dict, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The float32 weight :func:`encode_tensor` stored (pruned positions are 0)."""
    shape, out_axis, index = tuple(entry["shape"]), int(entry["out_axis"]), entry["index"]
    numel = math.prod(shape)
    rows = shape[out_axis] if len(shape) > 1 else 1
    if index == "dense":
        flat_mask = None
    elif index == "bitmask":
        flat_mask = unpack_bits(tensors["mask"], 1, numel).bool()
    else:
        row_ptr = _from_uint_bytes(tensors["row_ptr"], entry["ptr_width"])
        cols = _from_uint_bytes(tensors["cols"], entry["col_width"])
        row_of = np.repeat(np.arange(rows), np.diff(row_ptr))
        grid = np.zeros((rows, numel // max(rows, 1)), dtype=bool)
        grid[row_of, cols] = True
        flat_mask = torch.from_numpy(grid.reshape(-1))
    count = numel if flat_mask is None else int(entry["kept"])
    if entry["encoding"] == "int":
        bits, qmin = int(entry["bits"]), int(entry["qmin"])
        codes = unpack_bits(tensors["codes"], bits, count) + qmin
        scale = tensors["scale"].to(torch.float32)
        channels = rows if entry["per_channel"] else 1
        if "zero_point" in tensors:
            zero = torch.from_numpy(_from_uint_bytes(tensors["zero_point"], math.ceil(bits / 8)) + qmin)
        else:
            zero = torch.zeros(channels, dtype=torch.int64)
        per_value = numel // channels
        if flat_mask is None:
            channel = torch.arange(numel) // per_value
        else:
            channel = torch.nonzero(flat_mask).reshape(-1) // per_value
        values = (codes - zero[channel]).to(torch.float32) * scale[channel]  # as fake_quantize dequantizes
    elif entry["encoding"] == "lut":
        bits = int(entry["bits"])
        codes = unpack_bits(tensors["codes"], bits, count)
        channels = rows if entry["per_channel"] else 1
        per_value = numel // channels
        position = torch.arange(numel) if flat_mask is None else torch.nonzero(flat_mask).reshape(-1)
        codebook = tensors["codebook"].to(torch.float32)
        values = codebook[(position // per_value) * (1 << bits) + codes]
    else:
        values = tensors["values"].to(torch.float32)
    if flat_mask is not None:
        full = torch.zeros(numel, dtype=torch.float32)
        full[flat_mask] = values
        values = full
    return _unrows(values, shape, out_axis).contiguous()


def join_plain(plain: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list]:
    """Uncompressed tensors joined into one flat tensor per dtype (``plain:<dtype>``), with ``[key, dtype, shape,
    offset]`` rows to split them again: safetensors spends ~85 header bytes per tensor, and a model with unfolded
    BatchNorms has five small tensors per layer."""
    groups: dict[str, list[torch.Tensor]] = {}
    index, offsets = [], {}
    for key, value in plain.items():
        dtype = str(value.dtype).removeprefix("torch.")
        offset = offsets.get(dtype, 0)
        index.append([key, dtype, list(value.shape), offset])
        groups.setdefault(dtype, []).append(value.detach().reshape(-1))
        offsets[dtype] = offset + value.numel()
    return {f"plain:{dtype}": torch.cat(parts).contiguous() for dtype, parts in groups.items()}, index


def split_plain(tensors: dict[str, torch.Tensor], index: list) -> dict[str, torch.Tensor]:
    out = {}
    for key, dtype, shape, offset in index:
        count = math.prod(shape)
        out[key] = tensors[f"plain:{dtype}"][offset:offset + count].reshape(shape).clone()
    return out


def _encode_header(header: dict) -> str:
    """The header as stored: compact JSON, zlib-compressed, base64. Plain JSON was ~2 KB on digits_cnn (40 % of the
    size bound's 4 KiB allowance beside safetensors' own per-tensor entries); compressed it is ~0.8 KB."""
    return base64.b64encode(zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)).decode()


def _decode_header(text: str) -> dict:
    return json.loads(zlib.decompress(base64.b64decode(text)).decode())


# -- writing -----------------------------------------------------------------------------------------------------

def _architecture(source: ExportSource) -> dict:
    loaded = source.loaded
    name = getattr(loaded, "architecture", None)
    from qtradeoff.core.loading import architectures

    if not name or not architectures.is_known(name):
        raise ExportError(f"{loaded.path}: the packed format needs an architecture qtradeoff can rebuild "
                          "(a registry name such as torchvision.resnet18); this model has none, export it as "
                          "torch-int8 instead")
    return {"name": name, "num_classes": loaded.num_classes, "model_file": Path(str(loaded.path)).name,
            "sha256": loaded.sha256, "format": loaded.format}


def write(source: ExportSource, path: Path) -> str:
    from safetensors.torch import save_file

    compressor, plan = source.engine.compressor, source.plan
    simulated = source.simulated()
    last = plan.layers[-1].name if len(plan) else None
    state = memory_mod.unique_state(simulated)
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, dict] = {}
    layers: dict[str, dict] = {}
    dropped: set[str] = set()
    storage = {t.name: t for t in memory_mod.weight_memory(memory_mod.unique_state(source.loaded.module),
                                                           plan).tensors}
    for layer in plan:
        module = get_submodule(simulated, layer.name)
        meta: dict = {"last": layer.name == last}
        grids = compressor.activation_grids(layer, plan)  # CLE / SmoothQuant calibrate their own ranges
        if grids:
            meta["activation"] = {where: grid.to_dict() for where, grid in grids.items()}
        if layer.rewrites:
            settings = layer.settings
            for name in layer.weight_names:
                key = f"{layer.name}.{name}"
                processed = getattr(module, name).detach().to(torch.float32)
                counted = storage.get(key)
                entry, parts = encode_tensor(
                    processed, compressor.float_weight(layer.name, name, layer.transform),
                    "fp32" if settings.skip else settings.weight.precision,
                    symmetric=settings.weight.symmetric, per_channel=settings.weight.granularity == "per_channel",
                    out_axis=layer.out_axis, mask=layer.masks.get(name),
                    index=counted.index_format if counted is not None else "dense",
                    weight_range=settings.weight.range)
                if not torch.equal(decode_tensor(entry, parts), processed):
                    raise ExportError(f"packing {key} does not reproduce the simulated weight (a bug: please "
                                      "report it)")
                entries[key] = entry
                tensors.update({f"{key}:{part}": value for part, value in parts.items()})
                dropped.add(key)
            if layer.folded:
                norm = compressor.folded_norm(layer.name)
                bias = getattr(get_submodule(simulated, norm).forward, "bias", None)
                meta["folded_norm"] = norm
                if bias is not None:
                    tensors[f"{norm}.folded_bias"] = bias.detach().contiguous()
                dropped.update(key for key in state if key.startswith(f"{norm}."))
            meta["bias"] = getattr(module, "bias", None) is not None
            divisor = compressor.smoothquant_divisor(layer)
            if divisor is not None:  # SmoothQuant: the loader divides the layer's input by it
                tensors[f"{layer.name}.smoothquant_divisor"] = divisor.detach().to(torch.float32).contiguous()
        layers[layer.name] = meta
    plain = {key: value for key, value in state.items() if key not in dropped}
    plain.update({key: tensors.pop(key) for key in list(tensors)
                  if key.endswith((".folded_bias", ".smoothquant_divisor"))})
    joined, plain_index = join_plain(plain)
    tensors.update(joined)
    header = {"schema": SCHEMA, "qtradeoff": qtradeoff.__version__, "torch": torch.__version__,
              "architecture": _architecture(source), "config": source.config.to_dict(), "layers": layers,
              "tensors": entries, "plain": plain_index}
    save_file(tensors, str(path), metadata={META_KEY: _encode_header(header)})
    return ""


# -- loading -----------------------------------------------------------------------------------------------------

class FoldedBias(nn.Module):
    """Stands in for a BatchNorm folded into the convolution before it: adds the folded bias where the simulation
    kept it outside the convolution, else passes through."""

    def __init__(self, bias: torch.Tensor | None):
        super().__init__()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.bias is None else x + self.bias


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def _assign(root: nn.Module, key: str, value: torch.Tensor) -> None:
    owner_name, _, attr = key.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    if attr in owner._buffers:
        owner._buffers[attr] = value
    else:
        setattr(owner, attr, nn.Parameter(value, requires_grad=False))


def read_header(path: str | Path) -> dict:
    """The JSON header of a packed file; InputError naming the file when it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        header = _decode_header(metadata[META_KEY])
    except (OSError, KeyError, ValueError, Exception) as error:  # safetensors raises its own error types
        raise InputError(f"{path} is not a qtradeoff packed file ({type(error).__name__}); export one with "
                         "qtradeoff apply --format packed") from None
    if header.get("schema") != SCHEMA:
        raise InputError(f"{path} has schema {header.get('schema')!r}, not {SCHEMA}; re-export it")
    return header


def load_packed(path: str | Path, module: nn.Module | None = None) -> nn.Module:
    """Rebuild the compressed model from a packed file as a float model (eval mode) whose outputs equal the
    simulated model's: dequantized weights, folded BatchNorms, the simulation's activation grids as hooks.
    ``module``: a freshly built model of the file's architecture, for architectures outside the registry."""
    from safetensors.torch import load_file

    from qtradeoff.core.loading import architectures

    header = read_header(path)
    tensors = load_file(str(path))
    if module is None:
        arch = header["architecture"]
        kwargs = {"num_classes": arch["num_classes"]} if arch.get("num_classes") else {}
        module = architectures.build(arch["name"], **kwargs)
    module = module.eval()
    expected = set(module.state_dict())
    state = {key: decode_tensor(entry, {part.split(":", 1)[1]: value for part, value in tensors.items()
                                        if part.split(":", 1)[0] == key})
             for key, entry in header["tensors"].items()}
    plain = split_plain(tensors, header["plain"])
    folded_biases = {key: plain.pop(key) for key in list(plain) if key.endswith(".folded_bias")}
    divisors = {key: plain.pop(key) for key in list(plain) if key.endswith(".smoothquant_divisor")}
    state.update(plain)
    for name, meta in header["layers"].items():
        if "folded_norm" in meta:
            norm = meta["folded_norm"]
            expected -= {key for key in expected if key.startswith(f"{norm}.")}
            _set_submodule(module, norm, FoldedBias(folded_biases.get(f"{norm}.folded_bias")))
            if not meta.get("bias", True):
                get_submodule(module, name).bias = None
                expected.discard(f"{name}.bias")
    missing = expected - set(state)
    tied = {key for key in missing if _is_tied(module, key, state)}
    if missing - tied:
        raise InputError(f"{path} lacks {len(missing - tied)} tensor(s) of {header['architecture']['name']} "
                         f"(e.g. {sorted(missing - tied)[0]}); the file does not match its architecture")
    with torch.no_grad():
        for key, value in state.items():
            _assign(module, key, value)
    for name, meta in header["layers"].items():
        divisor = divisors.get(f"{name}.smoothquant_divisor")
        if divisor is not None:  # before the activation cast, as in the simulation
            linear = isinstance(get_submodule(module, name), nn.Linear)
            get_submodule(module, name).register_forward_pre_hook(InputDivide(divisor, linear))
        grids = {where: ActivationGrid.from_dict(grid) for where, grid in meta.get("activation", {}).items()}
        if grids:
            install_activation_casts(get_submodule(module, name), grids, last=meta["last"])
    return module


def _is_tied(module: nn.Module, key: str, state: dict) -> bool:
    """Whether ``key`` shares its tensor with another key the file holds (stored once)."""
    target = module.state_dict(keep_vars=True)[key]
    return any(other in state and module.state_dict(keep_vars=True).get(other) is target
               for other in module.state_dict(keep_vars=True) if other != key)


register(ExportFormat("packed", ".safetensors", write, RUNNERS_DIR / "run_packed.py", "exact",
                      "safetensors with bit-packed weights, qparams and sparse indices; qtradeoff's load_packed "
                      "rebuilds the model", standalone=False, max_bytes=max_bytes))
