"""The Explore panel: pick a search strategy, a constraint and a budget; stream the points it finds into the plot.

The search is a request to the :class:`~qtradeoff.gui.worker.EvaluationService`, which runs
:func:`qtradeoff.core.search.explore.stream` on its own search thread with the engine edits use. The panel only
snapshots its widgets and what its context provider returns (the configuration to start from, whose locked layers
the search keeps, and earlier points) into plain options, and renders the service's search signals. Stop keeps
everything found so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
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

from qtradeoff.gui.worker import EvaluationService

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



def _summary(strategy: str, found: int, final: Any) -> str:
    if strategy == "sensitivity":
        return "Sensitivity done: see the layer table's sensitivity column."
    text = f"Done — {found} point(s)."
    if final is not None:
        search = final.provenance.get("search", {})
        metric = final.accuracy if final.accuracy is not None else final.agreement
        text += (f" Answer: {metric:.2%}, {final.weight_bytes / 1024:.1f} KiB"
                 f" (drop {search.get('drop', 0.0):.2f} points)")
        if not search.get("feasible", True):
            text += " — the constraint could not be met; this is the closest found"
        text += ". It is the green diamond on the plot: Apply answer makes it the current configuration."
    return text


def _eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


class ExplorePanel(QGroupBox):
    """Strategy, constraint, budget, Start/Stop, progress with ETA. Asks ``service`` for the search and emits
    what it finds.

    ``context_provider`` returns ``{"config": CompressionConfig to start from, "seeds": [(config, Result), ...]}``,
    or None while there is no model and data to search.
    """

    result_found = Signal(object, object)  # Result, meta dict ({"tag": "explore", "role": ...})
    sensitivity_ready = Signal(object)  # dict: layer -> drop fraction (what LayerTableModel.set_sensitivity takes)
    running_changed = Signal(bool)
    message = Signal(str)
    apply_answer_requested = Signal(object)  # the answer's CompressionConfig

    def __init__(self, service: EvaluationService, parent: QWidget | None = None) -> None:
        super().__init__("Explore", parent)
        self.service = service
        self.context_provider: Callable[[], dict | None] | None = None
        self._running = False
        self._strategy = ""
        self._failed = False
        self._final: Any = None
        self._started_at = 0.0
        self._search_started_at: float | None = None
        self.points_found = 0
        self.last_message = ""
        self.answer: Any = None  # the last search's answer (a Result), until a new model or data loads

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
        self.apply_answer_button = QPushButton("Apply answer")
        self.apply_answer_button.setToolTip("Make the last search's answer (the green diamond on the plot) the "
                                            "current configuration; Edit → Undo takes it back.")
        self.apply_answer_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        self.status = QLabel("Idle.")
        self.status.setWordWrap(True)
        self.locks = QLabel()
        self.locks.setWordWrap(True)
        self.locks.setToolTip("Layers ticked in the layer table are locked: every search leaves them as the "
                              "current configuration sets them.")
        self.show_locked(())

        form = QFormLayout()
        form.addRow("Strategy", self.strategy)
        form.addRow("Max accuracy drop", self.max_drop)
        form.addRow("Size limit", self.max_size)
        form.addRow("Budget", self.budget)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.apply_answer_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.locks)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.apply_answer_button.clicked.connect(self.apply_answer)
        service.search_found.connect(self._on_found)
        service.search_progress.connect(self._on_progress)
        service.search_sensitivity.connect(self.sensitivity_ready)
        service.search_failed.connect(self._on_failed)
        service.search_finished.connect(self._on_finished)
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

    def show_locked(self, names: tuple[str, ...] | list[str]) -> None:
        """Say which layers the next search keeps as they are (those the configuration locks)."""
        names = list(names)
        if not names:
            self.locks.setText("Locked: none — tick layers in the table to keep them as they are.")
        else:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            self.locks.setText(f"Locked: {shown} — searches leave {'it' if len(names) == 1 else 'them'} as set.")

    def set_answer(self, result: Any) -> None:
        """Remember a search's answer (None forgets it) and offer to apply it."""
        self.answer = result
        self.apply_answer_button.setEnabled(result is not None)

    def forget_answer(self, *_args: Any) -> None:
        self.set_answer(None)

    @Slot()
    def apply_answer(self) -> bool:
        """Ask for the answer's configuration to become the edited one (the window applies it, undoably)."""
        if self.answer is None:
            return False
        self.apply_answer_requested.emit(self.answer.config)
        return True

    # -- actions ---------------------------------------------------------------------------------------------
    def options(self, context: dict) -> dict[str, Any]:
        """The search stream's options from the widgets and ``context``: plain data, nothing that reads a widget
        later. The searches keep the locked layers of ``base_config``."""
        key = self.current_strategy()
        options: dict[str, Any] = {"budget": int(self.budget.value()), "max_drop": float(self.max_drop.value()),
                                   "seed": 0, "base_config": context.get("config")}
        if key == "budget":
            options["max_bytes"] = int(self.max_size.value() * 1024)
        seeds = list(context.get("seeds", ()))
        if key == "random" and seeds:
            options["seeds"] = seeds
        return options

    @Slot()
    def start(self) -> bool:
        """Snapshot the context and ask for the search; False (with a message) when there is nothing to search."""
        if self._running:
            return False
        context = self.context_provider() if self.context_provider is not None else None
        if not context:
            self._say("Load a model and its data first.")
            self.message.emit(self.last_message)
            return False
        key = self.current_strategy()
        if not self.service.start_search(key, self.options(context)):
            return False
        self._strategy = key
        self._failed = False
        self._final = None
        self.points_found = 0
        self._started_at = time.monotonic()
        self._search_started_at = None
        self.progress.setRange(0, 0)  # busy until the first progress report
        self._say("Starting…")
        self._set_running(True)
        return True

    @Slot()
    def stop(self) -> None:
        """Ask the search to stop after the current evaluation; every point found so far is kept."""
        if self._running:
            self.service.stop_search()
            self._say("Stopping after the current evaluation…")

    # -- from the service (queued, GUI thread) ----------------------------------------------------------------
    @Slot(object, object, int, int)
    def _on_found(self, config: Any, result: Any, done: int, total: int) -> None:
        from qtradeoff.core.search.explore import role_of

        if not self._running:
            return
        self.points_found += 1
        role = role_of(result)
        if role == "final":
            self._final = result
            self.set_answer(result)
        self.result_found.emit(result, {"tag": "explore", "role": role, "strategy": self._strategy})
        self._on_progress(done, total, "search")

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

    @Slot(str)
    def _on_failed(self, text: str) -> None:
        self._failed = True
        self.message.emit(text)

    @Slot(bool)
    def _on_finished(self, completed: bool) -> None:
        if not self._running:
            return
        if completed:
            text = _summary(self._strategy, self.points_found, self._final)
        elif self._failed:
            text = f"Failed after {self.points_found} point(s)."
        else:
            text = f"Stopped — kept the {self.points_found} point(s) found so far."
        self._set_running(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if completed else 0)
        self._say(text)
        self.message.emit(text)


