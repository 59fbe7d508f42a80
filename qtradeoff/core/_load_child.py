"""Run a file-inspecting function in a child process with a memory limit and a timeout.

A native loader that segfaults, aborts or exhausts memory on a hostile file
then kills the child, not the application.  The parent side is
:func:`run_isolated`; the child side is this module's ``__main__``, which
exchanges plain JSON with the parent through two temporary files.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_TARGET = "qtradeoff.core.model_io:inspect_file"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the qtradeoff package
_HEADROOM = 1 << 30  # address space beyond twice the budget: interpreter, allocator arenas, temporary copies


class IsolationError(Exception):
    """The child could not report a verdict (crash, timeout, memory); the message names the file."""


def run_isolated(kwargs: dict, *, timeout: float, memory_bytes: int, label: str,
                 target: str = DEFAULT_TARGET) -> dict:
    """Call ``target(**kwargs)`` in a fresh interpreter and return the plain-data verdict it returns.

    Raises :class:`qtradeoff.core.model_io.ModelLoadError` when the child dies by a signal, exceeds ``timeout``
    seconds, runs out of memory or exits without a verdict.
    """
    from qtradeoff.core.model_io import ModelLoadError

    with tempfile.TemporaryDirectory(prefix="qtradeoff-load-") as scratch:
        request_file, verdict_file = Path(scratch, "request.json"), Path(scratch, "verdict.json")
        request_file.write_text(json.dumps({"target": target, "kwargs": kwargs, "memory_bytes": memory_bytes}))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "qtradeoff.core._load_child", str(request_file), str(verdict_file)],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise ModelLoadError(
                f"{label}: the loader took longer than {timeout:g} s and was stopped; "
                "the file may be damaged or hostile, or raise the timeout for very large models."
            ) from None
        verdict = None
        if verdict_file.exists():
            try:
                verdict = json.loads(verdict_file.read_text())
            except ValueError:
                verdict = None
        code = completed.returncode
        if code < 0:
            number = -code
            try:
                signame = signal.Signals(number).name
            except ValueError:
                signame = "unknown signal"
            hint = ("it was probably out of memory" if number == signal.SIGKILL
                    else "the file is probably damaged or hostile")
            raise ModelLoadError(f"{label}: the loader crashed (signal {number}, {signame}); {hint}.")
        if verdict is None:
            last = completed.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ModelLoadError(f"{label}: the loader failed (exit code {code}: {last[0][:160]}).")
        return verdict


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


def _abort_for_tests(**_kwargs) -> dict:
    """Test hook: behave like a native loader that crashes."""
    os.abort()


def _exhaust_memory_for_tests(**_kwargs) -> dict:
    """Test hook: behave like a native loader that allocates without bound (untouched pages: fast)."""
    import torch

    hoard = []
    while True:
        hoard.append(torch.empty(256 << 20, dtype=torch.uint8))


def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, MemoryError) or "can't allocate memory" in text or "out of memory" in text


def main(argv: list[str]) -> int:
    request_file, verdict_file = Path(argv[0]), Path(argv[1])
    request = json.loads(request_file.read_text())
    import torch

    torch.set_num_threads(1)  # every extra thread reserves address space under the limit
    target = _resolve(request["target"])
    _limit_memory(int(request["memory_bytes"]))
    label = request["kwargs"].get("path", "the file")
    try:
        verdict = target(**request["kwargs"])
    except Exception as error:  # noqa: BLE001 - reported to the parent as data
        if _is_out_of_memory(error):
            message = (f"{label}: the loader ran out of memory (limit: twice the memory budget of "
                       f"{request['memory_bytes'] >> 20} MiB); raise the budget or use a smaller file.")
        else:
            message = f"{label}: the loader failed ({type(error).__name__}: {str(error)[:160]})."
        verdict = {"ok": False, "error": "ModelLoadError", "message": message}
    verdict_file.write_text(json.dumps(verdict))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
