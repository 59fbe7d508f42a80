"""The background workers: one QObject in a QThread for the window's lifetime running model loads and
evaluations from the core, with coalesced requests and cooperative cancellation, and a second one running searches.

The GUI thread talks to them only through :class:`EvaluationService`: evaluation requests go into a locked mailbox
(the newest replaces an older pending one), a search request replaces the running search (the latest wins),
cancellation sets a ``threading.Event`` directly, and everything comes back as queued signals carrying plain data.
Edits keep being evaluated while a search runs: on the in-thread CoreBackend both workers share its one engine;
on the app's ProcessBackend (:mod:`qtradeoff.gui.remote`) each thread drives its own worker process, and
:meth:`EvaluationService.shutdown` closes the backend (its children) before waiting for the threads.
"""

from __future__ import annotations

import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from qtradeoff.gui.backend import Backend, CoreBackend, SearchPoint, SearchScores, SearchStep

# Every QThread this module starts, so tests can prove none is left running.
_LIVE_THREADS: weakref.WeakSet[QThread] = weakref.WeakSet()


def running_threads() -> list[QThread]:
    """QThreads started by an EvaluationService that are still running (for leak checks in tests)."""
    alive = []
    for thread in list(_LIVE_THREADS):
        try:
            if thread.isRunning():
                alive.append(thread)
        except RuntimeError:  # C++ object already deleted: not running
            pass
    return alive


@dataclass
class Job:
    """One unit of work for the worker. ``cancel`` is set from the GUI thread and polled by the core."""

    kind: str  # "load" | "sample" | "data" | "graph" | "eval" | "export" | "recover" | "profile"
    payload: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)
    description: str = ""