def attach_explore_panel(window: Any) -> ExplorePanel:
    """Add an Explore panel to a :class:`~qtradeoff.gui.main_window.MainWindow`: below its controls, searching
    from its configuration through its service, points into its Pareto plot, sensitivity into its layer table."""
    panel = ExplorePanel(window.service, window)

    def context() -> dict | None:
        summary = window.summary
        if summary is None or not summary.eval_samples_total:
            return None
        # the searches measure on the whole evaluation split: only points on it can seed the evolutionary one
        seeds = [(result.config, result) for result in window.plot.store.results
                 if int(result.eval_samples) == int(summary.eval_samples_total)]
        return {"config": window.state.config, "seeds": seeds}

    panel.context_provider = context

    def found(result: Any, meta: dict) -> None:
        index = window.plot.add_result(result, meta)
        if meta.get("role") == "final":
            window.plot.set_answer(index)  # the green diamond, and "ANSWER" in the results table
        window.results.sync()

    def apply_answer(config: Any) -> None:
        # a point is how layers are compressed; which layers are locked stays the user's current choice
        window.apply_config(config.with_locked(window.state.config.locked), "Apply the search answer")
        window.statusBar().showMessage("Applied the search answer (Edit → Undo takes it back).", 10000)

    panel.result_found.connect(found)
    panel.apply_answer_requested.connect(apply_answer)
    window.service.model_loaded.connect(panel.forget_answer)  # the answer belongs to the model and data it was
    window.service.data_loaded.connect(panel.forget_answer)  # searched on
    # the searches measure on the whole evaluation split: the edits and the plot follow them there
    panel.running_changed.connect(lambda running: running and window.follow_search())
    panel.sensitivity_ready.connect(window.table_model.set_sensitivity)
    panel.message.connect(lambda text: window.statusBar().showMessage(text, 10000))
    left = getattr(window, "left_layout", None) or window.main_splitter.widget(0).layout()
    left.insertWidget(max(left.count() - 1, 0), panel)  # above the trailing stretch
    return panel
