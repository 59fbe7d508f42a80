"""Hostile files a user could hand the loader, built byte by byte (issue 20): each one small on disk and rated
"safe" by a loader that trusted the allow-list's names instead of what the pickle does with them.

Pickles are written as raw opcodes (see :mod:`pickletools` for their meaning), so no hostile object ever exists in
the test process. Every maker takes a directory and returns the path it wrote.
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path

import torch

PROTO2 = b"\x80\x02"


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)  # BININT


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def torch_zip(path: Path, data_pkl: bytes, members: dict[str, bytes] | None = None) -> Path:
    """A torch.save-style archive whose ``data.pkl`` is ``data_pkl`` (stored uncompressed, as torch writes it)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for name, data in (members or {}).items():
            archive.writestr(f"archive/{name}", data)
    return path


def linear_called_with_args(directory: Path) -> Path:
    """``GLOBAL torch.nn.modules.linear Linear (30000, 30000) REDUCE``: a 3.6 GB constructor call in ~400 bytes."""
    pickle = PROTO2 + _global("torch.nn.modules.linear", "Linear") + _tuple(_int(30000), _int(30000)) + b"R."
    return torch_zip(directory / "linear_call.pt", pickle)


def linear_newobj_with_args(directory: Path) -> Path:
    """The same call through NEWOBJ (``cls.__new__(cls, *args)``) with arguments from the file."""
    pickle = PROTO2 + _global("torch.nn.modules.linear", "Linear") + _tuple(_int(30000), _int(30000)) + b"\x81."
    return torch_zip(directory / "linear_newobj.pt", pickle)


def _module_state(forward: bytes) -> bytes:
    """A ``BUILD`` state for a bare module: the dicts nn.Module.__setstate__ needs and ``forward`` set to the
    object ``forward`` pushes."""
    empty = b"}"
    names = ("_parameters", "_buffers", "_modules", "_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
             "_state_dict_hooks", "_load_state_dict_pre_hooks")
    items = b"".join(b"X" + struct.pack("<I", len(n)) + n.encode() + empty for n in names)
    items += b"X" + struct.pack("<I", 8) + b"training" + b"\x89"
    items += b"X" + struct.pack("<I", 7) + b"forward" + forward
    return b"}(" + items + b"u"  # EMPTY_DICT MARK ... SETITEMS


def partial_forward(directory: Path) -> Path:
    """An ``nn.Identity`` whose ``forward`` is ``functools.partial(nn.Linear, 20000, 20000)``: evaluating the model
    builds a 1.6 GB layer. ``partial`` pickles as ``partial(func)`` then a BUILD with ``(func, args, kwds, dict)``."""
    linear = _global("torch.nn.modules.linear", "Linear")
    partial = (_global("functools", "partial") + b"q\x00" + _tuple(linear + b"q\x01") + b"R"
               + _tuple(b"h\x01", _tuple(_int(20000), _int(20000)), b"}", b"N") + b"b")
    pickle = (PROTO2 + _global("torch.nn.modules.linear", "Identity") + b")\x81" + _module_state(partial)
              + b"b.")
    return torch_zip(directory / "partial_forward.pt", pickle)


def vit_h_metadata(directory: Path) -> Path:
    """A safetensors file with no tensors whose metadata names torchvision's ViT-H/14 (2.5 GB of parameters)."""
    header = json.dumps({"__metadata__": {"architecture": "torchvision.vit_h_14"}}, separators=(",", ":")).encode()
    path = directory / "vit_h.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


def stride0_head(directory: Path) -> Path:
    """A digits_mlp state dict whose head claims 10^6 classes through stride-0 views (a few KB on disk)."""
    from qtradeoff.core.loading import architectures

    state = dict(architectures.build("qtradeoff.digits_mlp").state_dict())
    state["layers.4.weight"] = torch.zeros(1).expand(10**6, 512)
    state["layers.4.bias"] = torch.zeros(1).expand(10**6)
    path = directory / "stride0_head.pt"
    torch.save(state, path)
    return path


def stride0_data(directory: Path) -> Path:
    """A 2 KB data file of stride-0 inputs of shape (1300, 1, 500, 500): 1.3 GB once materialized."""
    path = directory / "stride0_data.pt"
    torch.save({"inputs": torch.zeros(1).expand(1300, 1, 500, 500),
                "labels": torch.zeros(1, dtype=torch.long).expand(1300)}, path)
    return path


def lying_zip_member(directory: Path, inflated: int = 960 << 20) -> Path:
    """A state_dict archive whose one tensor member inflates to ``inflated`` bytes while the central directory
    (and the local header) claim 576 bytes and a CRC of those 576 bytes."""
    path = directory / "lying_zip.pt"
    torch.save({"weight": torch.zeros(144)}, path)  # 144 float32 = 576 bytes in archive/data/0
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    claimed = members["lying_zip/data/0"]
    real = claimed + bytes(inflated - len(claimed))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = compressor.compress(real) + compressor.flush()
    crc, size = zlib.crc32(claimed), len(claimed)
    out = bytearray()
    directory_entries = bytearray()
    for name, data in members.items():
        lying = name == "lying_zip/data/0"
        body = deflated if lying else data
        method = 8 if lying else 0
        entry_crc, entry_size = (crc, size) if lying else (zlib.crc32(data), len(data))
        encoded = name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, entry_crc, len(body), entry_size,
                           len(encoded), 0) + encoded + body
        directory_entries += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, entry_crc,
                                         len(body), entry_size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    start = len(out)
    out += directory_entries
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory_entries), start, 0)
    path.write_bytes(bytes(out))
    return path


def non_utf8_name(directory: Path) -> Path:
    """A valid digits_mlp safetensors file whose name is not UTF-8 (Latin-1 'é' as one byte)."""
    import os

    from safetensors.torch import save_file

    from qtradeoff.core.loading import architectures

    state = {k: v.contiguous() for k, v in architectures.build("qtradeoff.digits_mlp").state_dict().items()}
    raw = os.fsencode(directory) + b"/mod\xe9le.safetensors"
    path = Path(os.fsdecode(raw))
    save_file(state, str(path), metadata={"architecture": "qtradeoff.digits_mlp"})
    return path


def protocol4(directory: Path) -> Path:
    """A legitimate torch.save of a digits_mlp state dict with ``pickle_protocol=4``."""
    from qtradeoff.core.loading import architectures

    path = directory / "protocol4.pt"
    torch.save(architectures.build("qtradeoff.digits_mlp").state_dict(), path, pickle_protocol=4)
    return path


def protocol4_module(directory: Path) -> Path:
    """A legitimate torch.save of a whole digits_mlp module with ``pickle_protocol=4``."""
    from qtradeoff.core.loading import architectures

    path = directory / "protocol4_module.pt"
    torch.save(architectures.build("qtradeoff.digits_mlp"), path, pickle_protocol=4)
    return path


def bytearray_of_a_gigabyte(directory: Path) -> Path:
    """``bytearray(10**9)`` through a name torch's weights_only admits by default: 1 GB of zeroed memory."""
    pickle = PROTO2 + _global("__builtin__", "bytearray") + _tuple(_int(10**9)) + b"R."
    return torch_zip(directory / "bytearray.pt", pickle)


def legacy_tensor_constructor(directory: Path) -> Path:
    """``torch.FloatTensor(30000, 30000)``, also admitted by weights_only's defaults: 3.6 GB."""
    pickle = PROTO2 + _global("torch", "FloatTensor") + _tuple(_int(30000), _int(30000)) + b"R."
    return torch_zip(directory / "float_tensor.pt", pickle)
