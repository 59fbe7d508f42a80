"""QApplication setup and the GUI entry point: ``run_gui(argv, model_path=None)`` opens the main window with the
given model (or the bundled sample) loading in the background.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtWidgets import QApplication

from qtradeoff import __version__
from qtradeoff.gui.main_window import APPLICATION, ORGANIZATION, MainWindow


def make_app(argv: list[str] | None = None) -> QApplication:
    """The process's QApplication (created once), named so QSettings know where to live."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(list(argv) if argv is not None else sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationVersion(__version__)
    # Antialiased markers; OpenGL stays off (blank offscreen, experimental upstream).
    pg.setConfigOptions(antialias=True, useOpenGL=False)
    return app


def create_window(model_path: str | Path | None = None, **kwargs) -> MainWindow:
    """A shown main window that starts loading ``model_path`` (or the sample digits_cnn) in the worker."""
    window = MainWindow(**kwargs)
    if model_path is None:
        window.load_sample()
    else:
        window.open_path(model_path)
    window.show()
    return window


def run_gui(argv: list[str] | None = None, model_path: str | Path | None = None) -> int:
    """Run the desktop app until its window closes; returns the process exit code."""
    app = make_app(argv)
    window = create_window(model_path)
    code = app.exec()
    del window
    return int(code)