class _Mailbox:
    """Pending jobs shared by both threads. One slot per kind: a newer request of the same kind replaces the older.

    Baseline evaluations have their own slot (taken first) so that an edit never coalesces the baseline away.
    """

    ORDER = ("sample", "load", "data", "graph", "eval:baseline", "eval", "export", "recover", "profile")

    @staticmethod
    def _slot(job: Job) -> str:
        return "eval:baseline" if job.kind == "eval" and job.payload.get("tag") == "baseline" else job.kind

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Job] = {}
        self._current: Job | None = None
        self._closed = False

    def put(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                return
            if job.kind in ("load", "sample"):
                # A new model makes every queued evaluation and the running one pointless.
                self._pending.pop("eval", None)
                self._pending.pop("eval:baseline", None)
                self._pending.pop("data", None)
                self._pending.pop("recover", None)
                self._pending.pop("graph", None)
                self._pending.pop("profile", None)
                self._pending.pop("load", None)
                self._pending.pop("sample", None)
                if self._current is not None:
                    self._current.cancel.set()
            self._pending[self._slot(job)] = job

    def take(self) -> Job | None:
        with self._lock:
            if self._closed:
                return None
            for kind in self.ORDER:
                job = self._pending.pop(kind, None)
                if job is not None:
                    self._current = job
                    return job
            return None

    def done(self, job: Job) -> None:
        with self._lock:
            if self._current is job:
                self._current = None

    def cancel_all(self) -> bool:
        """Drop pending jobs and flag the running one; True if anything was cancelled."""
        with self._lock:
            cancelled = bool(self._pending) or self._current is not None
            self._pending.clear()
            if self._current is not None:
                self._current.cancel.set()
            return cancelled

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.cancel_all()

    def has_pending(self) -> bool:
        with self._lock:
            return bool(self._pending)


class Worker(QObject):
    """Runs jobs from the mailbox in its own thread. Never touches a widget; emits plain data only."""

    job_started = Signal(str, str)  # kind, description
    job_finished = Signal(str, bool)  # kind, completed (False when cancelled or failed)
    progress = Signal(int, int, str)  # done, total, stage
    model_loaded = Signal(object)  # ModelSummary
    data_loaded = Signal(object)  # dict: name, eval_samples, calib_samples, labelled
    result_ready = Signal(object, object)  # core Result, dict meta (eval_size, latency mode, tag)
    failed = Signal(str, str)  # kind, one-sentence message
    needs_trust = Signal(str, object, str)  # path, list of globals, format
    subset_hints = Signal(object)  # dict: the proposed evaluation subset and its estimates (after a baseline)
    exported = Signal(object)  # dict: the export's verification report (ExportReport.to_dict + "summary")
    graph_ready = Signal(object)  # core ModelGraph of the loaded model (plain data)
    profiled = Signal(object)  # core LayerProfile: measured per-layer times of a configuration vs fp32

    def __init__(self, mailbox: _Mailbox, backend: Backend) -> None:
        super().__init__()
        self._mailbox = mailbox
        self._backend = backend

    @Slot()
    def process_pending(self) -> None:
        while True:
            job = self._mailbox.take()
            if job is None:
                return
            self.job_started.emit(job.kind, job.description)
            completed = False
            try:
                completed = self._run(job)
            except Exception as exc:  # a bug or an unexpected core error: report it, never crash the thread
                traceback.print_exc()
                self.failed.emit(job.kind, f"Unexpected error while {job.description or job.kind}: {exc}")
            finally:
                self._mailbox.done(job)
                self.job_finished.emit(job.kind, completed)

    def _run(self, job: Job) -> bool:
        backend = self._backend
        if job.kind in ("sample", "load"):
            try:
                if job.kind == "sample":
                    summary = backend.load_sample(job.payload.get("name", "digits_cnn"))
                else:
                    extra = {"input_text": job.payload["input_text"]} if job.payload.get("input_text") else {}
                    summary = backend.load_model(job.payload["path"], trust=job.payload.get("trust", False), **extra)
            except backend.NeedsTrust as exc:
                self.needs_trust.emit(str(job.payload.get("path", "")), list(exc.globals), str(exc.format))
                return False
            except backend.expected_errors as exc:
                if job.kind == "load" and backend.has_model() and self._try_as_data(job):
                    return True
                self.failed.emit(job.kind, str(exc))
                return False
            self.model_loaded.emit(summary)
            return self._baseline(job)
        if job.kind == "data":
            extra = {key: job.payload[key] for key in ("options", "trust") if job.payload.get(key)}
            try:
                info = backend.load_data(job.payload["path"], **extra)
            except backend.NeedsTrust as exc:  # a dataset hook: the window asks for consent
                self.needs_trust.emit(str(job.payload.get("path", "")), list(exc.globals), str(exc.format))
                return False
            except backend.expected_errors as exc:
                self.failed.emit("data", str(exc))
                return False
            refreshed = getattr(backend, "take_refreshed", lambda: None)()
            if refreshed is not None:  # the layer table was built on a guessed input shape; now the data's
                self.model_loaded.emit(refreshed)
            self.data_loaded.emit(info)
            return self._baseline(job)
        if job.kind == "eval":
            return self._evaluate(job, job.payload["config"], tag=job.payload.get("tag", "edit"))
        if job.kind == "export":
            return self._export(job)
        if job.kind == "recover":
            return self._recover(job)
        if job.kind == "graph":
            try:
                self.graph_ready.emit(backend.model_graph())
            except backend.expected_errors as exc:
                self.failed.emit("graph", str(exc))
                return False
            return True
        if job.kind == "profile":
            return self._profile(job)
        raise ValueError(f"unknown job kind {job.kind!r}")

    def _baseline(self, job: Job) -> bool:
        """The fp32 baseline of a new model or dataset, then the subset the engine proposes for it (its time
        estimate comes from the baseline's own forward, so asking costs no extra pass). ``baseline_latency``
        "none" skips it: a session restore loads its data next, and that baseline is the one it needs."""
        if job.payload.get("baseline_latency") == "none":
            return True
        completed = self._evaluate(job, self._backend.baseline_config(), tag="baseline")
        hints = getattr(self._backend, "subset_hints", None)
        if completed and hints is not None and not job.cancel.is_set():
            try:
                self.subset_hints.emit(dict(hints()))
            except self._backend.expected_errors:  # no estimate for this model: the slider works without one
                pass
        return completed

    def _export(self, job: Job) -> bool:
        backend = self._backend
        extra = {"weights": job.payload["weights"]} if job.payload.get("weights") else {}
        try:
            for item in backend.export_iter(job.payload["config"], job.payload["format"], job.payload["path"],
                                            should_stop=job.cancel.is_set, **extra):
                if job.cancel.is_set():
                    return False
                if isinstance(item, dict):
                    self.exported.emit(item)
                    return True
                self.progress.emit(int(item.done), int(item.total), str(item.stage))
        except backend.Cancelled:
            return False
        except backend.expected_errors as exc:
            self.failed.emit("export", str(exc))
        return False

    def _recover(self, job: Job) -> bool:
        """A recovery fine-tune of one point's configuration, then its evaluation: the Result is a new point
        tagged "recovered" (its provenance names the recovered-weights file)."""
        backend = self._backend
        eval_size = job.payload.get("eval_size")
        last_emit = 0.0
        try:
            for item in backend.recover_iter(job.payload["config"], eval_size=eval_size,
                                             should_stop=job.cancel.is_set, settings=job.payload.get("settings")):
                if job.cancel.is_set():
                    return False
                if backend.is_result(item):
                    self.result_ready.emit(item, {"eval_size": eval_size, "latency": "estimated", "tag": "recovered",
                                                  "source": job.payload.get("source")})
                    return True
                now = time.monotonic()
                if now - last_emit > 0.05 or item.done == item.total:
                    last_emit = now
                    stage = "fine-tune" if item.stage == "recover" else str(item.stage)
                    self.progress.emit(int(item.done), int(item.total), stage)
        except backend.Cancelled:
            return False
        except backend.expected_errors as exc:
            self.failed.emit("recover", str(exc))
        return False

    def _profile(self, job: Job) -> bool:
        """The per-layer latency profile of one configuration: progress per round, then the profile."""
        backend = self._backend
        try:
            for item in backend.profile_iter(job.payload["config"], should_stop=job.cancel.is_set,
                                             batch=int(job.payload.get("batch", 1))):
                if job.cancel.is_set():
                    return False
                if hasattr(item, "layers"):
                    self.profiled.emit(item)
                    return True
                self.progress.emit(int(item.done), int(item.total), str(item.stage))
        except backend.Cancelled:
            return False
        except backend.expected_errors as exc:
            self.failed.emit("profile", str(exc))
        return False

    def _try_as_data(self, job: Job) -> bool:
        """A dropped ``.pt`` that is not a model may be a tensor file of inputs and labels."""
        try:
            info = self._backend.load_data(job.payload["path"])
        except Exception:  # noqa: BLE001 - not data either: the model error is the one to report
            return False
        refreshed = getattr(self._backend, "take_refreshed", lambda: None)()
        if refreshed is not None:
            self.model_loaded.emit(refreshed)
        self.data_loaded.emit(info)
        return self._baseline(job)

    def _evaluate(self, job: Job, config: Any, *, tag: str) -> bool:
        backend = self._backend
        eval_size = job.payload.get("eval_size")
        # The baseline is timed on real kernels and also estimated, so both latency views can show it.
        latency = job.payload.get("baseline_latency" if tag == "baseline" else "latency") or (
            "both" if tag == "baseline" else "estimated")
        # other runtimes to time on (only asked for with measured latency; fakes in tests need not know the word)
        runtimes = {"runtimes": tuple(job.payload["runtimes"])} if job.payload.get("runtimes") else {}
        last_emit = 0.0
        try:
            for item in backend.evaluate_iter(config, eval_size=eval_size, latency=latency,
                                              should_stop=job.cancel.is_set, **runtimes):
                if job.cancel.is_set():
                    return False
                if backend.is_result(item):
                    self.result_ready.emit(item, {"eval_size": eval_size, "latency": latency, "tag": tag})
                    return True
                # Progress is throttled: the GUI only needs a few updates a second.
                now = time.monotonic()
                if now - last_emit > 0.05 or item.done == item.total:
                    last_emit = now
                    self.progress.emit(int(item.done), int(item.total), str(item.stage))
        except backend.Cancelled:
            return False
        except backend.expected_errors as exc:
            self.failed.emit("eval", str(exc))
            return False
        return False


@dataclass
class SearchRequest:
    """One search: a strategy and the stream's options, snapshotted on the GUI thread. ``stop`` is set from there."""

    id: int
    strategy: str
    options: dict[str, Any]
    stop: threading.Event = field(default_factory=threading.Event)


class SearchWorker(QObject):
    """Runs search requests in the search thread, one at a time. Every signal carries its request's id, so the
    service can drop what a superseded search still says after a newer one started."""

    progress = Signal(int, int, int, str)  # request id, done, total, stage
    found = Signal(int, object, object, int, int)  # request id, config, Result, done, total
    sensitivity = Signal(int, object)  # request id, dict: layer -> accuracy drop as a fraction
    failed = Signal(int, str)  # request id, one-sentence message
    finished = Signal(int, bool)  # request id, completed (False when stopped or failed)

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self._backend = backend

    @Slot(object)
    def run(self, request: SearchRequest) -> None:
        stop = request.stop
        if stop.is_set():  # superseded before it began
            self.finished.emit(request.id, False)
            return
        try:
            for event in self._backend.search_iter(request.strategy, dict(request.options), should_stop=stop.is_set):
                if isinstance(event, SearchPoint):
                    self.found.emit(request.id, event.config, event.result, event.done, event.total)
                elif isinstance(event, SearchStep):
                    self.progress.emit(request.id, event.done, event.total, event.stage)
                elif isinstance(event, SearchScores):
                    self.sensitivity.emit(request.id, dict(event.drops))
        except Exception as error:  # noqa: BLE001 - reported on the panel, never lost in the thread
            if not isinstance(error, (ValueError, RuntimeError, *self._backend.expected_errors)):
                traceback.print_exc()
            self.failed.emit(request.id, f"The search stopped with an error: {error}")
            self.finished.emit(request.id, False)
            return
        self.finished.emit(request.id, not stop.is_set())


class EvaluationService(QObject):
    """GUI-thread facade over the worker thread: submit, cancel, shut down. Re-emits the worker's signals."""

    job_started = Signal(str, str)
    job_finished = Signal(str, bool)
    progress = Signal(int, int, str)
    model_loaded = Signal(object)
    data_loaded = Signal(object)
    result_ready = Signal(object, object)
    failed = Signal(str, str)
    needs_trust = Signal(str, object, str)
    subset_hints = Signal(object)
    exported = Signal(object)  # dict: an export's verification report
    graph_ready = Signal(object)  # the loaded model's ModelGraph (after request_graph)
    profiled = Signal(object)  # a LayerProfile (after profile)
    # The running search (see start_search); nothing of a superseded or abandoned search comes through.
    search_progress = Signal(int, int, str)  # done, total, stage ("sensitivity" | "search")
    search_found = Signal(object, object, int, int)  # config, Result, done, total
    search_sensitivity = Signal(object)  # dict: layer -> accuracy drop as a fraction (0.012 = 1.2 points)
    search_finished = Signal(bool)  # completed (False when stopped, failed or abandoned by a model load)
    search_failed = Signal(str)
    _wake = Signal()
    _run_search = Signal(object)

    def __init__(self, backend: Backend | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._mailbox = _Mailbox()
        self._thread = QThread()
        self._thread.setObjectName("qtradeoff-worker")
        self.backend = backend if backend is not None else CoreBackend()
        self._worker = Worker(self._mailbox, self.backend)
        self._worker.moveToThread(self._thread)
        self._wake.connect(self._worker.process_pending)
        for name in ("job_started", "job_finished", "progress", "model_loaded", "data_loaded", "result_ready",
                     "failed", "needs_trust", "subset_hints", "exported", "graph_ready", "profiled"):
            getattr(self._worker, name).connect(getattr(self, name))
        _LIVE_THREADS.add(self._thread)
        self._thread.start()
        self._shut = False
        self._search_thread: QThread | None = None  # started by the first search
        self._search_worker: SearchWorker | None = None
        self._search: SearchRequest | None = None
        self._search_ids = 0

    # -- requests (GUI thread) -------------------------------------------------------------------------------
    # ``baseline_latency``: how the fp32 baseline evaluated after a load is timed ("both" = measured + estimated).
    def load_sample(self, name: str = "digits_cnn", *, eval_size: int | None = None,
                    baseline_latency: str = "both") -> None:
        self._abandon_search()
        self._submit(Job("sample", {"name": name, "eval_size": eval_size, "baseline_latency": baseline_latency},
                         description=f"loading sample {name}"))

    def load_model(self, path: str, *, trust: bool = False, eval_size: int | None = None,
                   baseline_latency: str = "both", input_text: str | None = None) -> None:
        self._abandon_search()
        self._submit(Job("load", {"path": path, "trust": trust, "eval_size": eval_size,
                                  "baseline_latency": baseline_latency, "input_text": input_text},
                         description=f"loading {path}"))

    def load_data(self, path: str, *, eval_size: int | None = None, baseline_latency: str = "both",
                  options: dict | None = None, trust: bool = False) -> None:
        """``options``: how to read it (DataOptions fields, from the data dialog); ``trust``: consent to import
        a dataset hook."""
        self._abandon_search()
        self._submit(Job("data", {"path": path, "eval_size": eval_size, "baseline_latency": baseline_latency,
                                  "options": options, "trust": trust}, description=f"loading data {path}"))

    def evaluate(self, config: Any, *, eval_size: int | None, latency: str = "estimated", tag: str = "edit",
                 runtimes: tuple[str, ...] = ()) -> None:
        """Queue an evaluation; a still-pending older evaluation is replaced (the newest request wins).
        ``runtimes``: other runtimes than torch to also time the configuration on (with measured latency)."""
        self._submit(Job("eval", {"config": config, "eval_size": eval_size, "latency": latency, "tag": tag,
                                  "runtimes": tuple(runtimes)}, description="evaluating"))

    def export(self, config: Any, fmt: str, path: str, *, weights: str | None = None) -> None:
        """Queue an export of ``config`` as ``fmt`` at ``path`` (written, then verified in a fresh process), with
        the recovered ``weights`` file when given."""
        self._submit(Job("export", {"config": config, "format": fmt, "path": path, "weights": weights},
                         description=f"exporting {fmt} to {path}"))

    def recover(self, config: Any, *, eval_size: int | None, source: int | None = None,
                settings: dict | None = None) -> None:
        """Queue a recovery fine-tune of ``config`` (``source``: the point it starts from; ``settings``: fields of
        the core's RecoverySettings); the recovered point arrives on ``result_ready`` tagged "recovered". Cancel
        stops it between training steps."""
        self._submit(Job("recover", {"config": config, "eval_size": eval_size, "source": source,
                                     "settings": dict(settings or {})},
                         description="fine-tuning to recover accuracy"))

    def request_graph(self) -> None:
        """Queue tracing the loaded model's graph (for the graph view); it arrives on ``graph_ready``."""
        self._submit(Job("graph", {}, description="tracing the model's graph"))

    def profile(self, config: Any, *, batch: int = 1) -> None:
        """Queue the per-layer latency profile of ``config`` against fp32 (real kernels, measured); it arrives on
        ``profiled``. Cancel stops it between rounds."""
        self._submit(Job("profile", {"config": config, "batch": int(batch)}, description="profiling layers"))

    def cancel(self) -> bool:
        """Drop pending work and ask the running job to stop at its next check. Returns True if anything was."""
        return self._mailbox.cancel_all()

    def has_pending(self) -> bool:
        return self._mailbox.has_pending()

    # -- searches (GUI thread) ------------------------------------------------------------------------------
    def start_search(self, strategy: str, options: dict[str, Any]) -> bool:
        """Run ``strategy`` (an Explore strategy or "sensitivity") with the search stream's ``options`` on the
        search thread; a running search is stopped and its signals are no longer forwarded (the latest wins).
        Locked layers come from ``options["base_config"]``. False after shutdown."""
        if self._shut:
            return False
        if self._search is not None:
            self._search.stop.set()
        self._search_ids += 1
        self._search = SearchRequest(self._search_ids, strategy, dict(options))
        self._ensure_search_thread()
        self._run_search.emit(self._search)
        return True

    def stop_search(self) -> None:
        """Ask the running search to stop at its next check (set directly: a queued signal would wait for the
        search); what it found stays, and ``search_finished(False)`` follows."""
        if self._search is not None:
            self._search.stop.set()

    def search_running(self) -> bool:
        return self._search is not None

    def _abandon_search(self) -> None:
        """A new model or dataset: the running search's points would belong to the old one, so it is stopped and
        disconnected now, and finished for whoever waits on it."""
        if self._search is None:
            return
        self._search.stop.set()
        self._search = None
        self.search_finished.emit(False)

    def _ensure_search_thread(self) -> None:
        if self._search_thread is not None:
            return
        self._search_thread = QThread()
        self._search_thread.setObjectName("qtradeoff-search")
        self._search_worker = SearchWorker(self.backend)
        self._search_worker.moveToThread(self._search_thread)
        self._run_search.connect(self._search_worker.run)
        self._search_worker.progress.connect(self._on_search_progress)
        self._search_worker.found.connect(self._on_search_found)
        self._search_worker.sensitivity.connect(self._on_search_sensitivity)
        self._search_worker.failed.connect(self._on_search_failed)
        self._search_worker.finished.connect(self._on_search_finished)
        _LIVE_THREADS.add(self._search_thread)
        self._search_thread.start()

    def _current(self, request_id: int) -> bool:
        return self._search is not None and self._search.id == request_id

    @Slot(int, int, int, str)
    def _on_search_progress(self, request_id: int, done: int, total: int, stage: str) -> None:
        if self._current(request_id):
            self.search_progress.emit(done, total, stage)

    @Slot(int, object, object, int, int)
    def _on_search_found(self, request_id: int, config: Any, result: Any, done: int, total: int) -> None:
        if self._current(request_id):
            self.search_found.emit(config, result, done, total)

    @Slot(int, object)
    def _on_search_sensitivity(self, request_id: int, drops: dict) -> None:
        if self._current(request_id):
            self.search_sensitivity.emit(drops)

    @Slot(int, str)
    def _on_search_failed(self, request_id: int, message: str) -> None:
        if self._current(request_id):
            self.search_failed.emit(message)

    @Slot(int, bool)
    def _on_search_finished(self, request_id: int, completed: bool) -> None:
        if self._current(request_id):
            self._search = None
            self.search_finished.emit(completed)

    def shutdown(self) -> None:
        """Cancel everything, stop the threads and wait for them: call from the window's closeEvent."""
        if self._shut:
            return
        self._shut = True
        if self._search is not None:
            self._search.stop.set()
            self._search = None
        self._mailbox.close()
        # A worker-process backend stops its children now (asked, then terminated after a short grace): the
        # threads waiting on them return at once, whatever the children were doing.
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()
        self._thread.quit()
        self._thread.wait()
        if self._search_thread is not None:
            self._search_thread.quit()
            self._search_thread.wait()

    def _submit(self, job: Job) -> None:
        if self._shut:
            return
        self._mailbox.put(job)
        self._wake.emit()
