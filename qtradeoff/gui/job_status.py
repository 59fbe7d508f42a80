"""The status bar's job display: what the worker is doing, its progress, the time it has taken, and Cancel."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QElapsedTimer, QObject, QTimer, Signal, Slot
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar


class JobStatus(QObject):
    """Owns the status bar's widgets; the window forwards the evaluation service's job signals to it.

    ``pending()`` says whether more jobs are queued (the bar stays busy until they are done) and
    ``error_showing()`` whether an error is on screen (which then explains an unfinished job better than
    "Cancelled." would).
    """

    cancel_requested = Signal()

    def __init__(self, bar: QStatusBar, *, pending: Callable[[], bool], error_showing: Callable[[], bool]) -> None:
        super().__init__(bar)
        self._pending = pending
        self._error_showing = error_showing
        self.label = QLabel("Starting…")
        self.label.setToolTip("What the background worker is doing.")
        self.progress = QProgressBar()
        self.progress.setMinimumWidth(260)
        self.progress.setMaximumWidth(320)
        self.progress.setTextVisible(True)
        self.progress.setToolTip("Progress of the running evaluation.")
        # Its space stays when it hides: showing it at every job then re-lays out nothing (that relayout of the
        # status bar cost ~10 ms of GUI thread per evaluation)
        policy = self.progress.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.progress.setSizePolicy(policy)
        self.elapsed_label = QLabel("")
        self.elapsed_label.setMinimumWidth(90)
        self.elapsed_label.setToolTip("Time spent on the running job.")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running evaluation and drop queued ones (Esc).")
        self.cancel_button.clicked.connect(self.cancel_requested)
        bar.addWidget(self.label, 1)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.elapsed_label)
        bar.addPermanentWidget(self.cancel_button)
        self._elapsed = QElapsedTimer()
        self._timer = QTimer(self)
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._tick)
        self._show_busy(False)
        self._transient = False  # the label shows the running job (or "Cancelling…"), not a lasting message
        self._last_description = ""

    def set_text(self, text: str, *, transient: bool = False) -> None:
        """Show ``text``; a transient text (what is running) is replaced by the outcome when the work ends."""
        self.label.setText(text)
        self._transient = transient

    @Slot(str, str)
    def started(self, _kind: str, description: str) -> None:
        self._show_busy(True)
        self.progress.setRange(0, 0)  # busy until the first progress report
        self._elapsed.restart()
        self._timer.start()
        self._last_description = description
        self.set_text(description[:1].upper() + description[1:] + "…", transient=True)

    @Slot(str, bool)
    def finished(self, kind: str, completed: bool) -> None:
        if not completed and not self._error_showing():
            what = "the evaluation" if kind == "eval" else (self._last_description or kind)
            kept = " The current model is kept." if kind in ("load", "sample", "data") else ""
            self.set_text(f"Cancelled {what}.{kept}")
        if self._pending():
            return
        if self._transient:  # nothing said what came of it: never leave "…ing" on screen once idle
            self.set_text("Ready." if completed else "Cancelled.")
        self._timer.stop()
        self._show_busy(False)
        seconds = self._elapsed.elapsed() / 1000 if self._elapsed.isValid() else 0
        self.elapsed_label.setText(f"last job {seconds:.1f} s")

    @Slot(int, int, str)
    def show_progress(self, done: int, total: int, stage: str) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        self.progress.setFormat(f"{stage}: %p%")

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        self.elapsed_label.setText(f"{self._elapsed.elapsed() / 1000:.1f} s")

    def _show_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setEnabled(busy)
