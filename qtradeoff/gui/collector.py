"""Cyclic garbage is collected on the GUI thread, never on a worker thread.

Python runs its cyclic garbage collector in whichever thread happens to allocate past the threshold. In this app
that is often the evaluation thread building a model, and the garbage it then frees can hold Qt wrappers of objects
that live on the GUI thread (closed dialogs, pyqtgraph items in reference cycles). Deleting those from the worker
thread takes Qt locks while holding the GIL, and the GUI thread, holding a Qt lock, waits for the GIL: both stop
at 0 % CPU (seen as a test that hung with the worker inside ``nn.Module.register_parameter`` — an allocation, the
moment the collector ran). While a window is open, automatic collection is therefore off and a timer on the GUI
thread collects instead: the young generation often (microseconds), the older ones rarely, like the automatic
thresholds do. The last window to close collects once more and turns automatic collection back on.

A full collection walks every tracked object: with torch, Qt and pyqtgraph imported that is about 200 ms on the
GUI thread (measured on this 2-core machine), the longest stall a user saw. So on its first tick the collector
freezes what exists then (``gc.freeze``: the modules, classes and widgets built at start-up, which live as long as
the process), and later collections walk only what was made after; the last window to close unfreezes them
after its last collection (the automatic collector, back on, then walks them in its own time).
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer, Slot

INTERVAL_MS = 250
MIDDLE_EVERY = 8  # ticks: generation 1 every 2 s
FULL_EVERY = 120  # ticks: a full collection every 30 s

_active = 0
_was_enabled = True
_frozen = False


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
        global _frozen
        if not _frozen:  # the first tick: start-up is over (imports, the window built)
            gc.collect(0)
            gc.freeze()
            _frozen = True
        self._ticks += 1
        generation = 2 if self._ticks % FULL_EVERY == 0 else 1 if self._ticks % MIDDLE_EVERY == 0 else 0
        gc.collect(generation)

    def stop(self) -> None:
        """Stop collecting for this window; the last one collects everything and restores automatic collection."""
        global _active, _frozen
        if not self._running:
            return
        self._running = False
        self._timer.stop()
        _active -= 1
        if _active == 0:
            gc.collect()  # what is not frozen: quick, so closing stays quick
            if _frozen:  # the start-up objects go back to the oldest generation, for automatic collection
                gc.unfreeze()
                _frozen = False
            if _was_enabled:
                gc.enable()
