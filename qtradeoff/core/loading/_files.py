"""Checks every user file passes before anything parses it: existence, kind, size, archive bombs and members that
disagree with their directory, content sniffing, and what a pickle would call and allocate (from its opcodes).

Shared by the model loader and the data loader.  Nothing here unpickles or
imports code; formats are recognised from the first bytes and zip member names,
never from the file extension.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickletools
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from qtradeoff.core.errors import InputError

GIB = 1 << 30
MIB = 1 << 20
# An archive whose members claim to decompress to this many times the archive's size is treated as a zip bomb.
# torch.save archives are stored uncompressed (ratio ~1); savez_compressed reaches ~10 on real data.
MAX_ZIP_RATIO = 200
ZIP_RATIO_FLOOR = 64 * MIB  # small archives may compress well; only flag ratios once the total is substantial

_NOT_MODELS = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras?)"),
    (b"GGUF", "a GGUF file (llama.cpp)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x1f\x8b", "a gzip file"),
    (b"BZh", "a bzip2 file"),
    (b"\xfd7zXZ\x00", "an xz file"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-zip archive"),
)


class FileCheckError(InputError):
    """A file failed a pre-parse check; the message is one sentence naming the file and what to do."""


def memory_budget() -> int:
    """Default largest file we agree to load: half the available RAM, at most 4 GiB."""
    available = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            available = 8 * GIB
    return int(min(available // 2, 4 * GIB))


def human_bytes(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} bytes"  # unreachable


def check_regular_file(path: Path, budget: int, what: str = "model") -> int:
    """Stat the path and refuse directories, special files, missing files, empty files and files over budget.

    Returns the file size. Dangling symlinks report as missing; FIFOs and devices as not regular files
    (opening a FIFO would block the application).
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileCheckError(f"{path} does not exist (or is a broken link); choose an existing {what} file.") from None
    except OSError as error:
        raise FileCheckError(f"{path} cannot be accessed ({error.strerror}); check its permissions.") from None
    if stat.S_ISDIR(info.st_mode):
        raise FileCheckError(f"{path} is a directory, not a {what} file; choose the file inside it.")
    if not stat.S_ISREG(info.st_mode):
        raise FileCheckError(f"{path} is not a regular file (a pipe, socket or device); choose a saved {what} file.")
    if info.st_size == 0:
        raise FileCheckError(f"{path} is empty (0 bytes); the save was probably interrupted, save the {what} again.")
    if info.st_size > budget:
        raise FileCheckError(
            f"{path} is {human_bytes(info.st_size)}, more than the memory budget of {human_bytes(budget)}; "
            "raise the budget or use a smaller file."
        )
    return info.st_size


def check_claimed(path: Path, what: str, claimed: int, shape: tuple[int, ...] | None, budget: int, *,
                  name: str | None = None, ratio: bool = True) -> None:
    """Refuse ``claimed`` bytes (what loading will allocate, estimated before allocating) above the budget, or
    (``ratio``) far more than the file holds. The file's size does not bound a tensor's: one saved as a broadcast
    view (stride 0) keeps one element on disk whatever its shape, and loading it into a model (or splitting data)
    materializes every element. Trained weights and real data are never such views; tied weights share storage
    at most a few times, far below the zip-bomb ratio."""
    largest = "" if shape is None else (
        f" (the largest, {name!r}, is {'×'.join(map(str, shape))})" if name else
        f" (the largest is {'×'.join(map(str, shape))})")
    if claimed > budget:
        raise FileCheckError(
            f"{path}: {what} add up to {human_bytes(claimed)}{largest}, "
            f"more than the memory budget of {human_bytes(budget)}; refusing to load it."
        )
    if not ratio:
        return
    try:
        stored = path.stat().st_size
    except OSError:
        return
    if claimed > ZIP_RATIO_FLOOR and claimed > MAX_ZIP_RATIO * stored:
        raise FileCheckError(
            f"{path}: {what} claim {human_bytes(claimed)}{largest} "
            f"from {human_bytes(stored)} on disk, so they are broadcast views, not trained weights or data; "
            "refusing to load it."
        )


