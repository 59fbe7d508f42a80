"""Checks every user file passes before anything parses it: existence, kind, size, archive bombs, and content sniffing.

Shared by the model loader and the data loader.  Nothing here unpickles or
imports code; formats are recognised from the first bytes and zip member names,
never from the file extension.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickletools
import stat
import struct
import zipfile
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


def pickle_globals(path: Path, max_pickles: int = 4) -> list[str]:
    """Globals (``module.name``) referenced by the pickle stream(s) at the start of a non-zip file.

    Legacy torch.save files are several pickles in a row (magic number, protocol, system info, the object,
    storage keys) followed by raw storage bytes; we scan the first few pickles' opcodes without executing them.
    """
    found: list[str] = []
    with open_binary(path) as handle:
        for _ in range(max_pickles):
            start = handle.tell()
            if not handle.read(1):
                break
            handle.seek(start)
            strings: list[str] = []
            memo: dict[int, str] = {}
            memo_count = 0
            last_string: str | None = None
            try:
                for opcode, arg, _pos in pickletools.genops(handle):
                    name = opcode.name
                    pushed: str | None = None
                    if name in ("GLOBAL", "INST"):
                        found.append(str(arg).replace(" ", "."))
                    elif name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    elif "UNICODE" in name or name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                        pushed = str(arg)
                    elif name == "MEMOIZE":
                        if last_string is not None:
                            memo[memo_count] = last_string
                        memo_count += 1
                        pushed = last_string
                    elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                        if last_string is not None:
                            memo[int(arg)] = last_string
                        pushed = last_string
                    elif name in ("BINGET", "LONG_BINGET", "GET") and int(arg) in memo:
                        pushed = memo[int(arg)]
                    if pushed is not None and name not in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
                        strings.append(pushed)
                    last_string = pushed
            except Exception:  # noqa: BLE001 - end of the pickle section or garbage: stop scanning
                break
    return sorted(set(found))
