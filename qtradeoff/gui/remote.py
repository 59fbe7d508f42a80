"""The worker-process backend: :class:`ProcessBackend` has the :class:`~qtradeoff.gui.backend.Backend` methods and
forwards each call over a pipe to a spawned child process that hosts a :class:`~qtradeoff.gui.backend.CoreBackend`.

Two children: one for loads and edits (the worker thread's), one for searches (the search thread's, loaded lazily
with the same model and data on the first search after a change). Messages are plain picklable data; the child's
exceptions come back as a kind and a message and are raised again here as this backend's ``NeedsTrust``,
``expected_errors`` or ``Cancelled``. A child that dies (a crashing native loader, kill -9, out of memory) becomes a
one-sentence :class:`WorkerCrashed`; it is respawned at once and reloads the last model on the next request.

This module must stay free of Qt: the children import it to find their entry point.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from qtradeoff.core.errors import CancelledError, InputError, NeedsTrustError, QtradeoffError

# How long a closing window waits for a child to exit on its own before terminating it (then killing it).
CLOSE_GRACE_SECONDS = 0.25
# Scheduling priority the children lower themselves by (see child_main).
CHILD_NICENESS = 5
# How often a waiting call looks at its should_stop and at whether its child is still alive.
POLL_SECONDS = 0.02
# A call abandoned by its caller (a superseded evaluation) waits this long for the child to stop by itself;
# a child that runs on (a runaway evaluation) is killed and respawned instead.
DRAIN_SECONDS = 10.0

_WHAT = {"load_sample": "loading the sample", "load_model": "loading a model", "load_data": "loading data",
         "evaluate_iter": "evaluating", "search_iter": "searching", "export_iter": "exporting",
         "recover_iter": "fine-tuning", "replay": "reloading the model", "model_graph": "tracing the model's graph",
         "profile_iter": "profiling layers"}


class RemoteNeedsTrust(NeedsTrustError):
    """The child's loader needs the user's trust: the pickle globals the file names and its format."""

    def __init__(self, message: str, globals: list[str] | None = None, format: str | None = None):  # noqa: A002
        super().__init__(message)
        self.globals = list(globals or [])
        self.format = format


class RemoteCancelled(CancelledError):
    """The child stopped the request because its stop flag was set."""


class RemoteError(InputError):
    """An expected failure in the child (bad model, data or configuration file), with the child's message."""


class WorkerCrashed(QtradeoffError):
    """The child process died during a request; it has been respawned and reloads the model on the next one."""


# -- the child ---------------------------------------------------------------------------------------------------
class _Host:
    """The child's side: one CoreBackend and the recipe (the list of load calls) that rebuilds its state."""

    def __init__(self) -> None:
        from qtradeoff.gui.backend import CoreBackend

        self._make = CoreBackend
        self.backend = CoreBackend()
        self.recipe: tuple = ()
        # The calls that produced the current data: a model load that keeps the data needs them replayed first.
        self._data_recipe: tuple = ()

    def call(self, op: str, args: tuple, kwargs: dict) -> Any:
        backend = self.backend
        step = (op, tuple(args), dict(kwargs))
        if op == "replay":
            return self.replay(args[0])
        if op == "modules":  # what a test checks: no Qt in here
            return sorted(name for name in sys.modules if name.split(".")[0] in ("PySide6", "pyqtgraph", "shiboken6"))
        if op == "load_sample":
            value = backend.load_sample(*args, **kwargs)
            self.recipe = self._data_recipe = (step,)
            return value
        if op == "load_model":
            data_before = backend.data
            value = backend.load_model(*args, **kwargs)
            if backend.data is None:
                self.recipe, self._data_recipe = (step,), ()
            elif backend.data is data_before:
                self.recipe = self._data_recipe + (step,)
            else:  # the model's own bundled data: the load alone reproduces it
                self.recipe = self._data_recipe = (step,)
            return value
        if op == "load_data":
            info = backend.load_data(*args, **kwargs)
            self.recipe = self._data_recipe = self.recipe + (step,)
            return info, backend.take_refreshed()
        if op == "subset_hints":
            return backend.subset_hints(*args, **kwargs)
        if op == "model_graph":
            return backend.model_graph()
        raise ValueError(f"unknown request {op!r}")

    def stream(self, op: str, args: tuple, kwargs: dict) -> Iterator[Any]:
        if op == "evaluate_iter":
            return self.backend.evaluate_iter(*args, **kwargs)
        if op == "search_iter":
            return self.backend.search_iter(*args, **kwargs)
        if op == "export_iter":
            return self.backend.export_iter(*args, **kwargs)
        if op == "recover_iter":
            return self.backend.recover_iter(*args, **kwargs)
        if op == "profile_iter":
            return self.backend.profile_iter(*args, **kwargs)
        raise ValueError(f"unknown request {op!r}")

    def replay(self, recipe: tuple) -> None:
        """Rebuild the state another process reached with ``recipe``, on a fresh CoreBackend."""
        self.backend = self._make()
        self.recipe = self._data_recipe = ()
        for op, args, kwargs in recipe:
            self.call(op, args, kwargs)