def open_binary(path: Path):
    """Open for reading, turning permission and I/O errors into one sentence."""
    try:
        return open(path, "rb")  # noqa: SIM115 - returned to the caller
    except OSError as error:
        raise FileCheckError(f"{path} cannot be read ({error.strerror}); check its permissions.") from None


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """sha256 of the file, streamed in chunks so that large files never sit in memory twice."""
    digest = hashlib.sha256()
    with open_binary(path) as handle:
        try:
            while chunk := handle.read(chunk_size):
                digest.update(chunk)
        except OSError as error:
            raise FileCheckError(f"{path} cannot be read ({error.strerror}); check the disk and the file.") from None
    return digest.hexdigest()


SAMPLE_MANIFEST = Path(__file__).resolve().parents[3] / "sample_models" / "manifest.json"


def is_bundled_sample(path: str | Path) -> bool:
    """Whether ``path`` holds exactly the bytes of a bundled sample model (its sha256 is in the samples' manifest).
    Only a file named like a sample is hashed, so asking about a large user file costs nothing."""
    try:
        entries = json.loads(SAMPLE_MANIFEST.read_text())["models"].values()
        digests = {entry.get("sha256") for entry in entries if entry.get("file") == Path(path).name}
        return bool(digests) and sha256_file(Path(path)) in digests
    except (OSError, ValueError, KeyError, AttributeError, FileCheckError):
        return False


@contextlib.contextmanager
def utf8_name(path: Path):
    """A name for ``path`` that readers taking only UTF-8 paths (safetensors' Rust core) accept: the path itself,
    or, for a name the OS gives as bytes that are not UTF-8, ``/proc/self/fd/N`` of a descriptor held open meanwhile
    (Linux); elsewhere such a name is refused in one sentence."""
    try:
        os.fsdecode(os.fsencode(path)).encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        yield str(path)
        return
    proxy_dir = Path("/proc/self/fd")
    if not proxy_dir.is_dir():
        raise FileCheckError(f"{path} has a name that is not valid UTF-8, which this reader cannot open on this "
                             "system; rename the file.")
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        yield str(proxy_dir / str(descriptor))
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class Sniff:
    """What the bytes of a file say it is.

    ``kind``: ``safetensors``, ``torch_zip`` (torch.save archive), ``torchscript``, ``export`` (torch.export .pt2),
    ``pickle`` (legacy torch.save or plain pickle), ``onnx`` (protobuf ModelProto, by its ``.onnx`` suffix),
    ``npz``, or ``other`` with ``description`` of a known non-model
    type (image, JSON, …). ``members`` are the zip member names for archives.
    """

    kind: str
    description: str = ""
    members: tuple[str, ...] = ()
    safetensors_metadata: dict | None = None


def sniff(path: Path, size: int, budget: int) -> Sniff:
    """Identify the file's format from its content, checking archive member sizes before anything reads them."""
    with open_binary(path) as handle:
        head = handle.read(64)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _sniff_zip(path, size, budget)
    if len(head) >= 9:
        safetensors = _sniff_safetensors(path, head, size)
        if safetensors is not None:
            return safetensors
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return Sniff("pickle")
    if path.suffix.lower() == ".onnx":  # protobuf has no magic number; onnx_io validates the content
        return Sniff("onnx")
    for magic, description in _NOT_MODELS:
        if head.startswith(magic):
            return Sniff("other", description)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniff("other", "a WebP image")
    if head[:2] == b"BM":
        return Sniff("other", "a BMP image")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:1] in (b"{", b"["):
        return Sniff("other", "a JSON file" if _looks_like_json(path, size) else "a text file")
    if _is_text(head):
        return Sniff("other", "a text file")
    return Sniff("unknown")


