"""QApplication setup and the GUI entry point: ``run_gui(argv, model_path=None)`` opens the main window with the
given model (or the bundled sample) loading in the background.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QStandardPaths
from PySide6.QtWidgets import QApplication, QMessageBox

from qtradeoff import __version__
from qtradeoff.gui.file_actions import SESSION_SUFFIX
from qtradeoff.gui.main_window import APPLICATION, ORGANIZATION, MainWindow


def make_app(argv: list[str] | None = None) -> QApplication:
    """The process's QApplication (created once), named so QSettings know where to live."""
    app = QApplication.instance()
    if app is None:
        # Qt's raster engine hands large fills and image scalings to a thread pool of its own and waits for it on
        # the GUI thread; while a worker process computes on every core those pool threads wait for a core, and
        # the GUI thread with them (py-spy: most of a 218 ms stall after a model drop was QLatch::wait in
        # QRasterPaintEngine). Read once, when the pool would be created: set before the application exists.
        os.environ.setdefault("QT_NO_GUI_THREADPOOL", "1")
        app = QApplication(list(argv) if argv is not None else sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationVersion(__version__)
    # Antialiased markers; OpenGL stays off (blank offscreen, experimental upstream).
    pg.setConfigOptions(antialias=True, useOpenGL=False)
    return app


def autosave_location() -> Path:
    """Where the running session is autosaved (removed again by a clean close)."""
    return Path(QStandardPaths.writableLocation(QStandardPaths.AppDataLocation)) / f"autosave{SESSION_SUFFIX}"


def create_window(model_path: str | Path | None = None, *, recover: bool = False, **kwargs) -> MainWindow:
    """A shown main window that starts loading ``model_path`` (or the sample digits_cnn) in the worker.

    With ``recover`` and an autosave left by a run that did not close normally, the user is asked whether to
    reopen that session instead."""
    window = MainWindow(**kwargs)
    window.show()
    autosave = kwargs.get("autosave_path")
    if recover and model_path is None and autosave is not None and Path(autosave).is_file():
        answer = QMessageBox.question(
            window, "Recover the last session?",
            "qtradeoff did not close normally last time. Reopen that session (its model, data, points and "
            "configuration)?", QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
        if answer == QMessageBox.Yes and window.sessions.open(autosave):
            return window
    if model_path is None:
        window.load_sample()
    else:
        window.open_path(model_path)
    return window


def run_gui(argv: list[str] | None = None, model_path: str | Path | None = None) -> int:
    """Run the desktop app until its window closes; returns the process exit code."""
    app = make_app(argv)
    window = create_window(model_path, recover=True, autosave_path=autosave_location())
    code = app.exec()
    del window
    return int(code)
