"""Run a file-inspecting function in a child process with a memory limit and a timeout.

A native loader that segfaults, aborts or exhausts memory on a hostile file
then kills the child, not the application.  To keep each check cheap, a small
loader server (``python -m qtradeoff.core.loading._load_child``, a fresh interpreter:
no Qt, no threads of the application) imports torch once (and torchvision after
its first answer) and forks one child per request; a fork costs ~0.05 s where a new interpreter with
torch costs 1–2 s.  Requests and verdicts are JSON lines on the server's
stdin/stdout; children write their verdict to a pipe of their own, and their
stdout/stderr go to /dev/null so that code in a trusted file cannot corrupt
the protocol.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

DEFAULT_TARGET = "qtradeoff.core.loading.model_io:inspect_file"
_PACKAGE_ROOT = Path(__file__).resolve().parents[3]  # the directory holding the qtradeoff package
_HEADROOM = 1 << 30  # address space beyond twice the budget: allocator arenas, temporary copies
_SERVER_GRACE = 60.0  # extra seconds the parent waits for the server beyond the child's own timeout


class LoaderServer:
    """The long-lived loader process of this process: started on first use, restarted when found dead, one
    request at a time. Holds nothing but the process handle; every file is inspected in a fresh child of it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self.last_peak_rss: int | None = None  # bytes: the peak resident memory of the last request's child

    @property
    def process(self) -> subprocess.Popen | None:
        return self._process

    def start(self) -> None:
        """Start the server now (it imports torch once, ~1–2 s) so the first request does not wait for it."""
        with self._lock:
            self._ensure()

    def ask(self, request: dict, wait: float) -> dict | None:
        """Send one request (starting the server if needed) and read its reply; None if the server failed.

        A server found dead (e.g. killed from outside) is restarted once; one that does not answer within
        ``wait`` is stopped and not retried.
        """
        with self._lock:
            for _attempt in range(2):
                server = self._ensure()
                answered = False
                try:
                    server.stdin.write(json.dumps(request) + "\n")
                    server.stdin.flush()
                    answered = bool(select.select([server.stdout], [], [], wait)[0])
                    line = server.stdout.readline() if answered else ""
                except (OSError, ValueError):
                    line = ""
                if line:
                    reply = json.loads(line)
                    self.last_peak_rss = reply.get("peak_rss")
                    return reply
                self._stop()  # dead or wedged: the next request starts a fresh one
                if not answered:
                    return None
            return None

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _ensure(self) -> subprocess.Popen:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()  # a dead server's pipes still need closing
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
        env["OMP_NUM_THREADS"] = "1"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "qtradeoff.core.loading._load_child"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, text=True, bufsize=1, start_new_session=True,
        )
        return self._process

    def _stop(self) -> None:
        server, self._process = self._process, None
        if server is None:
            return
        for stream in (server.stdin, server.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if server.poll() is None:
            server.kill()
        server.wait()


# The process's one loader (a resource like a thread pool, not a cache): nothing runs until the first request.
SERVER = LoaderServer()
atexit.register(SERVER.stop)


# ---------------------------------------------------------------------------------------------------- parent side


def run_isolated(kwargs: dict, *, timeout: float, memory_bytes: int, label: str,
                 target: str = DEFAULT_TARGET) -> dict:
    """Call ``target(**kwargs)`` (``"package.module:function"``) in a child and return its plain-data verdict.

    Raises :class:`qtradeoff.core.loading.model_io.ModelLoadError` naming ``label`` when the child dies by a signal,
    exceeds ``timeout`` seconds or exits without a verdict.
    """
    from qtradeoff.core.loading.model_io import ModelLoadError

    request = {"target": target, "kwargs": kwargs, "memory_bytes": memory_bytes, "timeout": timeout}
    reply = SERVER.ask(request, timeout + _SERVER_GRACE)
    if reply is None:
        raise ModelLoadError(f"{label}: the loader process stopped unexpectedly; try loading the file again.")
    if reply.get("timed_out"):
        raise ModelLoadError(
            f"{label}: the loader took longer than {timeout:g} s and was stopped; "
            "the file may be damaged or hostile, or raise the timeout for very large models."
        )
    if reply.get("verdict") is not None:
        verdict = reply["verdict"]
        if isinstance(verdict, dict) and reply.get("load_bytes") is not None:
            verdict = {**verdict, "loader_bytes": reply["load_bytes"]}
        return verdict
    number = reply.get("signal")
    if number:
        try:
            signame = signal.Signals(number).name
        except ValueError:
            signame = "unknown signal"
        hint = ("it was probably out of memory" if number == signal.SIGKILL
                else "the file is probably damaged or hostile")
        raise ModelLoadError(f"{label}: the loader crashed (signal {number}, {signame}); {hint}.")
    raise ModelLoadError(
        f"{label}: the loader exited without an answer (exit code {reply.get('exit')}); try loading it again."
    )


# ---------------------------------------------------------------------------------------------------- server side


def _serve() -> None:
    import torch

    torch.set_num_threads(1)  # before any fork: children inherit no thread pool, and every thread costs address space
    import qtradeoff.core.loading.model_io  # noqa: F401

    replies = sys.stdout
    preloaded = False
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        replies.write(json.dumps(_fork_one(request)) + "\n")
        replies.flush()
        if not preloaded:
            # torchvision's models take longer to import than torch itself (~5 s on a busy 2-core machine), and
            # the first file of a CLI run rarely needs them: import them once the first verdict is out, while the
            # parent loads the file, so that every later child starts with them ready.
            import qtradeoff.core.loading._load_preload  # noqa: F401

            preloaded = True


def _fork_one(request: dict) -> dict:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        _child(write_fd, request)
    os.close(write_fd)
    deadline = time.monotonic() + float(request["timeout"])
    chunks, timed_out = [], False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([read_fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(read_fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    # the child's peak resident memory (ru_maxrss is in KiB on Linux): what a file cost, for reports and tests
    reply: dict = {"timed_out": timed_out, "verdict": None, "signal": None, "exit": None,
                   "peak_rss": int(usage.ru_maxrss) * 1024}
    if os.WIFSIGNALED(status):
        reply["signal"] = os.WTERMSIG(status)
    else:
        reply["exit"] = os.WEXITSTATUS(status)
    if chunks and not timed_out:
        try:
            written = json.loads(b"".join(chunks))
            reply["verdict"] = written["verdict"]
            # what the load itself added to the child's memory: its peak beyond what it started with (the pages
            # it shares with this server at the fork)
            reply["load_bytes"] = max(0, reply["peak_rss"] - int(written["start_rss"]))
        except (ValueError, KeyError, TypeError):
            pass
    return reply


def _child(write_fd: int, request: dict) -> None:
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        label = request["kwargs"].get("path", "the file")
        memory_bytes = int(request["memory_bytes"])
        start_rss = _resident_bytes()
        try:
            function = _resolve(request["target"])
            _limit_memory(memory_bytes)
            verdict = function(**request["kwargs"])
        except Exception as error:  # noqa: BLE001 - reported to the parent as data
            if _is_out_of_memory(error):
                message = (f"{label}: the loader ran out of memory (limit: twice the memory budget of "
                           f"{memory_bytes >> 20} MiB); raise the budget or use a smaller file.")
            else:
                message = f"{label}: the loader failed ({type(error).__name__}: {str(error)[:160]})."
            verdict = {"ok": False, "error": "ModelLoadError", "message": message}
        data = json.dumps({"verdict": verdict, "start_rss": start_rss}).encode()
        while data:
            data = data[os.write(write_fd, data):]
        code = 0
    finally:
        os._exit(code)  # skip atexit handlers and buffers inherited from the server


def _resident_bytes() -> int:
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return 0


def _limit_memory(memory_bytes: int) -> None:
    """Cap the address space at what is mapped now (interpreter, torch) plus twice the budget and some headroom."""
    import resource

    with open("/proc/self/status") as status:
        vm_size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    limit = vm_size + 2 * memory_bytes + _HEADROOM
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _resolve(target: str):
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, MemoryError) or "can't allocate memory" in text or "out of memory" in text


# ---------------------------------------------------------------------------------------------------- test hooks


def _abort_for_tests(**_kwargs) -> dict:
    """Test hook: behave like a native loader that crashes."""
    os.abort()


def _exhaust_memory_for_tests(**_kwargs) -> dict:
    """Test hook: behave like a native loader that allocates without bound (untouched pages: fast)."""
    import torch

    hoard = []
    while True:
        hoard.append(torch.empty(256 << 20, dtype=torch.uint8))


def _hang_for_tests(**_kwargs) -> dict:
    """Test hook: behave like a loader stuck in a loop."""
    while True:
        time.sleep(0.05)


if __name__ == "__main__":
    _serve()