def _error_reply(request_id: int, error: BaseException, backend: Any) -> tuple:
    if isinstance(error, backend.NeedsTrust):
        return ("error", request_id, "needs_trust", str(error), list(error.globals), error.format)
    if isinstance(error, backend.Cancelled):
        return ("error", request_id, "cancelled", str(error), None, None)
    if isinstance(error, backend.expected_errors):
        return ("error", request_id, "expected", str(error), None, None)
    if isinstance(error, ValueError):  # a search's bad option: the panel shows it like an expected error
        return ("error", request_id, "value", str(error), None, None)
    traceback.print_exc()  # a bug: the developer's traceback goes to the child's stderr (the terminal)
    return ("error", request_id, "unexpected", f"{type(error).__name__}: {error}", None, None)


def child_main(conn: Any, stop: Any) -> None:
    """The child process: answer requests from ``conn`` until "exit" or the pipe closes. ``stop`` is the shared
    flag the GUI sets to cancel the running request (polled between batches)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C in the terminal is the GUI's to handle
    try:
        # When the window and a child want the same core, the window goes first: a repaint is a few ms for the
        # child and a visible stall for the user.
        os.nice(CHILD_NICENESS)
    except OSError:
        pass
    host = _Host()  # imports torch and the core now, before the first request
    conn.send(("ready", 0))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "exit":
            # Nothing to flush; interpreter teardown with torch loaded takes longer than the close grace.
            conn.close()
            os._exit(0)
        _, request_id, op, args, kwargs = message
        try:
            if op in ("evaluate_iter", "search_iter", "export_iter", "recover_iter", "profile_iter"):
                for item in host.stream(op, args, dict(kwargs, should_stop=stop.is_set)):
                    conn.send(("item", request_id, item))
                conn.send(("ok", request_id, None, host.recipe))
            else:
                conn.send(("ok", request_id, host.call(op, args, kwargs), host.recipe))
        except (EOFError, BrokenPipeError):
            return
        except BaseException as error:  # noqa: BLE001 - every failure goes back to the GUI as a message
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            try:
                conn.send(_error_reply(request_id, error, host.backend))
            except (EOFError, BrokenPipeError):
                return


# -- the GUI's side ----------------------------------------------------------------------------------------------
class _Channel:
    """One child process and its pipe, used by one thread at a time (the worker's or the search thread's)."""

    def __init__(self, context: Any, name: str, owner: ProcessBackend) -> None:
        self._context = context
        self.name = name
        self._owner = owner
        self._busy = threading.Lock()
        self._ids = 0
        self.process: Any = None
        self.pids: list[int] = []  # every child this channel started (tests check none is left)
        self.spawn()

    def spawn(self) -> None:
        parent, child = self._context.Pipe()
        self.stop = self._context.Event()
        self.conn = parent
        self.process = self._context.Process(target=child_main, args=(child, self.stop), daemon=True,
                                             name=f"qtradeoff-{self.name}")
        self.process.start()
        child.close()
        self.pids.append(self.process.pid)
        self.recipe: tuple = ()  # what the child has loaded
        self.ready = False

    def _died(self, op: str) -> WorkerCrashed | RemoteCancelled:
        process = self.process
        process.join(1.0)
        code = process.exitcode
        if self._owner.closed:
            return RemoteCancelled("The window is closing.")
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        self.spawn()  # the new child imports while the user reads the message
        return WorkerCrashed(f"The {self.name} process stopped unexpectedly ({how}) while {_WHAT.get(op, op)}; "
                             "the model is reloaded on the next request.")

    def _receive(self, op: str, should_stop: Callable[[], bool] | None) -> tuple:
        """The next message, polling ``should_stop`` (forwarded to the child's stop flag) and the child's life."""
        while True:
            try:
                if self.conn.poll(POLL_SECONDS):
                    message = self.conn.recv()
                    if message[0] == "ready":
                        self.ready = True
                        continue
                    return message
            except (EOFError, OSError):
                raise self._died(op) from None
            if not self.process.is_alive():
                raise self._died(op)
            if self._owner.closed or (should_stop is not None and should_stop()):
                self.stop.set()

    def _send(self, op: str, args: tuple, kwargs: dict) -> int:
        self._ids += 1
        self.stop.clear()
        try:
            self.conn.send(("call", self._ids, op, args, kwargs))
        except (EOFError, OSError):
            raise self._died(op) from None
        return self._ids

    def _raise(self, message: tuple) -> None:
        _, _, kind, text, globals_, format_ = message
        if kind == "needs_trust":
            raise RemoteNeedsTrust(text, globals_, format_)
        if kind == "cancelled":
            raise RemoteCancelled(text)
        if kind == "expected":
            raise RemoteError(text)
        if kind == "value":
            raise ValueError(text)
        raise RuntimeError(text)

    def sync(self, recipe: tuple) -> None:
        """Make the child hold what ``recipe`` loads (after a respawn, or for the search child after a change)."""
        if self.recipe != recipe:
            self.recipe = ()
            try:
                self.call("replay", recipe)
            except RemoteError as error:
                raise RemoteError(f"The {self.name} process could not reload the model: {error}") from None
            self.recipe = recipe

    def call(self, op: str, *args: Any, should_stop: Callable[[], bool] | None = None, **kwargs: Any) -> Any:
        with self._busy:
            request_id = self._send(op, args, kwargs)
            while True:
                message = self._receive(op, should_stop)
                if message[1] != request_id:
                    continue
                if message[0] == "error":
                    self._raise(message)
                self.recipe = message[3]
                return message[2]

    def stream(self, op: str, *args: Any, should_stop: Callable[[], bool], **kwargs: Any) -> Iterator[Any]:
        with self._busy:
            request_id = self._send(op, args, kwargs)
            finished = False
            try:
                while True:
                    message = self._receive(op, should_stop)
                    if message[1] != request_id:
                        continue
                    if message[0] == "item":
                        yield message[2]
                        continue
                    finished = True
                    if message[0] == "error":
                        self._raise(message)
                    return
            except (WorkerCrashed, RemoteCancelled):  # the child is gone or the request ended: nothing to drain
                finished = True
                raise
            finally:
                if not finished:
                    self._drain(request_id, op)

    def _drain(self, request_id: int, op: str) -> None:
        """The caller left before the end (a superseded request): stop the child's request and wait for its last
        message, so the next request starts on a quiet pipe; a child that does not stop is replaced."""
        self.stop.set()
        deadline = DRAIN_SECONDS
        try:
            while deadline > 0:
                if self.conn.poll(POLL_SECONDS):
                    message = self.conn.recv()
                    if message[1] == request_id and message[0] in ("ok", "error"):
                        return
                    continue
                deadline -= POLL_SECONDS
                if not self.process.is_alive() or self._owner.closed:
                    break
        except (EOFError, OSError):
            pass
        if self._owner.closed:
            return
        self.kill()
        self.spawn()

    def close(self, grace: float) -> None:
        """Ask the child to exit (if its pipe is free), then terminate it after ``grace`` seconds, then kill it."""
        self.stop.set()
        process = self.process
        deadline = time.monotonic() + grace
        # The request running in the child (if any) stops at its next check and frees the pipe for the "exit".
        if self._busy.acquire(timeout=grace):
            try:
                self.conn.send(("exit",))
            except (EOFError, OSError):
                pass
            finally:
                self._busy.release()
        process.join(max(0.0, deadline - time.monotonic()))
        self.kill()

    def kill(self) -> None:
        process = self.process
        if process.is_alive():
            process.terminate()
            process.join(0.2)
        if process.is_alive():
            process.kill()
        process.join()


class ProcessBackend:
    """The Backend on worker processes: the GUI process keeps only what it was sent (summaries, results, search
    events); the model, its data and the engine live in the children. Methods block the calling thread (the
    service's QThreads), never the GUI thread, and release the GIL while they wait on the pipe."""

    NeedsTrust = RemoteNeedsTrust
    Cancelled = RemoteCancelled
    expected_errors: tuple[type[Exception], ...] = (RemoteError, WorkerCrashed)

    def __init__(self, *, search_process: bool = True) -> None:
        # Unpickling a summary or a Result needs their core classes, which import torch: import them now, once,
        # on the thread creating the window, rather than in the worker thread in the middle of the first load
        # (an import holds the GIL for seconds, which would stall the GUI thread).
        from qtradeoff.core import config
        from qtradeoff.core.loading import inventory  # noqa: F401 - LayerInfo, in every ModelSummary
        from qtradeoff.core.measurement import result

        self._config = config
        self._result_type = result.Result
        self.closed = False
        context = multiprocessing.get_context("spawn")
        self._edits = _Channel(context, "evaluation", self)
        self._search = _Channel(context, "search", self) if search_process else self._edits
        self._recipe: tuple = ()  # what the edits child has loaded: the search child replays it when it differs
        self._refreshed: Any = None

    # -- state -----------------------------------------------------------------------------------------------------
    def has_model(self) -> bool:
        return bool(self._recipe)

    def baseline_config(self) -> Any:
        return self._config.CompressionConfig()

    def is_result(self, item: Any) -> bool:
        return isinstance(item, self._result_type)

    def pids(self) -> list[int]:
        """Every child process this backend started (for leak checks)."""
        return [*self._edits.pids, *(self._search.pids if self._search is not self._edits else [])]

    def child_modules(self) -> list[str]:
        """The Qt modules the evaluation child imported (none: it is a test's check)."""
        return self._edits.call("modules")

    # -- loading (edits child) -------------------------------------------------------------------------------------
    def _edit_call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        self._edits.sync(self._recipe)  # after a crash, the respawned child reloads the last model first
        try:
            return self._edits.call(op, *args, **kwargs)
        finally:
            self._recipe = self._edits.recipe

    def load_sample(self, name: str) -> Any:
        return self._edit_call("load_sample", name)

    def load_model(self, path: str, *, trust: bool = False, **extra: Any) -> Any:
        return self._edit_call("load_model", path, trust=trust, **extra)  # extra: input_text

    def load_data(self, path: str, **extra: Any) -> dict:
        info, self._refreshed = self._edit_call("load_data", path, **extra)  # extra: options, trust
        return info

    def take_refreshed(self) -> Any:
        summary, self._refreshed = self._refreshed, None
        return summary

    def subset_hints(self, *args: Any, **kwargs: Any) -> dict:
        return self._edit_call("subset_hints", *args, **kwargs)

    def model_graph(self) -> Any:
        return self._edit_call("model_graph")

    # -- evaluation and search -------------------------------------------------------------------------------------
    def evaluate_iter(self, config: Any, *, eval_size: int | None, latency: str,
                      should_stop: Callable[[], bool], runtimes: tuple[str, ...] = ()) -> Iterator[Any]:
        self._edits.sync(self._recipe)
        extra = {"runtimes": tuple(runtimes)} if runtimes else {}
        yield from self._edits.stream("evaluate_iter", config, eval_size=eval_size, latency=latency,
                                      should_stop=should_stop, **extra)

    def export_iter(self, config: Any, fmt: str, path: str, *, should_stop: Callable[[], bool],
                    weights: str | None = None) -> Iterator[Any]:
        """An export on the evaluation child (its engine holds the real int8 model already built)."""
        self._edits.sync(self._recipe)
        extra = {"weights": weights} if weights else {}
        yield from self._edits.stream("export_iter", config, fmt, path, should_stop=should_stop, **extra)

    def recover_iter(self, config: Any, *, eval_size: int | None, should_stop: Callable[[], bool],
                     settings: dict | None = None) -> Iterator[Any]:
        """A recovery fine-tune on the evaluation child, then the recovered point's evaluation there."""
        self._edits.sync(self._recipe)
        yield from self._edits.stream("recover_iter", config, eval_size=eval_size, should_stop=should_stop,
                                      settings=settings)

    def profile_iter(self, config: Any, *, should_stop: Callable[[], bool], **kwargs: Any) -> Iterator[Any]:
        """The per-layer latency profile on the evaluation child (where the real-kernel models are cached)."""
        self._edits.sync(self._recipe)
        yield from self._edits.stream("profile_iter", config, should_stop=should_stop, **kwargs)

    def search_iter(self, strategy: str, options: dict, *, should_stop: Callable[[], bool]) -> Iterator[Any]:
        channel = self._search
        recipe = self._recipe
        if channel is not self._edits:
            channel.sync(recipe)  # lazily: the first search after a model or data change loads them there
        yield from channel.stream("search_iter", strategy, options, should_stop=should_stop)

    # -- closing ---------------------------------------------------------------------------------------------------
    def stop_all(self) -> None:
        """Flag every child's running request to stop (the window is closing)."""
        self.closed = True
        for channel in {id(self._edits): self._edits, id(self._search): self._search}.values():
            channel.stop.set()

    def close(self, grace: float = CLOSE_GRACE_SECONDS) -> None:
        """Stop the children: each is asked to exit, terminated after ``grace`` seconds, killed if need be."""
        self.stop_all()
        channels = list({id(self._edits): self._edits, id(self._search): self._search}.values())
        for channel in channels:
            channel.stop.set()
        threads = [threading.Thread(target=channel.close, args=(grace,)) for channel in channels]
        for thread in threads:  # both graces run at once: closing takes one grace, not two
            thread.start()
        for thread in threads:
            thread.join()


def default_backend() -> Any:
    """The app's backend: worker processes, or the in-thread CoreBackend when ``QTRADEOFF_BACKEND=thread``."""
    from qtradeoff.gui.backend import CoreBackend

    choice = os.environ.get("QTRADEOFF_BACKEND", "process").strip().lower()
    if choice in ("thread", "inprocess", "in-process"):
        return CoreBackend()
    return ProcessBackend()