def _looks_like_json(path: Path, size: int) -> bool:
    if size > 64 * MIB:
        return True  # do not parse huge text files just to name them
    try:
        json.loads(path.read_bytes())
    except (ValueError, OSError):
        return False
    return True


def _is_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\r\n" for ch in decoded)


def _sniff_safetensors(path: Path, head: bytes, size: int) -> Sniff | None:
    (header_len,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or header_len > min(size - 8, 100 * MIB):
        return None
    with open_binary(path) as handle:
        handle.seek(8)
        raw = handle.read(header_len)
    try:
        header = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(header, dict):
        return None
    data_bytes = size - 8 - header_len
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise FileCheckError(f"{path} has a damaged safetensors header; save the file again.")
        if offsets[1] > data_bytes:
            raise FileCheckError(f"{path} is a truncated safetensors file (tensor {key!r} runs past its end); "
                                 "copy or save it again.")
    metadata = header.get("__metadata__")
    return Sniff("safetensors", safetensors_metadata=metadata if isinstance(metadata, dict) else None)


def _sniff_zip(path: Path, size: int, budget: int) -> Sniff:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise FileCheckError(f"{path} is a truncated or damaged archive; copy or save it again.") from None
    total = sum(info.file_size for info in infos)
    if total > budget:
        raise FileCheckError(
            f"{path} unpacks to {human_bytes(total)}, more than the memory budget of {human_bytes(budget)}; "
            "raise the budget or use a smaller file."
        )
    if total > ZIP_RATIO_FLOOR and total > MAX_ZIP_RATIO * size:
        raise FileCheckError(
            f"{path} claims to unpack to {human_bytes(total)} from {human_bytes(size)} (a zip bomb?); "
            "refusing to read it."
        )
    for info in infos:
        if info.file_size > ZIP_RATIO_FLOOR and info.compress_size * MAX_ZIP_RATIO < info.file_size:
            raise FileCheckError(
                f"{path} has a member {info.filename!r} that unpacks to {human_bytes(info.file_size)} from "
                f"{human_bytes(info.compress_size)} (a zip bomb?); refusing to read it."
            )
    _verify_members(path, infos)
    names = tuple(info.filename for info in infos)
    # torch archives put everything under one top-level folder whose name is arbitrary.
    relative = {name.split("/", 1)[1] if "/" in name else name for name in names}
    if "archive_format" in relative or "models/model.json" in relative or any(
        name.startswith("models/") and name.endswith(".json") for name in relative
    ):
        return Sniff("export", members=names)
    if "constants.pkl" in relative or any(name.startswith("code/") for name in relative):
        return Sniff("torchscript", members=names)
    if "data.pkl" in relative:
        return Sniff("torch_zip", members=names)
    if names and all(name.endswith(".npy") for name in names):
        return Sniff("npz", members=names)
    return Sniff("other", "a zip archive without a PyTorch model in it", members=names)


_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # signature, version, flags, method, time, date, crc, sizes, lengths
_ZIP_CHUNK = 1 << 20


def _verify_members(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Inflate every member (streaming, never more than its stated size plus one chunk) and refuse one whose
    local header, inflated size or CRC disagrees with the central directory: readers stop at the stated size, so
    a member that inflates to far more (or to other bytes) would otherwise pass for the small one it claims."""
    damaged = f"{path} is a damaged archive (member {{name!r}} {{problem}}); copy or save it again."
    with open_binary(path) as handle:
        for info in infos:
            name = info.filename
            handle.seek(info.header_offset)
            fixed = handle.read(_LOCAL_HEADER.size)
            if len(fixed) < _LOCAL_HEADER.size:
                raise FileCheckError(damaged.format(name=name, problem="is cut off"))
            (signature, _version, flags, method, _time, _date, crc, compressed, size, name_length,
             extra_length) = _LOCAL_HEADER.unpack(fixed)
            if signature != 0x04034B50:
                raise FileCheckError(damaged.format(name=name, problem="has no local header"))
            if flags & 0x1:
                raise FileCheckError(f"{path} holds an encrypted member ({name!r}); save it without encryption.")
            if method != info.compress_type:
                raise FileCheckError(damaged.format(name=name, problem="names two compression methods"))
            # Sizes in the local header are left as zero (data descriptor) or 0xFFFFFFFF (zip64) by some writers.
            if not flags & 0x8 and 0xFFFFFFFF not in (compressed, size) and (
                    (crc, compressed, size) != (info.CRC, info.compress_size, info.file_size)):
                raise FileCheckError(damaged.format(name=name, problem="has a local header that disagrees with "
                                                                       "the archive's directory"))
            handle.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
            if method == zipfile.ZIP_STORED:
                inflate = None
            elif method == zipfile.ZIP_DEFLATED:
                inflate = zlib.decompressobj(-15)
            else:
                raise FileCheckError(f"{path}: member {name!r} is compressed with method {method}; "
                                     "save the archive stored or deflated (zip's default).")
            left, inflated, running_crc = info.compress_size, 0, 0
            while left > 0 or (inflate is not None and inflate.unconsumed_tail):
                if inflate is not None and inflate.unconsumed_tail:
                    chunk, raw = inflate.unconsumed_tail, None
                else:
                    raw = handle.read(min(_ZIP_CHUNK, left))
                    if not raw:
                        raise FileCheckError(damaged.format(name=name, problem="is cut off"))
                    left -= len(raw)
                    chunk = raw
                data = chunk if inflate is None else inflate.decompress(chunk, _ZIP_CHUNK)
                inflated += len(data)
                if inflated > info.file_size:
                    raise FileCheckError(damaged.format(
                        name=name, problem=f"inflates to more than the {human_bytes(info.file_size)} its "
                                           "directory entry states"))
                running_crc = zlib.crc32(data, running_crc)
            if inflated != info.file_size:
                raise FileCheckError(damaged.format(
                    name=name, problem=f"holds {human_bytes(inflated)}, not the {human_bytes(info.file_size)} its "
                                       "directory entry states"))
            if running_crc != info.CRC:
                raise FileCheckError(damaged.format(name=name, problem="fails its CRC check"))


# Bytes per element of the storage classes torch.save names (``torch.FloatStorage`` …); an unknown one counts as 8,
# the largest real dtype short of complex128, so an estimate never comes out low by much.
_STORAGE_ELEMENT_BYTES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "QInt8Storage": 1, "QUInt8Storage": 1,
    "QInt32Storage": 4, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1, "UntypedStorage": 1,
}
# torch's functions that rebuild a tensor as (storage, storage_offset, size, stride, …): what a file's tensors
# claim once materialized is their size, whatever their stride says.
_TENSOR_REBUILDS = frozenset({"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
                              "torch._utils._rebuild_qtensor"})
_MARK = object()


class _Global(str):
    """A global (``module.name``) on the scanned stack."""


class _Storage(int):
    """A storage loaded by persistent id, on the scanned stack: its value is its element size in bytes."""


@dataclass(frozen=True)
class PickleScan:
    """What a pickle would do, read from its opcodes without running them (see :func:`scan_pickle`).

    ``globals``: every ``module.name`` it imports. ``calls``: the globals it *calls* with arguments from the file
    (``REDUCE``, ``INST``/``OBJ``, ``NEWOBJ``/``NEWOBJ_EX`` with non-empty arguments), each with the opcode;
    a class reconstructed through its state alone (``NEWOBJ`` with no arguments, then ``BUILD``) is not a call.
    ``storage_bytes``: what the storages it loads will allocate. ``tensor_bytes``: every tensor it rebuilds at
    its full shape (a stride-0 view counted as if materialized, as a model's weights or a data split will be),
    ``largest`` the shape of the biggest. ``protocol``: the highest pickle protocol declared.
    """

    globals: tuple[str, ...] = ()
    calls: tuple[tuple[str, str], ...] = ()
    storage_bytes: int = 0
    tensor_bytes: int = 0
    largest: tuple[int, ...] | None = None
    protocol: int = 0
    complete: bool = True  # False when the opcodes could not be read to the end (damaged, or not a pickle)
    sized_calls: tuple[str, ...] = ()  # globals called with an integer among their arguments

    def allocating_calls(self) -> list[str]:
        """Calls that would allocate a size the file chose, through names torch's ``weights_only`` admits: the
        legacy tensor constructors (``torch.FloatTensor(30000, 30000)``) and ``bytearray(10**9)``. torch.save
        never writes them (it rebuilds tensors from storages, and a bytearray from its bytes)."""
        return sorted({name for name in self.sized_calls
                       if name == "builtins.bytearray" or (name.startswith("torch.") and name.endswith("Tensor"))})


def _canonical(module: str, name: str) -> _Global:
    module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
    return _Global(f"{module}.{name}")


def scan_pickle(stream, max_pickles: int = 1) -> PickleScan:
    """Walk the opcodes of up to ``max_pickles`` pickles at the stream's position, simulating the stack with
    plain values (numbers, strings, tuples of them, globals), so that what each call receives is known without
    calling anything. Stops at the first opcode it cannot read."""
    globals_: set[str] = set()
    calls: list[tuple[str, str]] = []
    sized: set[str] = set()
    storage_keys: dict[object, int] = {}
    tensor_bytes, largest, largest_numel, protocol, complete = 0, None, -1, 0, True
    for _ in range(max_pickles):
        start = stream.tell()
        if not stream.read(1):
            break
        stream.seek(start)
        stack: list = []
        memo: dict = {}
        try:
            for opcode, arg, _pos in pickletools.genops(stream):
                name = opcode.name
                if name == "PROTO":
                    protocol = max(protocol, int(arg))
                    continue
                if name in ("GLOBAL", "INST"):
                    module, _, attr = str(arg).partition(" ")
                    found = _canonical(module, attr)
                    globals_.add(found)
                    if name == "GLOBAL":
                        stack.append(found)
                        continue
                    _pop_to_mark(stack)
                    calls.append((found, name))
                    stack.append(None)
                    continue
                if name == "STACK_GLOBAL":
                    attr, module = stack.pop(), stack.pop()
                    found = _canonical(str(module), str(attr))
                    globals_.add(found)
                    stack.append(found)
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = stack[-1]
                elif name == "MEMOIZE":
                    memo[len(memo)] = stack[-1]
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    stack.append(memo.get(int(arg)))
                elif name == "DUP":
                    stack.append(stack[-1])
                elif name == "POP":
                    stack.pop()
                elif name == "MARK":
                    stack.append(_MARK)
                elif name == "EMPTY_TUPLE":
                    stack.append(())
                elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                    count = int(name[-1])
                    items = tuple(stack[-count:])
                    del stack[-count:]
                    stack.append(items)
                elif name == "TUPLE":
                    stack.append(tuple(_pop_to_mark(stack)))
                elif name in ("PERSID", "BINPERSID"):
                    pid = stack.pop() if name == "BINPERSID" else tuple(str(arg).split())
                    stack.append(_storage(pid, storage_keys))
                elif name == "REDUCE":
                    args, func = stack.pop(), stack.pop()
                    if isinstance(func, _Global):
                        calls.append((func, name))
                        if isinstance(args, tuple) and any(type(a) is int for a in args):
                            sized.add(func)
                        if func in _TENSOR_REBUILDS and isinstance(args, tuple):
                            claimed = _rebuilt_tensor(args)
                            if claimed is not None:
                                tensor_bytes += claimed[0]
                                if claimed[1] > largest_numel:
                                    largest, largest_numel = claimed[2], claimed[1]
                    stack.append(None)
                elif name == "NEWOBJ":
                    args, cls = stack.pop(), stack.pop()
                    if isinstance(cls, _Global) and args != ():
                        calls.append((cls, name))
                        if isinstance(args, tuple) and any(type(a) is int for a in args):
                            sized.add(cls)
                    stack.append(None)
                elif name == "NEWOBJ_EX":
                    kwargs, args, cls = stack.pop(), stack.pop(), stack.pop()
                    if isinstance(cls, _Global) and (args != () or kwargs is not None):
                        calls.append((cls, name))
                    stack.append(None)
                elif name == "OBJ":
                    items = _pop_to_mark(stack)
                    if items and isinstance(items[0], _Global):
                        calls.append((items[0], name))
                    stack.append(None)
                elif name.startswith("EXT"):
                    globals_.add(f"(copyreg extension {arg})")
                    stack.append(None)
                elif name == "STOP":
                    break
                else:
                    _generic(opcode, arg, stack)
        except Exception:  # noqa: BLE001 - not a pickle past this point (legacy torch.save storage bytes) or damaged
            complete = False
            break
    return PickleScan(tuple(sorted(globals_)), tuple(calls), sum(storage_keys.values()), tensor_bytes, largest,
                      protocol, complete, tuple(sorted(sized)))


def _pop_to_mark(stack: list) -> list:
    items = []
    while stack:
        item = stack.pop()
        if item is _MARK:
            break
        items.append(item)
    items.reverse()
    return items


def _generic(opcode, arg, stack: list) -> None:
    """Any other opcode: consume what it consumes and push its constant argument or an unknown value."""
    before = [item.name for item in opcode.stack_before]
    if "mark" in before:
        _pop_to_mark(stack)
        count = before.index("mark")
    else:
        count = len(before)
    for _ in range(count):
        stack.pop()
    for _ in opcode.stack_after:
        stack.append(arg if isinstance(arg, (int, str)) and not isinstance(arg, bool) else
                     {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}.get(opcode.name))


def _storage(pid, storage_keys: dict) -> _Storage | None:
    """``('storage', torch.FloatStorage, key, location, numel[, view])``, torch.save's persistent id of a storage."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _Global)):
        return None
    element = _STORAGE_ELEMENT_BYTES.get(pid[1].rpartition(".")[2], 8)
    if isinstance(pid[4], int) and pid[4] >= 0:
        storage_keys[pid[2]] = max(storage_keys.get(pid[2], 0), pid[4] * element)
    return _Storage(element)


def _rebuilt_tensor(args: tuple) -> tuple[int, int, tuple[int, ...]] | None:
    """Bytes, element count and shape of a tensor rebuilt from ``(storage, offset, size, stride, …)``."""
    if len(args) < 3 or not isinstance(args[2], tuple) or not all(isinstance(n, int) for n in args[2]):
        return None
    numel = 1
    for n in args[2]:
        numel *= max(n, 0)
    element = int(args[0]) if isinstance(args[0], _Storage) else 8
    return numel * element, numel, tuple(args[2])


def scan_file(path: Path, kind: str) -> PickleScan:
    """:func:`scan_pickle` of a torch.save file: ``data.pkl`` of an archive (``kind`` ``torch_zip``), or the
    five pickles of a legacy file (magic number, protocol, system info, the object, its storage keys: torch.load
    reads every one of them with the same unpickler)."""
    if kind == "torch_zip":
        try:
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
                with archive.open(name) as member:
                    data = member.read()
        except (zipfile.BadZipFile, OSError, StopIteration, ValueError, EOFError):
            raise FileCheckError(f"{path} is a truncated or damaged archive; copy or save it again.") from None
        return scan_pickle(io.BytesIO(data))
    with open_binary(path) as handle:
        return scan_pickle(handle, max_pickles=5)
