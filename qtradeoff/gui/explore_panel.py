"""The Explore panel: pick a search strategy, a constraint and a budget; stream the points it finds into the plot.

The search itself is :func:`qtradeoff.core.search.explore.stream`, run by :class:`ExploreRunner` — a QObject living in a
QThread owned by the panel (started on first use, stopped by :meth:`ExplorePanel.shutdown`). Stop sets a
``threading.Event`` directly from the GUI thread; everything found before it stays. The panel never reads a
model: at Start it snapshots what its context provider returns (model, data, current config, earlier points).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from qtradeoff.gui.worker import _LIVE_THREADS, running_threads  # noqa: F401 - one registry of every GUI thread

STRATEGY_CHOICES: tuple[tuple[str, str, str], ...] = (
    ("greedy", "Greedy mixed precision",
     "Lower the bits of the least sensitive layers first while the accuracy drop stays within the limit."),
    ("smallest", "Smallest within drop",
     "The smallest configuration whose accuracy drop stays within the limit (greedy by memory share)."),
    ("budget", "Most accurate under size",
     "The most accurate configuration whose weights fit in the size limit."),
    ("grid", "Grid (uniform)", "Every uniform weight precision × magnitude sparsity."),
    ("random", "Evolutionary (from frontier)",
     "Mutate per-layer bits and sparsity of the current frontier's points; keep the non-dominated ones."),
    ("sensitivity", "Sensitivity only",
     "Quantize/prune each layer alone and show the accuracy drop in the layer table."),
)



@dataclass
class ExploreJob:
    """A snapshot of everything a search needs; built on the GUI thread, read only by the runner."""

    loaded: Any
    data: Any
    strategy: str
    budget: int
    max_drop: float
    max_bytes: int | None = None
    base_config: Any = None
    locked: tuple[str, ...] = ()
    seeds: list = field(default_factory=list)  # (config, Result) already measured, for the evolutionary search
    seed: int = 0


class ExploreRunner(QObject):
    """Runs one :class:`ExploreJob` at a time in its thread; emits plain data only."""

    found = Signal(object, object)  # config, Result
    progress = Signal(int, int, str)  # done, total, stage ("sensitivity" | "search")
    sensitivity = Signal(object)  # dict: layer -> accuracy drop as a fraction (0.012 = 1.2 points)
    finished = Signal(bool, str)  # completed (False when stopped or failed), summary message
    failed = Signal(str)

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self._stop = stop
        self._sessions: dict[tuple, Any] = {}

    def _session(self, loaded: Any, data: Any) -> Any:
        from qtradeoff.core.engine.engine import Engine

        key = (id(loaded.module), data.fingerprint)
        session = self._sessions.get(key)
        if session is None:
            self._sessions = {key: Engine(loaded, data)}  # one model at a time: free the old caches
            session = self._sessions[key]
        return session

    @Slot(object)
    def run(self, job: ExploreJob) -> None:
        from qtradeoff.core.search import explore
        from qtradeoff.core.search.sensitivity import SensitivityReport

        found = 0
        final = None
        try:
            session = self._session(job.loaded, job.data)
            options: dict[str, Any] = {"max_drop": job.max_drop, "locked": tuple(job.locked), "seed": job.seed,
                                       "base_config": job.base_config}
            if job.max_bytes is not None:
                options["max_bytes"] = job.max_bytes
            if job.strategy == "random" and job.seeds:
                options["seeds"] = list(job.seeds)
            last = 0.0
            for event in explore.stream(session, job.strategy, budget=job.budget, should_stop=self._stop.is_set,
                                        **options):
                if isinstance(event, explore.Found):
                    found += 1
                    if explore.role_of(event.result) == "final":
                        final = event.result
                    self.found.emit(event.config, event.result)
                    self.progress.emit(event.done, event.total, "search")
                elif isinstance(event, explore.SearchProgress):
                    now = time.monotonic()  # sensitivity trials are fast: a few updates a second are enough
                    if event.stage != "sensitivity" or now - last > 0.1 or event.done == event.total:
                        last = now
                        self.progress.emit(event.done, event.total, event.stage)
                elif isinstance(event, SensitivityReport):
                    self.sensitivity.emit({layer: drop / 100.0 for layer, drop in event.scores().items()})
        except Exception as error:  # noqa: BLE001 - reported on the panel, never lost in the thread
            if not isinstance(error, ValueError | RuntimeError):
                traceback.print_exc()
            self.failed.emit(f"The search stopped with an error: {error}")
            self.finished.emit(False, f"Failed after {found} point(s).")
            return
        if self._stop.is_set():
            self.finished.emit(False, f"Stopped — kept the {found} point(s) found so far.")
        else:
            self.finished.emit(True, _summary(job, found, final))


def _summary(job: ExploreJob, found: int, final: Any) -> str:
    if job.strategy == "sensitivity":
        return "Sensitivity done: see the layer table's sensitivity column."
    text = f"Done — {found} point(s)."
    if final is not None:
        search = final.provenance.get("search", {})
        metric = final.accuracy if final.accuracy is not None else final.agreement
        text += (f" Answer: {metric:.2%}, {final.weight_bytes / 1024:.1f} KiB"
                 f" (drop {search.get('drop', 0.0):.2f} points)")
        if not search.get("feasible", True):
            text += " — the constraint could not be met; this is the closest found"
        text += "."
    return text


def _eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


class ExplorePanel(QGroupBox):
    """Strategy, constraint, budget, Start/Stop, progress with ETA. Emits what it finds; owns its worker thread."""

    result_found = Signal(object, object)  # Result, meta dict ({"tag": "explore", "role": ...})
    sensitivity_ready = Signal(object)  # dict: layer -> drop fraction (what LayerTableModel.set_sensitivity takes)
    running_changed = Signal(bool)
    message = Signal(str)
    _start = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Explore", parent)
        self.context_provider: Callable[[], dict | None] | None = None
        self._thread: QThread | None = None
        self._runner: ExploreRunner | None = None
        self._stop = threading.Event()
        self._running = False
        self._started_at = 0.0
        self._search_started_at: float | None = None
        self.points_found = 0
        self.last_message = ""

        self.strategy = QComboBox()
        for key, label, tip in STRATEGY_CHOICES:
            self.strategy.addItem(label, key)
            self.strategy.setItemData(self.strategy.count() - 1, tip, Qt.ToolTipRole)
        self.strategy.setToolTip("How configurations are searched; hover an entry for details.")
        self.max_drop = QDoubleSpinBox()
        self.max_drop.setRange(0.0, 100.0)
        self.max_drop.setDecimals(2)
        self.max_drop.setSingleStep(0.25)
        self.max_drop.setValue(1.0)
        self.max_drop.setSuffix(" points")
        self.max_drop.setToolTip("Largest accepted top-1 accuracy drop against fp32, in percentage points.")
        self.max_size = QDoubleSpinBox()
        self.max_size.setRange(0.1, 1e7)
        self.max_size.setDecimals(1)
        self.max_size.setValue(64.0)
        self.max_size.setSuffix(" KiB")
        self.max_size.setToolTip("Weight storage the answer must fit in (for “Most accurate under size”).")
        self.budget = QSpinBox()
        self.budget.setRange(1, 100000)
        self.budget.setValue(40)
        self.budget.setSuffix(" configs")
        self.budget.setToolTip("At most this many configurations are evaluated.")
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Run the search; points appear in the plot as they are measured.")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current evaluation; every point found so far is kept.")
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        self.status = QLabel("Idle.")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Strategy", self.strategy)
        form.addRow("Max accuracy drop", self.max_drop)
        form.addRow("Size limit", self.max_size)
        form.addRow("Budget", self.budget)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.strategy.currentIndexChanged.connect(self._update_fields)
        self._update_fields()

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    def current_strategy(self) -> str:
        return str(self.strategy.currentData())

    def set_strategy(self, key: str) -> None:
        index = self.strategy.findData(key)
        if index < 0:
            raise ValueError(f"unknown strategy {key!r}")
        self.strategy.setCurrentIndex(index)

    def _update_fields(self, *_args: Any) -> None:
        key = self.current_strategy()
        self.max_drop.setEnabled(key in ("greedy", "smallest"))
        self.max_size.setEnabled(key == "budget")
        self.budget.setEnabled(key != "sensitivity")

    def _set_running(self, running: bool) -> None:
        self._running = running
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.strategy.setEnabled(not running)
        self.running_changed.emit(running)

    def _say(self, text: str) -> None:
        self.last_message = text
        self.status.setText(text)

    # -- actions ---------------------------------------------------------------------------------------------
    @Slot()
    def start(self) -> bool:
        """Snapshot the context and start the search; False (with a message) when there is nothing to search."""
        if self._running:
            return False
        context = self.context_provider() if self.context_provider is not None else None
        if not context or context.get("loaded") is None or context.get("data") is None:
            self._say("Load a model and its data first.")
            self.message.emit(self.last_message)
            return False
        key = self.current_strategy()
        job = ExploreJob(
            loaded=context["loaded"], data=context["data"], strategy=key, budget=int(self.budget.value()),
            max_drop=float(self.max_drop.value()),
            max_bytes=int(self.max_size.value() * 1024) if key == "budget" else None,
            base_config=context.get("config"), locked=tuple(context.get("locked", ())),
            seeds=list(context.get("seeds", ())) if key == "random" else [],
        )
        self._ensure_thread()
        self._stop.clear()
        self.points_found = 0
        self._started_at = time.monotonic()
        self._search_started_at = None
        self.progress.setRange(0, 0)  # busy until the first progress report
        self._say("Starting…")
        self._set_running(True)
        self._start.emit(job)
        return True

    @Slot()
    def stop(self) -> None:
        """Ask the search to stop at its next check (set directly: a queued signal would wait for the search)."""
        if self._running:
            self._stop.set()
            self._say("Stopping after the current evaluation…")

    def shutdown(self) -> None:
        """Stop the search and the thread and wait for it (the window calls this when it closes)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait()
            self._thread = None
            self._runner = None

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        self._thread = QThread()
        self._thread.setObjectName("qtradeoff-explore")
        self._runner = ExploreRunner(self._stop)
        self._runner.moveToThread(self._thread)
        self._start.connect(self._runner.run)
        self._runner.found.connect(self._on_found)
        self._runner.progress.connect(self._on_progress)
        self._runner.sensitivity.connect(self.sensitivity_ready)
        self._runner.finished.connect(self._on_finished)
        self._runner.failed.connect(self.message)
        _LIVE_THREADS.add(self._thread)
        self._thread.start()

    # -- from the runner (queued, GUI thread) -----------------------------------------------------------------
    @Slot(object, object)
    def _on_found(self, config: Any, result: Any) -> None:
        from qtradeoff.core.search.explore import role_of

        self.points_found += 1
        self.result_found.emit(result, {"tag": "explore", "role": role_of(result),
                                        "strategy": self.current_strategy()})

    @Slot(int, int, str)
    def _on_progress(self, done: int, total: int, stage: str) -> None:
        if not self._running:
            return
        now = time.monotonic()
        if stage == "search" and self._search_started_at is None:
            self._search_started_at = now
        started = self._search_started_at if stage == "search" else self._started_at
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(done, total))
        text = f"{'Sensitivity' if stage == 'sensitivity' else 'Search'}: {done} / {total}"
        if 0 < done < total:
            text += f" · ETA {_eta((now - started) / done * (total - done))}"
        self._say(text)

    @Slot(bool, str)
    def _on_finished(self, completed: bool, text: str) -> None:
        self._set_running(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if completed else 0)
        self._say(text)
        self.message.emit(text)


