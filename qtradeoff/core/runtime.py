"""Process-wide runtime matters: allocator settings that let PyTorch's CPU forwards run at the speed the hardware
allows, and the lock that keeps torch.fx tracing (which patches nn.Module for the whole process) apart from forwards.

glibc returns large freed blocks to the OS (mmap'd chunks are unmapped, the heap top is trimmed), so every forward
pass re-faults its activation buffers page by page. On the VMs we measured, that doubled or tripled the time of a
small CNN's evaluation (and made it erratic). Keeping freed memory in the process removes those page faults; the
cost is that the process keeps its peak heap size, which a desktop tool evaluating one model can afford.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
import threading

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


class _SharedOrExclusive:
    """A readers-writer lock that prefers writers: many holders of ``shared()`` at once, or one of ``exclusive()``.

    Re-entrant for shared holders on the same thread (a forward may call code that runs another forward).
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers: dict[int, int] = {}  # thread id -> depth
        self._writer: int | None = None
        self._waiting_writers = 0

    @contextlib.contextmanager
    def shared(self):
        me = threading.get_ident()
        with self._condition:
            if self._writer == me or self._readers.get(me):  # already inside: never wait on ourselves
                self._readers[me] = self._readers.get(me, 0) + 1
            else:
                while self._writer is not None or self._waiting_writers:
                    self._condition.wait()
                self._readers[me] = 1
        try:
            yield
        finally:
            with self._condition:
                self._readers[me] -= 1
                if not self._readers[me]:
                    del self._readers[me]
                self._condition.notify_all()

    @contextlib.contextmanager
    def exclusive(self):
        me = threading.get_ident()
        with self._condition:
            if self._writer == me:
                raise RuntimeError("exclusive section entered twice on one thread")
            self._waiting_writers += 1
            try:
                # a thread that holds a shared section and now traces would wait for itself: let it through
                while self._writer is not None or any(t != me for t in self._readers):
                    self._condition.wait()
            finally:
                self._waiting_writers -= 1
            self._writer = me
        try:
            yield
        finally:
            with self._condition:
                self._writer = None
                self._condition.notify_all()


# torch.fx's tracers patch ``nn.Module.__call__`` and ``__getattr__`` process-wide while they trace, so a model
# running in another thread at that moment is traced into the wrong graph ("module is not installed as a
# submodule"). Everything that traces holds ``tracing()``; every forward that may overlap one holds ``running()``.
_FX = _SharedOrExclusive()


def running():
    """Context for running a model's forward: many at once, never while a trace is in progress."""
    return _FX.shared()


def tracing():
    """Context for torch.fx tracing (symbolic_trace, prepare_fx/convert_fx): waits until no forward runs."""
    return _FX.exclusive()
