"""Cyclic garbage is collected on the GUI thread, never on a worker thread.

Python runs its cyclic garbage collector in whichever thread happens to allocate past the threshold. In this app
that is often the evaluation thread building a model, and the garbage it then frees can hold Qt wrappers of objects
that live on the GUI thread (closed dialogs, pyqtgraph items in reference cycles). Deleting those from the worker
thread takes Qt locks while holding the GIL, and the GUI thread, holding a Qt lock, waits for the GIL: both stop
at 0 % CPU (seen as a test that hung with the worker inside ``nn.Module.register_parameter`` — an allocation, the
moment the collector ran). While a window is open, automatic collection is therefore off and a timer on the GUI
thread collects instead: the young generation often (microseconds), the older ones rarely, like the automatic
thresholds do. The last window to close collects once more and turns automatic collection back on.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer, Slot

INTERVAL_MS = 250
MIDDLE_EVERY = 8  # ticks: generation 1 every 2 s
FULL_EVERY = 120  # ticks: a full collection every 30 s

_active = 0
_was_enabled = True


class GuiThreadCollector(QObject):
    """Owned by a window (created on the GUI thread); :meth:`stop` when the window closes."""

    def __init__(self, parent: QObject) -> None:
        super().__init__(parent)
        global _active, _was_enabled
        if _active == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _active += 1
        self._ticks = 0
        self._running = True
        self._timer = QTimer(self)
        self._timer.setInterval(INTERVAL_MS)
        self._timer.timeout.connect(self._collect)
        self._timer.start()

    @Slot()
    def _collect(self) -> None:
        self._ticks += 1
        generation = 2 if self._ticks % FULL_EVERY == 0 else 1 if self._ticks % MIDDLE_EVERY == 0 else 0
        gc.collect(generation)

    def stop(self) -> None:
        """Stop collecting for this window; the last one collects everything and restores automatic collection."""
        global _active
        if not self._running:
            return
        self._running = False
        self._timer.stop()
        _active -= 1
        if _active == 0:
            gc.collect()
            if _was_enabled:
                gc.enable()