class _CloseWatcher(QObject):
    """Stops the panel's thread when the window closes, without touching the window's own closeEvent."""

    def __init__(self, panel: ExplorePanel, parent: QObject) -> None:
        super().__init__(parent)
        self._panel = panel

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.Close:
            self._panel.shutdown()
        return False


def attach_explore_panel(window: Any) -> ExplorePanel:
    """Add an Explore panel to a :class:`~qtradeoff.gui.main_window.MainWindow`: below its controls, points into
    its Pareto plot, sensitivity into its layer table, stopped when the window closes."""
    panel = ExplorePanel(window)

    def context() -> dict | None:
        backend = getattr(window.service, "backend", None)
        loaded, data = getattr(backend, "loaded", None), getattr(backend, "data", None)
        if loaded is None or data is None:
            return None
        seeds = [(result.config, result) for result in window.plot.store.results
                 if int(result.eval_samples) == int(data.eval_inputs.shape[0])]
        return {"loaded": loaded, "data": data, "config": window.state.config, "seeds": seeds,
                "locked": window.table_model.locked_layers()}

    panel.context_provider = context
    panel.result_found.connect(window.plot.add_result)
    panel.sensitivity_ready.connect(window.table_model.set_sensitivity)
    panel.message.connect(lambda text: window.statusBar().showMessage(text, 10000))
    left = getattr(window, "left_layout", None) or window.main_splitter.widget(0).layout()
    left.insertWidget(max(left.count() - 1, 0), panel)  # above the trailing stretch
    window.installEventFilter(_CloseWatcher(panel, window))
    return panel
