"""Process-wide runtime settings that make PyTorch's CPU forwards run at the speed the hardware allows.

glibc returns large freed blocks to the OS (mmap'd chunks are unmapped, the heap top is trimmed), so every forward
pass re-faults its activation buffers page by page. On the VMs we measured, that doubled or tripled the time of a
small CNN's evaluation (and made it erratic). Keeping freed memory in the process removes those page faults; the
cost is that the process keeps its peak heap size, which a desktop tool evaluating one model can afford.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024

_tuned: bool | None = None


def tune_allocator() -> bool:
    """Ask glibc to keep freed memory for reuse; returns whether it took effect (False off glibc). Idempotent."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _tuned
